import test from 'ava';
import type { Authorization, Service, Waypoint, Workload } from '../../../src/model/index.js';
import { Snapshot } from '../../../src/model/index.js';
import {
  ADDRESS_TYPE, AUTHORIZATION_TYPE, ResourceStore, buildResourceTables, bytesToIp, decodeAddresses, decodeAuthorizations,
  decodeWaypointConfigs, encodeAuthorization, encodeService, encodeWaypoint, encodeWaypointConfig, encodeWorkload, ipToBytes,
  waypointResourceName,
} from '../../../src/xds/index.js';
import { decodeControlMessage, encodeControlMessage } from '../../../src/xds/codec.js';
import { schema } from '../../../src/xds/schema.js';

const wl: Workload = {
  uid: 'c1//Pod/shop/web-1', name: 'web-1', namespace: 'shop', serviceAccount: 'web', trustDomain: 'cluster.local', node: 'n1',
  addresses: ['10.0.0.5', 'fd00::5'], labels: { app: 'web' }, canonicalName: 'web', canonicalRevision: 'v1', workloadName: 'web',
  workloadType: 'deployment', tunnel: 'hbone', waypoint: { service: 'shop/wp.shop.svc.cluster.local', port: 15008 }, healthy: false,
  services: ['shop/web.shop.svc.cluster.local'], authorizationPolicies: ['shop/allow-web'],
};
const svc: Service = {
  name: 'web', namespace: 'shop', hostname: 'web.shop.svc.cluster.local', vips: ['10.96.0.10'],
  ports: [{ port: 80, targetPort: 8080, name: 'http', appProtocol: 'http' }, { port: 9000, targetPort: 9000 }],
};
const authz: Authorization = {
  name: 'allow-web', namespace: 'shop', scope: 'workload', action: 'deny', dryRun: true,
  rules: [{ clauses: [
    { matches: [{ principals: [{ exact: 'cluster.local/ns/a/sa/b' }, { prefix: 'x' }], notNamespaces: [{ presence: true }] }] },
    { matches: [{ sourceIps: [{ address: '10.1.0.0', prefixLen: 16 }], notDestinationIps: [{ address: '::', prefixLen: 0 }], destinationPorts: [80, 443], notPrincipals: [{ suffix: '/sa/x' }] }] },
  ] }, { clauses: [] }],
};
const wp: Waypoint = { name: 'wp', namespace: 'shop', service: 'shop/wp.shop.svc.cluster.local', for: 'service', gatewayClass: 'ambit-waypoint' };

test('workload, service, waypoint and authorization survive a round trip through bytes', (t) => {
  const addr = decodeAddresses([
    { name: wl.uid, version: 'a', payload: encodeWorkload(wl) },
    { name: 'shop/web.shop.svc.cluster.local', version: 'b', payload: encodeService(svc) },
    { name: waypointResourceName(wp), version: 'c', payload: encodeWaypoint(wp) },
  ]);
  t.deepEqual(addr.rejected, []);
  t.deepEqual(addr.resources.map((r) => r.value), [{ kind: 'workload', workload: wl }, { kind: 'service', service: svc }, { kind: 'waypoint', waypoint: wp }]);
  const az = decodeAuthorizations([{ name: 'shop/allow-web', version: 'x', payload: encodeAuthorization(authz) }]);
  t.deepEqual(az.rejected, []);
  t.deepEqual(az.resources[0]!.value, authz);
});

test('a healthy workload without waypoint decodes without the optional fields', (t) => {
  const { waypoint: _w, ...rest } = wl;
  const plain: Workload = { ...rest, healthy: true, tunnel: 'none', workloadType: 'pod' };
  const d = decodeAddresses([{ name: wl.uid, version: '1', payload: encodeWorkload(plain) }]);
  t.deepEqual(d.resources[0]!.value, { kind: 'workload', workload: plain });
  t.false('waypoint' in (d.resources[0]!.value as { workload: Workload }).workload);
});

