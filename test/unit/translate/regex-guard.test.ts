/**
 * L7 regexes: the translator refuses every pattern the data plane's regex guard (src/policy) would
 * refuse, so a route is rejected at the control plane with its name, not pushed and then refused.
 */
import test from 'ava';
import type { KubeObject } from '../../../src/control/config/types.js';
import { compileSafeRegex } from '../../../src/policy/index.js';
import { translator } from './_support.js';

function route(pattern: string): KubeObject {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'r', namespace: 'ns' },
    spec: { parentRefs: [{ group: '', kind: 'Service', name: 's' }], rules: [{ matches: [{ path: { type: 'RegularExpression', value: pattern } }], backendRefs: [{ name: 's', port: 80 }] }] },
  } as unknown as KubeObject;
}

const PATTERNS = ['(a|aa)+', '(a|a)*', '(\\w+\\s?)+$', '(?:a|b)+c', '(x+x+)+y', '([a-z]+)*', '^/api/.*', '/v[0-9]+/users', '(.*a){12}', '/items/[^/]+'];

for (const p of PATTERNS) {
  test(`translator and data-plane guard agree on ${JSON.stringify(p)}`, (t) => {
    const r = translator().update([route(p)]);
    const refused = r.rejected.filter((x) => x.kind === 'HTTPRoute' && x.name === 'r');
    const guard = compileSafeRegex(p);
    t.is(refused.length > 0, 'error' in guard, refused[0]?.message ?? 'accepted');
    if (refused.length) t.regex(refused[0]!.field, /path\.value/);
  });
}
