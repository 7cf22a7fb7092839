/**
 * User-supplied regular expressions (route matches, header matches) compiled with guards.
 * Users write RE2 (Istio, Gateway API); JavaScript's engine backtracks, so a pattern like `(a+)+$`
 * can pin a CPU on a crafted input. We refuse the constructs that make backtracking explode or
 * that RE2 does not have (backreferences, lookaround), cap the length, and anchor the match to the
 * whole string as RE2 full-match does.
 */

/** Longest pattern accepted, in characters (the anchor's control plane caps it at 1024 too). */
export const MAX_REGEX_LENGTH = 1024;

export type RegexResult = { readonly regex: RegExp } | { readonly error: string };

interface Group {
  /** contains a quantifier that can repeat without bound (`*`, `+`, `{n,}`, large `{n,m}`) */
  unbounded: boolean;
  /** contains an alternation: `(a|a)*` backtracks exponentially too */
  alternation: boolean;
}

const UNBOUNDED_REPEAT = 16;

/** Returns [isQuantifier, length, unbounded] for the text starting at i. */
function quantifierAt(p: string, i: number): [boolean, number, boolean] {
  const c = p[i];
  if (c === '*' || c === '+') return [true, p[i + 1] === '?' ? 2 : 1, true];
  if (c === '?') return [true, p[i + 1] === '?' ? 2 : 1, false];
  if (c === '{') {
    const m = /^\{(\d+)(,(\d*))?\}\??/.exec(p.slice(i));
    if (m) {
      const hi = m[2] === undefined ? Number(m[1]) : m[3] === '' ? Infinity : Number(m[3]);
      return [true, m[0].length, hi > UNBOUNDED_REPEAT];
    }
  }
  return [false, 0, false];
}

/**
 * Compile `pattern` for a whole-string match, or explain why not. Never throws.
 * @param maxLength characters; default MAX_REGEX_LENGTH
 */
export function compileSafeRegex(pattern: unknown, maxLength = MAX_REGEX_LENGTH): RegexResult {
  if (typeof pattern !== 'string') return { error: 'regex must be a string' };
  if (pattern.length > maxLength) return { error: `regex is ${pattern.length} characters, longer than the limit of ${maxLength}` };
  const stack: Group[] = [{ unbounded: false, alternation: false }];
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '\\') {
      const n = pattern[i + 1];
      if (n === undefined) return { error: 'regex ends with a lone backslash' };
      if (!inClass && /[1-9]/.test(n)) return { error: 'backreferences are not supported (RE2 syntax)' };
      if (!inClass && n === 'k') return { error: 'named backreferences are not supported (RE2 syntax)' };
      i++;
      continue;
    }
    if (inClass) {
      if (c === ']') inClass = false;
      continue;
    }
    if (c === '[') {
      inClass = true;
      // a leading `]` (or `^]`) is a literal in the class
      if (pattern[i + 1] === '^') i++;
      if (pattern[i + 1] === ']') i++;
      continue;
    }
    if (c === '(') {
      if (pattern[i + 1] === '?') {
        const la = pattern.slice(i + 2, i + 4);
        if (la.startsWith('=') || la.startsWith('!') || la === '<=' || la === '<!') {
          return { error: 'lookaround assertions are not supported (RE2 syntax)' };
        }
      }
      if (stack.length > 64) return { error: 'regex nests groups deeper than 64' };
      stack.push({ unbounded: false, alternation: false });
      continue;
    }
    if (c === '|') {
      (stack[stack.length - 1] as Group).alternation = true;
      continue;
    }
    if (c === ')') {
      if (stack.length === 1) return { error: 'unbalanced ")" in regex' };
      const g = stack.pop() as Group;
      const [isQ, len, unbounded] = quantifierAt(pattern, i + 1);
      if (isQ && unbounded && (g.unbounded || g.alternation)) {
        return { error: 'nested repetition like "(a+)+" or "(a|b)*" can take exponential time; rewrite it without a repeated group that itself repeats or alternates' };
      }
      const parent = stack[stack.length - 1] as Group;
      if (g.unbounded || (isQ && unbounded)) parent.unbounded = true;
      i += len;
      continue;
    }
    const [isQ, len, unbounded] = quantifierAt(pattern, i);
    if (isQ) {
      if (unbounded) (stack[stack.length - 1] as Group).unbounded = true;
      i += len - 1;
    }
  }
  if (inClass) return { error: 'unterminated character class in regex' };
  if (stack.length !== 1) return { error: 'unbalanced "(" in regex' };
  try {
    return { regex: new RegExp(`^(?:${pattern})$`) };
  } catch (e) {
    return { error: `invalid regex: ${e instanceof Error ? e.message : String(e)}` };
  }
}
