/** Module boundaries of ARCHITECTURE.md, checked on every test run. */
const PURE_FORBIDDEN = '^(node:)?(net|tls|http|http2|https|dgram|child_process|fs|ws)$';
module.exports = {
  forbidden: [
    { name: 'core-is-a-leaf', severity: 'error',
      from: { path: '^src/core/' }, to: { path: '^src/(?!core/)' } },
    { name: 'model-policy-pure', severity: 'error',
      comment: 'model and policy are pure: no sockets, files, TLS, HTTP/2 or WebSocket',
      from: { path: '^src/(model|policy)/' },
      to: { path: PURE_FORBIDDEN, dependencyTypes: ['core', 'npm', 'npm-dev', 'npm-optional', 'unknown', 'undetermined'] } },
    { name: 'model-policy-only-core', severity: 'error',
      from: { path: '^src/(model|policy)/' }, to: { path: '^src/(?!(core|model|policy)/)' } },
    { name: 'hbone-knows-no-model', severity: 'error',
      from: { path: '^src/hbone/' }, to: { path: '^src/(model|xds|policy|control|node-agent|waypoint)/' } },
    { name: 'programs-never-import-each-other', severity: 'error',
      from: { path: '^src/(node-agent|waypoint|control)/' },
      to: { path: '^src/(node-agent|waypoint|control)/', pathNot: '^src/$1/' } },
    { name: 'control-has-no-dataplane', severity: 'error',
      from: { path: '^src/control/' }, to: { path: '^src/(hbone|native)/' } },
    { name: 'addon-only-through-src-native', severity: 'error',
      from: { path: '^(src|test|bench)/', pathNot: '^src/native/' }, to: { path: '^native/' } },
    { name: 'protobuf-stays-in-xds', severity: 'error',
      from: { path: '^src/', pathNot: '^src/xds/' }, to: { path: '^protobufjs' } },
    { name: 'src-never-imports-test', severity: 'error',
      from: { path: '^src/' }, to: { path: '^(test|bench)/' } },
    { name: 'no-circular', severity: 'error', from: {}, to: { circular: true } },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
