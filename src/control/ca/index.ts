export { CaService, authorizeCertificate } from './ca-service.js';
export type { CaSigner, CaServiceOptions } from './ca-service.js';
export { issueControlCert, CONTROL_NAMESPACE, CONTROL_SERVICE_ACCOUNT } from './control-cert.js';
export type { ServingCert } from './control-cert.js';
