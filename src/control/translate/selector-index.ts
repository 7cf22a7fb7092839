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

/** label key -> label value -> selectors anchored on that pair */
type Anchors<T> = Map<string, Map<string, Entry<T>[]>>;

export class SelectorIndex<T> {
  /**
   * namespace -> anchors. Nested maps rather than one map of joined strings: lookups then use the
   * pod's own label strings (whose hashes the engine has already computed) and build no new ones,
   * which matters at 100k pods x labels x indexes per update.
   */
  readonly #anchored = new Map<string, Anchors<T>>();
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
    let anchors = this.#anchored.get(ns);
    if (!anchors) this.#anchored.set(ns, (anchors = new Map()));
    let byValue = anchors.get(k);
    if (!byValue) anchors.set(k, (byValue = new Map()));
    push(byValue, selector[k] as string, e);
  }

  /** Items whose selector matches, in insertion order. */
  match(namespace: string, labels: Readonly<Record<string, string>>): T[] {
    if (this.#seq === 0) return [];
    const found: Entry<T>[] = [];
    for (const ns of [namespace, ANY_NAMESPACE]) {
      const all = this.#matchAll.get(ns);
      if (all) found.push(...all);
      const anchors = this.#anchored.get(ns);
      if (!anchors) continue;
      for (const k in labels) {
        const list = anchors.get(k)?.get(labels[k] as string);
        if (!list) continue;
        for (const e of list) if (selectorMatches(e.selector, labels)) found.push(e);
      }
    }
    if (found.length > 1) found.sort((a, b) => a.seq - b.seq);
    return found.map((e) => e.item);
  }
}

function push<T>(m: Map<string, T[]>, k: string, v: T): void {
  const l = m.get(k);
  if (l) l.push(v);
  else m.set(k, [v]);
}
