/**
 * `--output table|json|yaml` of the read verbs (status, config-dump, waypoint list): the flag's
 * check (one line naming the flag) and the three renderings. Pure.
 */
import { stringify } from 'yaml';
import { MeshError } from '../core/index.js';

export const OUTPUT_FORMATS = ['table', 'json', 'yaml'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

/** The yargs option of every read verb; `coerce` makes a bad value a one-line error naming the flag. */
export const OUTPUT_OPTION = {
  alias: 'o', type: 'string', default: 'table', coerce: parseOutput,
  describe: `output format: ${OUTPUT_FORMATS.join(', ')}`,
} as const;

export function parseOutput(v: unknown): OutputFormat {
  // given twice, yargs passes an array: the last one wins, as with kubectl
  const last = Array.isArray(v) ? v[v.length - 1] as unknown : v;
  if (typeof last === 'string' && (OUTPUT_FORMATS as readonly string[]).includes(last)) return last as OutputFormat;
  throw new MeshError('AMBIT_CONFIG_INVALID', `--output: ${JSON.stringify(String(last)).slice(0, 60)} is not one of ${OUTPUT_FORMATS.join(', ')}`);
}

/**
 * Columns padded to their widest cell, three spaces apart (kubectl's look); a header line first.
 * Cells are cut at `maxCell` characters (…) so one long message cannot push every row off screen.
 */
export function renderTable(headers: readonly string[], rows: readonly (readonly string[])[], maxCell = 80): string {
  const cut = (s: string): string => {
    const one = s.replace(/\s+/g, ' ');
    return one.length > maxCell ? `${one.slice(0, maxCell - 1)}…` : one;
  };
  const all = [headers.map(cut), ...rows.map((r) => headers.map((_h, i) => cut(r[i] ?? '')))];
  const widths = headers.map((_h, i) => Math.max(...all.map((r) => r[i]!.length)));
  return all.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('   ').trimEnd()).join('\n') + '\n';
}

/** `data` as JSON or YAML, or `table()` for the table format. */
export function render(format: OutputFormat, data: unknown, table: () => string): string {
  if (format === 'json') return JSON.stringify(data, null, 2) + '\n';
  if (format === 'yaml') return stringify(data, { lineWidth: 0 });
  return table();
}

/**
 * The table of a JSON document whose shape the CLI does not fix (a config dump): one row per
 * top-level field, lists and objects by their size; `-o json|yaml` shows it all.
 */
export function summaryTable(doc: unknown): string {
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return `${JSON.stringify(doc)}\n`;
  const value = (v: unknown): string => {
    if (Array.isArray(v)) return `${v.length} item${v.length === 1 ? '' : 's'}`;
    if (v !== null && typeof v === 'object') {
      const n = Object.keys(v).length;
      return n <= 4 && Object.values(v).every((x) => x === null || typeof x !== 'object') ? JSON.stringify(v) : `${n} field${n === 1 ? '' : 's'}`;
    }
    return typeof v === 'string' ? v : JSON.stringify(v) ?? 'undefined';
  };
  return renderTable(['FIELD', 'VALUE'], Object.entries(doc).map(([k, v]) => [k, value(v)]))
    + '(the whole document: --output json or yaml)\n';
}
