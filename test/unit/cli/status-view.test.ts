import test from 'ava';
import { parse } from 'yaml';
import { parseOutput, render, renderTable, summaryTable } from '../../../src/cli/output.js';
import { certCell, parseSyncz, shortDuration, statusRows, statusTable, typeStatus, type SynczPeer } from '../../../src/cli/status-view.js';

const A = 'type.googleapis.com/ambit.v1.Address';
const Z = 'type.googleapis.com/ambit.v1.Authorization';
const W = 'type.googleapis.com/ambit.v1.WaypointConfig';
const NOW = Date.parse('2026-12-03T12:00:00.000Z');

const synced = (typeUrl: string, v: string) => ({ typeUrl, versionSent: v, versionAcked: v, pendingResponses: 0, rejected: [] });

const agent: SynczPeer = {
  node: 'node-1', role: 'agent', subject: 'bootstrap:agent:node-1', connectedSince: '2026-12-03T11:55:00.000Z',
  types: [synced(A, '7'), synced(Z, '3')],
  certificates: [
    { identity: 'spiffe://cluster.local/ns/default/sa/echo', notAfter: '2026-12-04T11:00:00.000Z' },
    { identity: 'spiffe://cluster.local/ns/default/sa/client', notAfter: '2026-12-03T13:30:00.000Z' },
  ],
};
const waypoint: SynczPeer = {
  node: 'node-2', role: 'waypoint', identity: 'spiffe://cluster.local/ns/shop/sa/wp', connectedSince: '2026-12-03T11:59:50.000Z',
  types: [synced(A, '7'), { typeUrl: Z, versionSent: '4', versionAcked: '3', pendingResponses: 1, rejected: [] },
    { typeUrl: W, versionSent: '5', versionAcked: '5', pendingResponses: 0, rejected: [], lastNack: { version: '5', message: 'route r1: bad regex', at: '2026-12-03T11:59:59.000Z' } }],
};

test('typeStatus: SYNCED, STALE (sent ahead or pending), NACK (the held version, or resources still rejected), NOT SENT', (t) => {
  t.is(typeStatus(synced(A, '3')).state, 'SYNCED');
  t.is(typeStatus({ ...synced(A, '3'), versionSent: '4' }).state, 'STALE');
  t.is(typeStatus({ ...synced(A, '3'), pendingResponses: 1 }).state, 'STALE');
  t.is(typeStatus({ ...synced(A, '3'), lastNack: { version: '3', message: 'x', at: '' } }).state, 'NACK');
  // a NACK of an older version, ACKed since: synced again
  t.is(typeStatus({ ...synced(A, '3'), lastNack: { version: '2', message: 'x', at: '' } }).state, 'SYNCED');
  t.is(typeStatus({ ...synced(A, '3'), rejected: [{ name: 'w1', message: 'bad' }] }).state, 'NACK');
  t.is(typeStatus({ typeUrl: A, versionSent: '', versionAcked: '', pendingResponses: 0 }).state, 'NOT SENT');
});

test('statusRows: agents then waypoints, a waypoint named by its identity, the soonest certificate expiry', (t) => {
  const rows = statusRows(parseSyncz(JSON.parse(JSON.stringify([waypoint, agent]))));
  t.deepEqual(rows.map((r) => [r.name, r.role]), [['node-1', 'agent'], ['shop/wp', 'waypoint']]);
  t.is(rows[0]!.certExpiry, '2026-12-03T13:30:00.000Z');
  t.is(rows[0]!.certificates, 2);
  t.is(rows[1]!.types.Authorization!.state, 'STALE');
  t.is(rows[1]!.types.WaypointConfig!.state, 'NACK');
  t.is(rows[1]!.types.WaypointConfig!.lastNack!.message, 'route r1: bad regex');
  t.false('WaypointConfig' in rows[0]!.types);
});

test('statusTable: one aligned row per peer with the states, the NACK reason and the expiry', (t) => {
  const text = statusTable(statusRows([agent, waypoint]), NOW);
  const lines = text.trimEnd().split('\n');
  t.is(lines.length, 3);
  t.regex(lines[0]!, /^NAME\s+ROLE\s+NODE\s+CONNECTED\s+ADDRESS\s+AUTHORIZATION\s+WAYPOINTCONFIG\s+CERT EXPIRY$/);
  t.regex(lines[1]!, /^node-1\s+agent\s+node-1\s+5m0s ago\s+SYNCED \(7\)\s+SYNCED \(3\)\s+-\s+in 1h30m \(2 certs\)$/);
  t.regex(lines[2]!, /^shop\/wp\s+waypoint\s+node-2\s+10s ago\s+SYNCED \(7\)\s+STALE \(sent 4, acked 3\)\s+NACK \(v5: route r1: bad regex\)\s+-$/);
  // columns line up: every row's second column starts where the header's does
  t.is(new Set(lines.map((l) => l.search(/ (agent|waypoint|ROLE)/))).size, 1);
  t.is(statusTable([], NOW), 'no agent or waypoint is connected to the control plane\n');
});

test('certCell and shortDuration: expired certificates say so', (t) => {
  const [row] = statusRows([{ ...agent, certificates: [{ identity: 'x', notAfter: '2026-12-03T11:00:00.000Z' }] }]);
  t.is(certCell(row!, NOW), 'EXPIRED');
  t.is(certCell({ ...row!, certExpiry: undefined } as never, NOW), '-');
  t.is(shortDuration(3 * 86400_000 + 4 * 3600_000 + 5000), '3d4h');
  t.is(shortDuration(61_000), '1m1s');
  t.is(shortDuration(-5), '0s');
});

test('parseSyncz: an answer of another shape is one clear error', (t) => {
  t.throws(() => parseSyncz({ peers: [] }), { message: /not a list/ });
  t.throws(() => parseSyncz([{ node: 'n', role: 'agent', connectedSince: 'x', types: [{ typeUrl: A }] }]), { message: /versionSent/ });
  t.notThrows(() => parseSyncz([]));
});

test('--output: table, json, yaml; anything else is one line naming the flag', (t) => {
  t.is(parseOutput('yaml'), 'yaml');
  t.is(parseOutput(['json', 'table']), 'table');
  const e = t.throws(() => parseOutput('xml'));
  t.is(e.message, '--output: "xml" is not one of table, json, yaml');
  t.false(e.message.includes('\n'));
  const rows = statusRows([agent]);
  t.deepEqual(JSON.parse(render('json', rows, () => 'T')), rows);
  t.deepEqual(parse(render('yaml', rows, () => 'T')), rows);
  t.is(render('table', rows, () => 'T'), 'T');
});

test('renderTable cuts long cells and keeps them on one line; summaryTable sizes lists and objects', (t) => {
  const text = renderTable(['A', 'B'], [['x', `long\nmessage ${'y'.repeat(100)}`]], 20);
  t.is(text.split('\n').length, 3);
  t.true(text.includes('long message yyyyyy…'));
  const s = summaryTable({ ready: true, enrolled: [1, 2], instance: { pid: 3, state: 'serving' }, name: 'n' });
  t.regex(s, /^enrolled\s+2 items$/m);
  t.regex(s, /^ready\s+true$/m);
  t.regex(s, /^instance\s+\{"pid":3,"state":"serving"\}$/m);
  t.regex(s, /^name\s+n$/m);
});
