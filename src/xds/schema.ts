/**
 * Loads the protobuf schema (src/xds/proto/*.proto) once, at first use. The .proto files are read
 * at run time rather than compiled to code, so they are found from the package root: walking up
 * from this file to the directory holding package.json works both from src (tsx) and from dist.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { MeshError } from '../core/index.js';

const FILES = ['control.proto', 'address.proto', 'authorization.proto', 'waypoint.proto'];

export interface Schema {
  readonly ControlMessage: protobuf.Type;
  readonly Address: protobuf.Type;
  readonly Authorization: protobuf.Type;
  readonly WaypointConfig: protobuf.Type;
}

let cached: Schema | undefined;

function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new MeshError('AMBIT_BUG', `no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

export function schema(): Schema {
  if (cached) return cached;
  const protoDir = join(packageRoot(), 'src', 'xds', 'proto');
  const root = protobuf.loadSync(FILES.map((f) => join(protoDir, f)));
  root.resolveAll();
  cached = {
    ControlMessage: root.lookupType('ambit.v1.ControlMessage'),
    Address: root.lookupType('ambit.v1.Address'),
    Authorization: root.lookupType('ambit.v1.Authorization'),
    WaypointConfig: root.lookupType('ambit.v1.WaypointConfig'),
  };
  return cached;
}
