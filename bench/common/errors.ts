/**
 * A bench step that could not run. Benches are not the mesh: their failures name the step and the
 * tool so a reader of the report knows what to fix, and never reuse the mesh's error codes.
 */
export class BenchError extends Error {
  /** what was being done, e.g. "stunnel: start server" */
  readonly step: string;
  constructor(step: string, message: string, options?: { cause?: unknown }) {
    super(`${step}: ${message}`, options);
    this.step = step;
    this.name = 'BenchError';
  }
}

export function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
