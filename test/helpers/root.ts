/**
 * Tests that need root (network namespaces, nftables, marks, setns) register through these: as
 * root they are ordinary tests; otherwise ava reports them as skipped, with the reason in the
 * title, never as a passing placeholder.
 */
import test, { type Implementation } from 'ava';
import { canUseNetns } from './netns-raw.js';

export const isRoot = process.getuid?.() === 0;
/** root, and `ip`/`nft` usable: network namespaces can be made */
export const netnsOk = canUseNetns();

type Register = (title: string, impl: Implementation<[]>) => void;

function guarded(run: Register, skip: Register, ok: boolean, why: string): Register {
  return ok ? run : (title, impl) => { skip(`${title} [skipped: ${why}]`, impl); };
}

export const rootTest: Register = guarded(test, test.skip, isRoot, 'needs root');
export const rootSerial: Register = guarded(test.serial, test.serial.skip, isRoot, 'needs root');
export const netnsTest: Register = guarded(test, test.skip, netnsOk, 'needs root with ip and nft');
export const netnsSerial: Register = guarded(test.serial, test.serial.skip, netnsOk, 'needs root with ip and nft');
