export { evaluateL4, authorizationMatches } from './l4.js';
export type { L4Connection, L4Decision, DryRunResult, SourceIdentity } from './l4.js';
export { compileRegex, compileSafeRegex, MAX_REGEX_LENGTH } from './regex.js';
export type { RegexResult, CompiledRegex } from './regex.js';
export { evaluateL7, evaluateTcp, stringMatches, pathReadings, templateRegex } from './l7.js';
export type { L7Request, L7Decision, TcpConnectionFacts } from './l7.js';
