/**
 * Find the selector-carrying objects (Services, selector policies) that match a pod's labels
 * without testing every selector of the namespace against every pod. Each selector is filed under
 * one of its own `key=value` pairs (its anchor); a pod only looks at the selectors anchored on one
 * of its labels, then checks the rest. With n pods and selectors that are mostly distinct this is
 * O(pods x labels per pod) instead of O(pods x selectors).
 */
import { selectorMatches } from './check.js';

interface Entry<T> {
  readonly selector: Readonly<Record<string, string>>;
  readonly item: T;
  /** insertion order, so results come back in a stable order */
  readonly seq: number;
}

const ANY_NAMESPACE = '\u0000*';

export class SelectorIndex<T> {
  readonly #anchored = new Map<string, Entry<T>[]>();
  /** empty selectors: match every pod of the namespace */
  readonly #matchAll = new Map<string, Entry<T>[]>();
  #seq = 0;

  /**
   * @param namespace the namespace whose pods the selector applies to; undefined for every namespace
   * @param selector matchLabels; `{}` matches every pod in scope
   */
  add(namespace: string | undefined, selector: Readonly<Record<string, string>>, item: T): void {
    const ns = namespace ?? ANY_NAMESPACE;
    const e: Entry<T> = { selector, item, seq: this.#seq++ };
    const keys = Object.keys(selector);
    if (keys.length === 0) {
      push(this.#matchAll, ns, e);
      return;
    }
    // any pair works as the anchor; the first keeps this deterministic
    const k = keys[0] as string;
    push(this.#anchored, anchorKey(ns, k, selector[k] as string), e);
  }

  /** Items whose selector matches, in insertion order. */
  match(namespace: string, labels: Readonly<Record<string, string>>): T[] {
    const found: Entry<T>[] = [];
    for (const ns of [namespace, ANY_NAMESPACE]) {
      const all = this.#matchAll.get(ns);
      if (all) found.push(...all);
      for (const k in labels) {
        const list = this.#anchored.get(anchorKey(ns, k, labels[k] as string));
        if (!list) continue;
        for (const e of list) if (selectorMatches(e.selector, labels)) found.push(e);
      }
    }
    if (found.length > 1) found.sort((a, b) => a.seq - b.seq);
    return found.map((e) => e.item);
  }
}

function anchorKey(ns: string, k: string, v: string): string {
  return `${ns}\u0000${k}\u0000${v}`;
}

function push<T>(m: Map<string, T[]>, k: string, v: T): void {
  const l = m.get(k);
  if (l) l.push(v);
  else m.set(k, [v]);
}
