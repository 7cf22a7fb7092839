/**
 * Reading untrusted YAML/API objects field by field. Every problem is recorded against the
 * resource (kind, namespace, name) and the dotted field path, so the message tells the user exactly
 * what to fix. Readers never throw: they record and return undefined.
 */
import type { Rejection } from '../config/types.js';

/** Longest list accepted in any single field: bounds translation work per resource. */
export const MAX_LIST = 4096;

export type Obj = Record<string, unknown>;

export function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export class Check {
  readonly kind: string;
  readonly namespace: string;
  readonly name: string;
  readonly rejected: Rejection[] = [];
  readonly warnings: Rejection[] = [];

  constructor(kind: string, namespace: string, name: string) {
    this.kind = kind;
    this.namespace = namespace;
    this.name = name;
  }

  get ok(): boolean { return this.rejected.length === 0; }
  get ref(): string { return `${this.kind} ${this.namespace ? `${this.namespace}/` : ''}${this.name}`; }

  reject(field: string, message: string): undefined {
    this.rejected.push({ kind: this.kind, namespace: this.namespace, name: this.name, field, message: `${this.ref}: ${field}: ${message}` });
    return undefined;
  }

  warn(field: string, message: string): void {
    this.warnings.push({ kind: this.kind, namespace: this.namespace, name: this.name, field, message: `${this.ref}: ${field}: ${message}` });
  }

  /** An optional object; anything but an object or absent is an error. */
  obj(v: unknown, field: string): Obj | undefined {
    if (v === undefined || v === null) return undefined;
    if (!isObj(v)) return this.reject(field, `must be an object, got ${describe(v)}`);
    return v;
  }

  /** Flag keys outside `allowed`. Returns false when any was found. */
  known(o: Obj, field: string, allowed: readonly string[]): boolean {
    let ok = true;
    for (const k of Object.keys(o)) {
      if (!allowed.includes(k)) {
        this.reject(field ? `${field}.${k}` : k, `unknown field "${k}" (known: ${allowed.join(', ')})`);
        ok = false;
      }
    }
    return ok;
  }

  str(v: unknown, field: string): string | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string') return this.reject(field, `must be a string, got ${describe(v)}`);
    return v;
  }

  bool(v: unknown, field: string): boolean | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'boolean') return this.reject(field, `must be a boolean, got ${describe(v)}`);
    return v;
  }

  /** An optional list; each element read by `each` (which records its own errors). */
  list<T>(v: unknown, field: string, each: (item: unknown, field: string) => T | undefined): T[] | undefined {
    if (v === undefined || v === null) return undefined;
    if (!Array.isArray(v)) return this.reject(field, `must be a list, got ${describe(v)}`);
    if (v.length > MAX_LIST) return this.reject(field, `has ${v.length} entries, more than the limit of ${MAX_LIST}`);
    const out: T[] = [];
    for (let i = 0; i < v.length; i++) {
      const r = each(v[i], `${field}[${i}]`);
      if (r !== undefined) out.push(r);
    }
    return out;
  }

  strList(v: unknown, field: string): string[] | undefined {
    return this.list(v, field, (x, f) => {
      if (typeof x !== 'string') return this.reject(f, `must be a string, got ${describe(x)}`);
      return x;
    });
  }

  /** A port number 1..65535 given as a number or a decimal string. */
  port(v: unknown, field: string): number | undefined {
    let n: number;
    if (typeof v === 'number') n = v;
    else if (typeof v === 'string' && /^[0-9]{1,5}$/.test(v)) n = Number(v);
    else return this.reject(field, `must be a port number, got ${describe(v)}`);
    if (!Number.isInteger(n) || n < 1 || n > 65535) return this.reject(field, `port ${String(v)} is out of range 1-65535`);
    return n;
  }

  /** `{key: value}` with string values (labels, matchLabels). */
  stringMap(v: unknown, field: string): Record<string, string> | undefined {
    const o = this.obj(v, field);
    if (!o) return undefined;
    const out: Record<string, string> = {};
    for (const [k, x] of Object.entries(o)) {
      if (typeof x !== 'string') { this.reject(`${field}.${k}`, `must be a string, got ${describe(x)}`); continue; }
      out[k] = x;
    }
    return out;
  }
}

export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'string') return `"${v.length > 64 ? `${v.slice(0, 64)}…` : v}"`;
  return `${typeof v} ${String(v)}`;
}

/** A Kubernetes label selector matches when every pair is present. An empty selector matches all. */
export function selectorMatches(selector: Readonly<Record<string, string>>, labels: Readonly<Record<string, string>>): boolean {
  for (const k in selector) if (labels[k] !== selector[k]) return false;
  return true;
}
