import test from 'ava';
import { parseEchoArgs } from '../../src/local/echo-server.js';

test('echo server arguments: defaults, both flag forms, and clear errors', (t) => {
  t.like(parseEchoArgs(['--name', 'v1']), { port: 8080, tcpPort: 9090, name: 'v1', version: 'v1' });
  t.like(parseEchoArgs(['--port=81', '--tcp-port', '0', '--name', 'a', '--version', 'v2']), { port: 81, tcpPort: 0, name: 'a', version: 'v2' });
  t.throws(() => parseEchoArgs(['--port', '0']), { message: /--port must be a port number/ });
  t.throws(() => parseEchoArgs(['--port', '99999']), { message: /--port must be a port number/ });
  t.throws(() => parseEchoArgs(['--bogus']), { message: /unknown argument "--bogus"/ });
  t.throws(() => parseEchoArgs(['--name']), { message: /--name needs a value/ });
});
