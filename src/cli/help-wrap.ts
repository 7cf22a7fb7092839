/**
 * Help text wrapped at the terminal's width between words. yargs lays help out in columns but
 * breaks long descriptions at a fixed character count, mid-word; so the CLI asks yargs for
 * unwrapped lines and wraps them here: a line's continuation starts under its description column
 * (where the text resumes after a gap of two or more spaces), words are never split, and a word
 * longer than the room left stands on its own line.
 */

/** Widths outside this range make columns useless (too narrow) or lines hard to read (too wide). */
export const MIN_WIDTH = 40;
export const MAX_WIDTH = 120;

/** The width to wrap at: the terminal's when output is a terminal, else $COLUMNS, else 100. */
export function helpWidth(columns: number | undefined, env: NodeJS.ProcessEnv): number {
  const fromEnv = Number(env['COLUMNS']);
  const w = columns ?? (Number.isInteger(fromEnv) && fromEnv > 0 ? fromEnv : 100);
  return Math.min(MAX_WIDTH, Math.max(MIN_WIDTH, w));
}

/** Where a line's description column starts: after its first gap of 2+ spaces past some text. */
function descriptionColumn(line: string): number {
  const m = /^(\s*\S+(?: \S+)*)( {2,})\S/.exec(line);
  return m ? (m[1] as string).length + (m[2] as string).length : line.length - line.trimStart().length;
}

/** Wraps one line; continuation lines are indented to its description column. */
export function wrapLine(line: string, width: number): string[] {
  if (line.length <= width) return [line];
  const col = descriptionColumn(line);
  const lead = line.slice(0, col);
  const words = line.slice(col).split(/ +/).filter((w) => w !== '');
  const out: string[] = [];
  let indent = col;
  let current = lead;
  if (width - col < 24) {
    // a description column too far right leaves no room: the left part stands alone, the text
    // continues under the line's own indent plus 4
    indent = Math.min(line.length - line.trimStart().length + 4, width - 24);
    if (lead.trim() !== '') out.push(lead.trimEnd());
    current = ' '.repeat(indent);
  }
  const pad = ' '.repeat(indent);
  let empty = true;
  for (const word of words) {
    if (!empty && current.length + 1 + word.length > width) {
      out.push(current.trimEnd());
      current = pad;
      empty = true;
    }
    current += (empty ? '' : ' ') + word;
    empty = false;
  }
  if (!empty) out.push(current.trimEnd());
  return out;
}

/** Wraps every line of a help text. */
export function wrapHelp(text: string, width: number): string {
  return text.split('\n').flatMap((l) => wrapLine(l, width)).join('\n');
}
