/**
 * A gRPC echo on the wire protocol (HTTP/2 cleartext, length-prefixed messages, grpc-status in
 * trailers) for the netns tests, without a gRPC library: run inside pods.
 *
 *   server <port> <name>           /echo.Echo/Say answers `<name>:<msg>`; /echo.Echo/Chat echoes each message as it comes
 *   client <host> <port> unary <msg> [grpc-timeout]    prints {status, grpcStatus, messages}
 *   client <host> <port> stream <m1,m2,m3>             sends one message per answer received
 */
import { connect, createServer, type ClientHttp2Stream, type ServerHttp2Stream } from 'node:http2';

function frame(text: string): Buffer {
  const b = Buffer.from(text);
  const h = Buffer.alloc(5);
  h.writeUInt32BE(b.length, 1);
  return Buffer.concat([h, b]);
}

/** Splits length-prefixed messages out of a byte stream. */
function reader(onMessage: (m: string) => void): (d: Buffer) => void {
  let buf = Buffer.alloc(0);
  return (d) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 5) {
      const n = buf.readUInt32BE(1);
      if (buf.length < 5 + n) return;
      onMessage(buf.subarray(5, 5 + n).toString());
      buf = buf.subarray(5 + n);
    }
  };
}

const [mode, a1, a2, a3, a4, a5] = process.argv.slice(2);

if (mode === 'server') {
  const name = a2 ?? 'grpc';
  const server = createServer();
  server.on('stream', (s: ServerHttp2Stream, h) => {
    const path = String(h[':path']);
    if (!String(h['content-type'] ?? '').startsWith('application/grpc')) { s.respond({ ':status': 415 }); s.end(); return; }
    s.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0' }));
    if (path === '/echo.Echo/Say') {
      s.on('data', reader((m) => {
        if (m.startsWith('sleep:')) setTimeout(() => s.end(frame(`${name}:${m}`)), Number(m.slice(6)));
        else s.end(frame(`${name}:${m}`));
      }));
    } else if (path === '/echo.Echo/Chat') {
      s.on('data', reader((m) => s.write(frame(`${name}:${m}`))));
      s.on('end', () => s.end());
    } else {
      s.close();
    }
  });
  server.listen(Number(a1), '0.0.0.0', () => process.stdout.write(JSON.stringify({ event: 'listening', port: Number(a1) }) + '\n'));
} else if (mode === 'client') {
  const session = connect(`http://${a1}:${a2}`);
  const out = (o: unknown): void => { process.stdout.write(JSON.stringify(o) + '\n'); session.close(); };
  session.on('error', (e) => out({ error: (e as NodeJS.ErrnoException).code ?? e.message }));
  const messages: string[] = [];
  let status = 0;
  let grpcStatus: string | undefined;
  const call = (path: string, timeout?: string): ClientHttp2Stream => {
    const s = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', ...(timeout ? { 'grpc-timeout': timeout } : {}) });
    s.on('response', (h) => { status = Number(h[':status']); if (h['grpc-status'] !== undefined) grpcStatus = String(h['grpc-status']); });
    s.on('trailers', (t) => { grpcStatus = String(t['grpc-status']); });
    s.on('error', (e) => out({ error: (e as NodeJS.ErrnoException).code ?? e.message, messages }));
    s.on('close', () => out({ status, grpcStatus, messages }));
    return s;
  };
  if (a3 === 'unary') {
    const s = call('/echo.Echo/Say', a5);
    s.on('data', reader((m) => messages.push(m)));
    s.end(frame(a4 ?? 'hello'));
  } else {
    const list = (a4 ?? 'a,b,c').split(',');
    const s = call('/echo.Echo/Chat');
    let i = 0;
    s.on('data', reader((m) => {
      messages.push(m);
      if (++i < list.length) s.write(frame(list[i]!)); else s.end();
    }));
    s.write(frame(list[0]!));
  }
  setTimeout(() => out({ error: 'ETIMEDOUT', messages }), 15_000).unref();
}
