/**
 * Bearer tokens for the control channel. A fixed string is enough locally (the bootstrap token
 * never changes), but Kubernetes rotates projected service-account tokens, so the client asks a
 * provider on every (re)connect instead of keeping the first value forever.
 */
import { constants as fsConstants } from 'node:fs';
import { open } from 'node:fs/promises';
import { MeshError, errorMessage } from '../core/index.js';

/** A fixed token, or a function asked on every (re)connect. */
export type TokenSource = string | (() => string | Promise<string>);

/** Largest token accepted; also what the control plane accepts in the header. */
export const MAX_TOKEN_BYTES = 8192;

// what may go into an HTTP header value after "Bearer ": visible ASCII, no spaces
const TOKEN_CHARS = /^[\x21-\x7e]+$/;

/** Checks a token before it goes into a header; `from` names where it came from. */
export function checkToken(token: string, from: string): string {
  if (token === '') throw new MeshError('AMBIT_CONFIG_INVALID', `${from}: token is empty`);
  if (token.length > MAX_TOKEN_BYTES) throw new MeshError('AMBIT_CONFIG_INVALID', `${from}: token longer than ${MAX_TOKEN_BYTES} bytes`);
  if (!TOKEN_CHARS.test(token)) throw new MeshError('AMBIT_CONFIG_INVALID', `${from}: token has characters other than visible ASCII`);
  return token;
}

/**
 * A provider that re-reads `path` on every call: trimmed, at most `MAX_TOKEN_BYTES`, not empty.
 * Rejects with an error naming the file; the client then backs off and asks again.
 */
export function tokenFromFile(path: string): () => Promise<string> {
  return async () => {
    let text: string;
    let size: number;
    try {
      // read one byte more than allowed through a bounded buffer: a huge or endless file
      // (a device, a misconfigured mount) must not be read whole. Non-blocking open and a
      // regular-file check: opening a FIFO would block a thread-pool thread until a writer came
      const fh = await open(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
      try {
        if (!(await fh.stat()).isFile()) throw new Error('not a regular file');
        const buf = Buffer.alloc(MAX_TOKEN_BYTES + 2);
        const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
        size = bytesRead;
        text = buf.subarray(0, bytesRead).toString('utf8');
      } finally {
        await fh.close();
      }
    } catch (e) {
      throw new MeshError('AMBIT_CONFIG_INVALID', `token file ${path}: cannot read: ${errorMessage(e)}`, { cause: e });
    }
    // one byte of slack for the trailing newline editors and `echo` add
    if (size > MAX_TOKEN_BYTES + 1) throw new MeshError('AMBIT_CONFIG_INVALID', `token file ${path}: larger than ${MAX_TOKEN_BYTES} bytes`);
    return checkToken(text.trim(), `token file ${path}`);
  };
}
