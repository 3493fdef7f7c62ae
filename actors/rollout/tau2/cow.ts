/**
 * Copy-on-write databases. A domain's pristine database is parsed once per thread and deep-frozen;
 * each environment gets shallow copies of the tables (id → entity maps or lists) sharing the frozen
 * entities, and takes its own copy of an entity the first time it touches it (`own`). Building an
 * environment is then O(#entities) pointer copies instead of a deep clone of megabytes, and DB hashes
 * reuse the cached canonical text of every untouched entity (pyjson.ts).
 *
 * NOTE: tools must fetch any entity they mutate through `own`; mutating a shared entity throws
 * (frozen, strict mode), which surfaces as a tool error and fails the gold-replay tests.
 */

export function deepFreeze<T>(v: T): T {
  if (v && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v)
    for (const x of Object.values(v as object)) deepFreeze(x)
  }
  return v
}

/** A mutable copy of `db` whose tables are shallow copies sharing frozen entities. */
export function cowTables<T extends Record<string, any>>(db: T): T {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(db))
    out[k] = Array.isArray(v) ? [...v] : v && typeof v === 'object' ? { ...v } : v
  return out as T
}

/** The environment's own (mutable) copy of `table[key]`, cloned on first touch. */
export function own<E>(table: Record<string | number, E>, key: string | number): E {
  const e = table[key]
  if (e && typeof e === 'object' && Object.isFrozen(e)) table[key] = structuredClone(e)
  return table[key]
}

/** Memoise per pristine database: normalise once, then freeze. */
export function preparer(normalize: (db: Record<string, unknown>) => Record<string, unknown>) {
  const cache = new WeakMap<object, Record<string, unknown>>()
  return (raw: Record<string, unknown>): Record<string, unknown> => {
    let p = cache.get(raw)
    if (!p) {
      p = deepFreeze(normalize(structuredClone(raw)))
      cache.set(raw, p)
    }
    return p
  }
}
