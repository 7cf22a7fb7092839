/**
 * TokenReview audiences: the control plane asks the API server to review agents' tokens for the
 * audience the DaemonSet mints them for (`ambit`), refuses tokens minted for another audience, and
 * refuses an answer that does not confirm the audience (an audience-unaware authenticator).
 * A fake API server that speaks TokenReview with audiences; real push server and client.
 */
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { createServer } from 'node:http';
import { Snapshot } from '../../src/model/index.js';
import { XdsClient, buildResourceTables } from '../../src/xds/index.js';
import { PushServer, TokenReviewAuthenticator } from '../../src/control/push/index.js';
import { controlSettings, parseAudiences } from '../../src/control/main.js';
import { API_DEFAULT_AUDIENCE, fakeTokenReviewServer } from '../helpers/fake-token-review.js';
import { servePush } from '../helpers/push-harness.js';

async function plane(t: ExecutionContext, auth: TokenReviewAuthenticator) {
  const push = new PushServer({ authenticator: auth, debounceMs: 1 });
  push.update(buildResourceTables(Snapshot.empty()).tables);
  push.flush();
  const server = createServer();
  push.attach(server);
  const h = await servePush(t, server, () => push.close());
  return {
    push,
    /** resolves 'ready' or the first error's code */
    async connect(token: string): Promise<string> {
      const c = h.track(new XdsClient({ url: h.url, token, node: 'node-a', role: 'agent', backoff: { initialMs: 60_000 } }));
      const err = new Promise<string>((resolve) => c.once('error', (e) => resolve((e as { code?: string }).code ?? e.message)));
      c.start();
      return Promise.race([c.ready.then(() => 'ready'), err]);
    },
  };
}

const AGENT = 'system:serviceaccount:ambit-system:ambit-agent';

test('with audience ambit: the review asks for it, an ambit token gets in, a default-audience token does not', async (t) => {
  const { kc, seen } = await fakeTokenReviewServer(t, {
    'tok-ambit': { username: AGENT, node: 'node-a', aud: ['ambit'] },
    'tok-default': { username: AGENT, node: 'node-a', aud: [API_DEFAULT_AUDIENCE] },
  });
  const s = controlSettings({ AMBIT_CONFIG_SOURCE: 'kubernetes', AMBIT_TOKEN_AUDIENCES: 'ambit', AMBIT_AGENT_SERVICE_ACCOUNTS: 'ambit-system/ambit-agent' });
  const cp = await plane(t, new TokenReviewAuthenticator({ kubeConfig: kc, trustDomain: 'cluster.local', agentServiceAccounts: s.agentServiceAccounts, audiences: s.tokenAudiences }));
  t.is(await cp.connect('tok-ambit'), 'ready');
  t.deepEqual(seen[0]!.spec.audiences, ['ambit']);
  t.is(await cp.connect('tok-default'), 'AMBIT_XDS_UNAUTHENTICATED');
  t.is(cp.push.peerCount, 1);
});

test('without audiences the review asks for none and the API server default applies', async (t) => {
  const { kc, seen } = await fakeTokenReviewServer(t, {
    'tok-ambit': { username: AGENT, node: 'node-a', aud: ['ambit'] },
    'tok-default': { username: AGENT, node: 'node-a', aud: [API_DEFAULT_AUDIENCE] },
  });
  const s = controlSettings({ AMBIT_CONFIG_SOURCE: 'kubernetes' });
  t.deepEqual(s.tokenAudiences, []);
  const cp = await plane(t, new TokenReviewAuthenticator({ kubeConfig: kc, trustDomain: 'cluster.local', agentServiceAccounts: ['ambit-system/ambit-agent'] }));
  t.is(await cp.connect('tok-default'), 'ready');
  t.is(seen[0]!.spec.audiences, undefined);
  // the mismatch the manifests must avoid: agents minting for ambit, control asking for nothing
  t.is(await cp.connect('tok-ambit'), 'AMBIT_XDS_UNAUTHENTICATED');
});

test('an answer that does not confirm the audience is refused (audience-unaware authenticator)', async (t) => {
  const { kc } = await fakeTokenReviewServer(t, { 'tok-other': { username: AGENT, node: 'node-a', aud: ['someone-else'] } }, { audienceAware: false });
  const cp = await plane(t, new TokenReviewAuthenticator({ kubeConfig: kc, trustDomain: 'cluster.local', agentServiceAccounts: ['ambit-system/ambit-agent'], audiences: ['ambit'] }));
  t.is(await cp.connect('tok-other'), 'AMBIT_XDS_UNAUTHENTICATED');
  t.is(cp.push.peerCount, 0);
});

test('AMBIT_TOKEN_AUDIENCES: comma list, trimmed; flags replace it; bad items are named', (t) => {
  t.deepEqual(controlSettings({ AMBIT_TOKEN_AUDIENCES: ' ambit , https://ambit.example/x ,' }).tokenAudiences, ['ambit', 'https://ambit.example/x']);
  t.deepEqual(controlSettings({ AMBIT_TOKEN_AUDIENCES: 'ambit' }, { tokenAudiences: ['other'] }).tokenAudiences, ['other']);
  t.throws(() => controlSettings({ AMBIT_TOKEN_AUDIENCES: 'a b' }), { message: /AMBIT_TOKEN_AUDIENCES: "a b"/ });
  t.throws(() => controlSettings({}, { tokenAudiences: ['x'.repeat(300)] }), { message: /--token-audiences/ });
  t.throws(() => parseAudiences('K', Array.from({ length: 17 }, (_, i) => `a${i}`).join(',')), { message: /K: more than 16/ });
});
