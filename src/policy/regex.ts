/**
 * User-supplied regular expressions (path, header, query, authority matches, regex rewrites) with RE2
 * semantics, as users write them for Istio and the Gateway API: RE2 syntax, whole-string match, and
 * matching in time linear in the input, whatever the pattern (no backtracking, so no `(a+)+$` blow-up).
 * The engine is `re2js`, a pure-JavaScript port of RE2 (no native build). Patterns RE2 refuses
 * (backreferences, lookaround, bad syntax) come back as an error the translator reports with the
 * resource and field.
 */
import { RE2JS } from 're2js';

/** Longest pattern accepted, in characters (the control plane caps it at 1024 too). */
export const MAX_REGEX_LENGTH = 1024;

/** A compiled pattern. */
export interface CompiledRegex {
  /** the pattern as written */
  readonly source: string;
  /** does the WHOLE of `s` match (RE2 FullMatch)? */
  test(s: string): boolean;
  /** does the pattern match somewhere in `s`? */
  find(s: string): boolean;
  /**
   * Every (non-overlapping) match in `s` replaced by `replacement`, where `\0`..`\9` stand for the
   * groups (RE2 GlobalReplace, as VirtualService `uriRegexRewrite` and Envoy's regex_rewrite use).
   */
  replaceAll(s: string, replacement: string): string;
}

export type RegexResult = { readonly regex: CompiledRegex } | { readonly error: string };

const cache = new Map<string, RegexResult>();
const CACHE_MAX = 4096;

/**
 * Compile `pattern` with RE2 semantics, or explain why not. Never throws. Results are cached by
 * pattern (a config's regexes are compiled once however many routes share them).
 * @param maxLength characters; default MAX_REGEX_LENGTH
 */
export function compileRegex(pattern: unknown, maxLength = MAX_REGEX_LENGTH): RegexResult {
  if (typeof pattern !== 'string') return { error: 'regex must be a string' };
  if (pattern.length > maxLength) return { error: `regex is ${pattern.length} characters, longer than the limit of ${maxLength}` };
  const hit = cache.get(pattern);
  if (hit) return hit;
  let out: RegexResult;
  try {
    const re = RE2JS.compile(pattern);
    out = { regex: wrap(pattern, re) };
  } catch (e) {
    out = { error: `not a valid RE2 regex: ${e instanceof Error ? e.message : String(e)}` };
  }
  if (cache.size >= CACHE_MAX) cache.clear();
  cache.set(pattern, out);
  return out;
}

/** The former name: same as compileRegex. */
export const compileSafeRegex = compileRegex;

function wrap(source: string, re: RE2JS): CompiledRegex {
  return {
    source,
    test: (s) => re.matches(s),
    find: (s) => re.matcher(s).find(),
    replaceAll: (s, replacement) => {
      const count = re.groupCount();
      return re.matcher(s).replaceAll((...args: unknown[]) => expand(replacement, args.slice(0, count + 1)));
    },
  };
}

/** `replacement` with `\0`..`\9` replaced by the groups of one match (`\\` is a backslash). */
function expand(replacement: string, groups: readonly unknown[]): string {
  let out = '';
  for (let i = 0; i < replacement.length; i++) {
    const c = replacement[i]!;
    const n = replacement[i + 1];
    if (c === '\\' && n !== undefined && n >= '0' && n <= '9') {
      const g = groups[Number(n)];
      out += typeof g === 'string' ? g : '';
      i++;
    } else if (c === '\\' && n === '\\') { out += '\\'; i++; } else out += c;
  }
  return out;
}