test('bad resources are rejected by name and field while good ones decode', (t) => {
  const A = schema().Address;
  const badIp = A.encode({ workload: { ...wl, addresses: [Uint8Array.from([1, 2, 3])], labels: {}, workloadType: 0, tunnel: 0, status: 0, waypoint: undefined } }).finish();
  const badEnum = A.encode({ workload: { ...wl, addresses: [], labels: {}, workloadType: 9, tunnel: 0, status: 0, waypoint: undefined } }).finish();
  const badPort = A.encode({ service: { ...svc, vips: [], ports: [{ port: 70000, targetPort: 0 }] } }).finish();
  const d = decodeAddresses([
    { name: wl.uid, version: '1', payload: badIp },
    { name: 'bad-enum', version: '1', payload: badEnum },
    { name: 'shop/web.shop.svc.cluster.local', version: '1', payload: badPort },
    { name: 'garbage', version: '1', payload: Uint8Array.from([0xff, 0xff, 0xff]) },
    { name: 'other-name', version: '1', payload: encodeService(svc) },
    { name: 'c1//Pod/shop/web-1', version: '2', payload: encodeWorkload(wl) },
  ]);
  t.is(d.resources.length, 1);
  t.deepEqual(d.rejected.map((r) => r.name), [wl.uid, 'bad-enum', 'shop/web.shop.svc.cluster.local', 'garbage', 'other-name']);
  t.regex(d.rejected[0]!.message, /workload\.addresses\[0\]: IP address must be 4 or 16 bytes, got 3/);
  t.regex(d.rejected[1]!.message, /workload\.workload_type: unknown enum value 9/);
  t.regex(d.rejected[2]!.message, /service\.ports\[0\]\.port: port 70000/);
  t.regex(d.rejected[3]!.message, /malformed payload/);
  t.regex(d.rejected[4]!.message, /differs from the resource name/);
  const Z = schema().Authorization;
  const badCidr = Z.encode({ name: 'p', namespace: 'n', rules: [{ clauses: [{ matches: [{ sourceIps: [{ address: ipToBytes('10.0.0.0'), length: 33 }] }] }] }] }).finish();
  const az = decodeAuthorizations([{ name: 'n/p', version: '1', payload: badCidr }]);
  t.regex(az.rejected[0]!.message, /authorization\.rules\[0\]\.clauses\[0\]\.matches\[0\]\.sourceIps\[0\]\.length: 33 exceeds 32/);
});

test('waypoint config travels as JSON and is checked in outline', (t) => {
  const l7 = { service: 'shop/web.shop.svc.cluster.local', http: [], grpc: [] };
  const ok = decodeWaypointConfigs([{ name: l7.service, version: '1', payload: encodeWaypointConfig(l7.service, l7) }]);
  t.deepEqual(ok.resources[0]!.value, l7);
  const bad = decodeWaypointConfigs([{ name: 'x/y', version: '1', payload: schema().WaypointConfig.encode({ service: 'x/y', json: Buffer.from('{"service":"x/y","http":3,"grpc":[]}') }).finish() }]);
  t.regex(bad.rejected[0]!.message, /json\.http: not a list/);
});

test('IP bytes <-> text is canonical', (t) => {
  for (const ip of ['0.0.0.0', '255.1.2.3', '::', '::1', 'fd00::5', '2001:db8:0:1:0:0:0:1', '1:0:0:2:0:0:0:3', '::ffff:1.2.3.4', '1:2:3:4:5:6:7:8']) {
    const b = ipToBytes(ip);
    t.is(b.length, ip.includes(':') ? 16 : 4);
    t.is(ipToBytes(bytesToIp(b)!).join(), b.join());
  }
  t.is(bytesToIp(ipToBytes('2001:db8:0:1:0:0:0:1')), '2001:db8:0:1::1');
  t.is(bytesToIp(ipToBytes('1:0:0:2:0:0:0:3')), '1:0:0:2::3');
  t.is(bytesToIp(ipToBytes('FD00:0::5')), 'fd00::5');
  t.is(bytesToIp(Uint8Array.from([1, 2])), undefined);
  t.throws(() => ipToBytes('10.0.0.256'), { message: /not an IP address/ });
});

