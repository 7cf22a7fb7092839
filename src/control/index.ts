/** The control plane program: config sources -> model -> push to agents and waypoints, CA, status. */
export { runControl, startControl, controlSettings, parseAudiences } from './main.js';
export type { ControlSettings } from './main.js';
export { analyzeObjects, validateObjects, watchedKind, controlObjectKey, notAnObjectReason } from './validate.js';
export type { AnalyzeResult, ValidateOptions, ValidateResult, KubeObject, Rejection } from './validate.js';
