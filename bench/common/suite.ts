/**
 * What a bench suite looks like to the runner (bench/run.ts): a name and one `run`. A suite
 * prints its own table and writes `bench/results/<name>.json`; the runner only sequences suites
 * and turns failed targets into the exit code.
 */
export interface BenchOptions {
  /** progress lines; default stderr */
  readonly log?: (line: string) => void;
  /** shorter measurements (smoke run); default false */
  readonly quick?: boolean;
  /** length of the soak step, seconds (`--soak-seconds`); default the soak suite's own */
  readonly soakSeconds?: number;
  /** V8 CPU profiles of the mesh programs go here (`--profile DIR`: l4 the agents, l7 the waypoint); default none */
  readonly profileDir?: string;
}

export interface TargetCheck {
  readonly name: string;
  /** measured value, in `unit` */
  readonly value: number | null;
  readonly unit: string;
  /** human form of the goal, e.g. ">= 1.0x stunnel" */
  readonly goal: string;
  /** null when it could not be measured */
  readonly met: boolean | null;
}

export interface SuiteReport {
  readonly name: string;
  /** the side-by-side table, as printed */
  readonly table: string;
  readonly targets: readonly TargetCheck[];
  /** path of the JSON results file */
  readonly resultsPath: string;
}

export interface BenchSuite {
  readonly name: string;
  readonly description: string;
  run(opts?: BenchOptions): Promise<SuiteReport>;
}
