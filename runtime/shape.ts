/**
 * A small runtime shape checker whose schemas also give the TypeScript type (`Infer<typeof s>`), so each
 * message shape is written once. Checks return null when the value fits, else a description naming the
 * path ("body.entries[2].pid: expected integer, got "x""). Built for the bus's hot path: no allocation
 * on success.
 */

export interface Shape<T> {
  (v: unknown, path: string): string | null
  readonly __type?: T
  readonly optional?: boolean
}
export type Infer<S> = S extends Shape<infer T> ? T : never

function show(v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'array'
  if (ArrayBuffer.isView(v)) return v.constructor.name
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)
  if (typeof v === 'object') return 'object'
  return `${typeof v} ${String(v)}`
}

function mk<T>(check: (v: unknown, path: string) => string | null): Shape<T> {
  return check as Shape<T>
}

export const str: Shape<string> = mk((v, p) =>
  typeof v === 'string' ? null : `${p}: expected string, got ${show(v)}`,
)
export const num: Shape<number> = mk((v, p) =>
  typeof v === 'number' && !Number.isNaN(v) ? null : `${p}: expected number, got ${show(v)}`,
)
export const int: Shape<number> = mk((v, p) =>
  Number.isInteger(v) ? null : `${p}: expected integer, got ${show(v)}`,
)
export const bool: Shape<boolean> = mk((v, p) =>
  typeof v === 'boolean' ? null : `${p}: expected boolean, got ${show(v)}`,
)
export const any: Shape<unknown> = mk(() => null)

export function lit<const L extends string | number | boolean>(...values: L[]): Shape<L> {
  return mk((v, p) =>
    (values as unknown[]).includes(v) ? null : `${p}: expected one of ${values.join('|')}, got ${show(v)}`,
  )
}

export function opt<T>(s: Shape<T>): Shape<T | undefined> {
  const f = mk<T | undefined>((v, p) => (v === undefined || v === null ? null : s(v, p)))
  Object.defineProperty(f, 'optional', { value: true })
  return f
}

export function arr<T>(s: Shape<T>): Shape<T[]> {
  return mk((v, p) => {
    if (!Array.isArray(v)) return `${p}: expected array, got ${show(v)}`
    for (let i = 0; i < v.length; i++) {
      const e = s(v[i], `${p}[${i}]`)
      if (e) return e
    }
    return null
  })
}

export function rec<T>(s: Shape<T>): Shape<Record<string, T>> {
  return mk((v, p) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v))
      return `${p}: expected object, got ${show(v)}`
    for (const k in v) {
      const e = s((v as Record<string, unknown>)[k], `${p}.${k}`)
      if (e) return e
    }
    return null
  })
}

type TypedCtor<T> = { new (n: number): T; name: string }
export function typed<T extends ArrayBufferView>(ctor: TypedCtor<T>): Shape<T> {
  return mk((v, p) => (v instanceof ctor ? null : `${p}: expected ${ctor.name}, got ${show(v)}`))
}

type Fields = Record<string, Shape<unknown>>
type OptKeys<F extends Fields> = { [K in keyof F]: undefined extends Infer<F[K]> ? K : never }[keyof F]
type ReqKeys<F extends Fields> = Exclude<keyof F, OptKeys<F>>
export type ObjOf<F extends Fields> = { [K in ReqKeys<F>]: Infer<F[K]> } & { [K in OptKeys<F>]?: Infer<F[K]> }

/** An object with exactly these fields (extra fields are rejected: the protocol has no silent fields). */
export function obj<F extends Fields>(fields: F): Shape<{ [K in keyof ObjOf<F>]: ObjOf<F>[K] }> {
  const keys = Object.keys(fields)
  return mk((v, p) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v) || ArrayBuffer.isView(v))
      return `${p}: expected object, got ${show(v)}`
    const o = v as Record<string, unknown>
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i]
      const e = fields[k](o[k], `${p}.${k}`)
      if (e) return e
    }
    for (const k in o) if (!Object.hasOwn(fields, k)) return `${p}: unexpected field "${k}"`
    return null
  })
}

/** An object with some known fields checked and any others allowed (for open-ended payloads). */
export function open<F extends Fields>(
  fields: F,
): Shape<{ [K in keyof ObjOf<F>]: ObjOf<F>[K] } & Record<string, unknown>> {
  const keys = Object.keys(fields)
  return mk((v, p) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v))
      return `${p}: expected object, got ${show(v)}`
    for (const k of keys) {
      const e = fields[k]((v as Record<string, unknown>)[k], `${p}.${k}`)
      if (e) return e
    }
    return null
  })
}
