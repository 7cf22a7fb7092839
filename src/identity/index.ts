export {
  spiffeUri, parseSpiffeUri, identityKey, checkIdentity, checkTrustDomain, sameIdentity, requireIdentity,
  requireTrustDomain,
} from './spiffe.js';
export type { Identity } from './spiffe.js';
export { uriSans, peerIdentity, verifyPeerChain, MAX_CHAIN } from './peer.js';
export { CertificateAuthority, CA_FILES } from './ca.js';
export type { CaOptions, CaPemFiles, NodeAuthorizer } from './ca.js';
export { generateKeyAndCsr } from './csr.js';
export { CertManager, refreshAt } from './cert-manager.js';
export type { CertBundle, CertClock, CertRequest, CertManagerOptions } from './cert-manager.js';
export { tlsServerOptions, tlsClientOptions, peerChainDer, verifyTlsPeer } from './tls.js';
export { pemToDers, derToPem, splitPem } from './pem.js';
export { certValidity } from './der.js';