test('envelope: a NACK request and a response round trip from bytes; junk is a protocol error', (t) => {
  const req = {
    typeUrl: AUTHORIZATION_TYPE, responseNonce: 'd3', initialResourceVersions: { a: '1' }, subscribe: ['*'], unsubscribe: [],
    errorDetail: { code: 3, message: 'a: bad', resources: [{ name: 'a', message: 'bad' }] },
  };
  const got = decodeControlMessage(encodeControlMessage({ kind: 'deltaRequest', deltaRequest: req }));
  t.deepEqual(got, { kind: 'deltaRequest', deltaRequest: req });
  const ack = decodeControlMessage(encodeControlMessage({ kind: 'deltaRequest', deltaRequest: { ...req, errorDetail: undefined } }));
  t.true(ack.kind === 'deltaRequest' && ack.deltaRequest.errorDetail === undefined);
  const res = decodeControlMessage(Buffer.from(encodeControlMessage({ kind: 'deltaResponse', deltaResponse: { typeUrl: ADDRESS_TYPE, systemVersionInfo: '7', nonce: 'n', resources: [{ name: 'r', version: 'v', payload: Uint8Array.from([1]) }], removedResources: ['gone'] } })));
  t.is(res.kind, 'deltaResponse');
  if (res.kind === 'deltaResponse') { t.is(res.deltaResponse.removedResources[0], 'gone'); t.deepEqual([...res.deltaResponse.resources[0]!.payload], [1]); }
  t.throws(() => decodeControlMessage(Uint8Array.from([0x0a, 0xff])), { code: 'AMBIT_XDS_PROTOCOL' });
  t.throws(() => decodeControlMessage(new Uint8Array(0)), { code: 'AMBIT_XDS_PROTOCOL' });
});

test('store: versions are content hashes; an update yields only the changed and removed names', (t) => {
  const store = new ResourceStore();
  const snap1 = Snapshot.build({ workloads: [wl], services: [svc], authorizations: [authz] });
  t.deepEqual(store.update(buildResourceTables(snap1).tables).sort(), [ADDRESS_TYPE, AUTHORIZATION_TYPE].sort());
  const v1 = store.table(ADDRESS_TYPE).get(wl.uid)!.version;
  // an equal copy (new identity) has the same version: nothing to push
  t.deepEqual(store.update(buildResourceTables(Snapshot.build({ workloads: [{ ...wl }], services: [svc], authorizations: [authz] })).tables), []);
  const snap3 = Snapshot.build({ workloads: [{ ...wl, healthy: true }], services: [], authorizations: [authz] });
  t.deepEqual(store.update(buildResourceTables(snap3).tables), [ADDRESS_TYPE]);
  t.not(store.table(ADDRESS_TYPE).get(wl.uid)!.version, v1);
  const d = store.deltaFrame(ADDRESS_TYPE)!;
  const m = decodeControlMessage(d.frame);
  t.true(m.kind === 'deltaResponse');
  if (m.kind === 'deltaResponse') {
    t.deepEqual(m.deltaResponse.resources.map((r) => r.name), [wl.uid]);
    t.deepEqual(m.deltaResponse.removedResources, ['shop/web.shop.svc.cluster.local']);
    t.is(m.deltaResponse.systemVersionInfo, store.version);
  }
});

test('tables report model objects that cannot be encoded instead of throwing', (t) => {
  const snap = Snapshot.build({ workloads: [{ ...wl, addresses: ['not-an-ip'] }], services: [svc], authorizations: [] });
  const r = buildResourceTables(snap);
  t.is(r.rejected.length, 1);
  t.is(r.rejected[0]!.name, wl.uid);
  t.regex(r.rejected[0]!.message, /not an IP address/);
  t.true(r.tables.get(ADDRESS_TYPE)!.has('shop/web.shop.svc.cluster.local'));
});
