/**
 * Configuration: YAML files plus dotted command-line overrides, over defaults owned by each component.
 *
 *   final = defaults (from the schema) ← YAML file ← overrides (`rollout.n=4 econfig.domain=telecom`)
 *
 * Each component owns a section schema built with the helpers below (`c.int(8, { min: 1 })`, …); the
 * schema gives defaults, validation and the TypeScript type (`ConfigOf<typeof schema>`). Validation
 * errors are coded (CFG_ERR_*) and name the key path, the value given and what was expected. Unknown
 * keys are errors. Override values are typed by the schema at their path: `rollout.n=4` is an integer,
 * `x.flag=true` a boolean, `x.list=[a,b]` (or `a,b`) a list.
 *
 * A section owned elsewhere with its own validator (e.g. tau2's econfig) mounts with `c.custom`.
 */
import { readFileSync } from 'node:fs'
import { parse as parseYaml } from 'yaml'
import { fail } from './errors.ts'

interface Base<T> {
  readonly __t?: T
  doc?: string
}
export interface IntNode extends Base<number> {
  kind: 'int'
  def?: number
  min?: number
  max?: number
}
export interface NumNode extends Base<number> {
  kind: 'num'
  def?: number
  min?: number
  max?: number
}
export interface StrNode extends Base<string> {
  kind: 'str'
  def?: string
}
export interface BoolNode extends Base<boolean> {
  kind: 'bool'
  def?: boolean
}
export interface EnumNode<E extends string = string> extends Base<E> {
  kind: 'enum'
  values: readonly E[]
  def?: E
}
export interface ListNode<T = unknown> extends Base<T[]> {
  kind: 'list'
  item: Node
  def?: T[]
}
export interface ObjNode<T = unknown> extends Base<T> {
  kind: 'obj'
  fields: Record<string, Node>
}
export interface MapNode<T = unknown> extends Base<Record<string, T>> {
  kind: 'map'
  value: Node
  def?: Record<string, T>
}
export interface CustomNode<T = unknown> extends Base<T> {
  kind: 'custom'
  /** defaults, validated by `validate` too */
  def: unknown
  /** turn the merged raw value into the section's config; throw coded errors naming `path` */
  validate: (raw: unknown, path: string) => T
}
export interface OptNode<T = unknown> extends Base<T | undefined> {
  kind: 'opt'
  inner: Node
}
export type Node =
  | IntNode
  | NumNode
  | StrNode
  | BoolNode
  | EnumNode
  | ListNode
  | ObjNode
  | MapNode
  | CustomNode
  | OptNode

export type ConfigOf<N> = N extends Base<infer T> ? T : never

type ObjOf<F extends Record<string, Node>> = { [K in keyof F]: ConfigOf<F[K]> }

/** Schema builders. A node without a default is required. */
export const c = {
  int: (def?: number, o: { min?: number; max?: number; doc?: string } = {}): IntNode => ({
    kind: 'int',
    def,
    ...o,
  }),
  num: (def?: number, o: { min?: number; max?: number; doc?: string } = {}): NumNode => ({
    kind: 'num',
    def,
    ...o,
  }),
  str: (def?: string, o: { doc?: string } = {}): StrNode => ({ kind: 'str', def, ...o }),
  bool: (def?: boolean, o: { doc?: string } = {}): BoolNode => ({ kind: 'bool', def, ...o }),
  enum: <const E extends string>(values: readonly E[], def?: E, o: { doc?: string } = {}): EnumNode<E> => ({
    kind: 'enum',
    values,
    def,
    ...o,
  }),
  list: <N extends Node>(item: N, def?: ConfigOf<N>[], o: { doc?: string } = {}): ListNode<ConfigOf<N>> => ({
    kind: 'list',
    item,
    def,
    ...o,
  }),
  obj: <F extends Record<string, Node>>(fields: F, o: { doc?: string } = {}): ObjNode<ObjOf<F>> => ({
    kind: 'obj',
    fields,
    ...o,
  }),
  map: <N extends Node>(
    value: N,
    def?: Record<string, ConfigOf<N>>,
    o: { doc?: string } = {},
  ): MapNode<ConfigOf<N>> => ({
    kind: 'map',
    value,
    def,
    ...o,
  }),
  opt: <N extends Node>(inner: N, o: { doc?: string } = {}): OptNode<ConfigOf<N>> => ({
    kind: 'opt',
    inner,
    ...o,
  }),
  custom: <T>(
    def: unknown,
    validate: (raw: unknown, path: string) => T,
    o: { doc?: string } = {},
  ): CustomNode<T> => ({
    kind: 'custom',
    def,
    validate,
    ...o,
  }),
}

function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v)
  if (v === undefined) return 'nothing'
  try {
    return JSON.stringify(v)
  } catch {
    return String(v)
  }
}

function isPlain(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function expected(n: Node): string {
  switch (n.kind) {
    case 'int':
    case 'num': {
      const what = n.kind === 'int' ? 'integer' : 'number'
      if (n.min !== undefined && n.max !== undefined) return `${what} in [${n.min}, ${n.max}]`
      if (n.min !== undefined) return `${what} ≥ ${n.min}`
      if (n.max !== undefined) return `${what} ≤ ${n.max}`
      return what
    }
    case 'str':
      return 'string'
    case 'bool':
      return 'boolean (true|false)'
    case 'enum':
      return `one of ${n.values.join('|')}`
    case 'list':
      return `list of ${expected(n.item)}`
    case 'obj':
    case 'map':
    case 'custom':
      return 'mapping'
    case 'opt':
      return `${expected(n.inner)} or null`
  }
}

function typeErr(path: string, v: unknown, n: Node, src: string): Error {
  return fail('CFG_ERR_TYPE', `${path}: expected ${expected(n)}, got ${show(v)}${src}`, { path, value: v })
}

/** Validate `raw` (merged defaults + file + overrides) against `n`; `src` says where values came from. */
function check(n: Node, raw: unknown, path: string, src: (p: string) => string): unknown {
  if (n.kind === 'opt') return raw === undefined || raw === null ? undefined : check(n.inner, raw, path, src)
  if (n.kind === 'custom') return n.validate(raw === undefined ? n.def : raw, path)
  if (raw === undefined || raw === null) {
    if (n.kind === 'obj') return check(n, {}, path, src)
    throw fail('CFG_ERR_MISSING', `${path}: expected ${expected(n)}`, { path })
  }
  switch (n.kind) {
    case 'int':
    case 'num': {
      if (typeof raw !== 'number' || Number.isNaN(raw) || (n.kind === 'int' && !Number.isInteger(raw)))
        throw typeErr(path, raw, n, src(path))
      if ((n.min !== undefined && raw < n.min) || (n.max !== undefined && raw > n.max))
        throw fail('CFG_ERR_VALUE', `${path}: expected ${expected(n)}, got ${raw}${src(path)}`, {
          path,
          value: raw,
        })
      return raw
    }
    case 'str':
      if (typeof raw !== 'string') throw typeErr(path, raw, n, src(path))
      return raw
    case 'bool':
      if (typeof raw !== 'boolean') throw typeErr(path, raw, n, src(path))
      return raw
    case 'enum':
      if (!n.values.includes(raw as string))
        throw fail('CFG_ERR_VALUE', `${path}: expected ${expected(n)}, got ${show(raw)}${src(path)}`, {
          path,
          value: raw,
        })
      return raw
    case 'list':
      if (!Array.isArray(raw)) throw typeErr(path, raw, n, src(path))
      return raw.map((x, i) => check(n.item, x, `${path}[${i}]`, src))
    case 'map': {
      if (!isPlain(raw)) throw typeErr(path, raw, n, src(path))
      const out: Record<string, unknown> = {}
      for (const [k, v] of Object.entries(raw)) out[k] = check(n.value, v, `${path}.${k}`, src)
      return out
    }
    case 'obj': {
      if (!isPlain(raw)) throw typeErr(path, raw, n, src(path))
      for (const k of Object.keys(raw))
        if (!Object.hasOwn(n.fields, k)) {
          const near = Object.keys(n.fields).filter((f) => f.startsWith(k.slice(0, 3)))
          throw fail(
            'CFG_ERR_UNKNOWN_KEY',
            `${path ? `${path}.` : ''}${k}${src(path ? `${path}.${k}` : k)}${near.length ? ` (did you mean ${near.join(', ')}?)` : ''}`,
            { path: path ? `${path}.${k}` : k },
          )
        }
      const out: Record<string, unknown> = {}
      for (const [k, f] of Object.entries(n.fields)) out[k] = check(f, raw[k], path ? `${path}.${k}` : k, src)
      return out
    }
  }
}

/** The defaults of a schema as a plain object (what a YAML file is merged over). */
export function defaultsOf(n: Node): unknown {
  switch (n.kind) {
    case 'obj': {
      const out: Record<string, unknown> = {}
      for (const [k, f] of Object.entries(n.fields)) {
        const d = defaultsOf(f)
        if (d !== undefined) out[k] = d
      }
      return out
    }
    case 'opt':
      return undefined
    case 'custom':
      return structuredClone(n.def)
    default:
      return n.def === undefined ? undefined : structuredClone(n.def)
  }
}

function mergeInto(dst: Record<string, unknown>, src: Record<string, unknown>): void {
  for (const [k, v] of Object.entries(src)) {
    if (isPlain(v) && isPlain(dst[k])) mergeInto(dst[k] as Record<string, unknown>, v)
    else dst[k] = v
  }
}

/** The schema node at a dotted path, or undefined when the path leaves the schema (or enters a custom section). */
function nodeAt(n: Node, path: string[]): Node | undefined {
  let cur: Node | undefined = n
  for (const k of path) {
    if (!cur) return undefined
    if (cur.kind === 'opt') cur = cur.inner
    if (cur.kind === 'obj') cur = cur.fields[k]
    else if (cur.kind === 'map') cur = cur.value
    else return undefined
  }
  return cur?.kind === 'opt' ? cur.inner : cur
}

/** Type an override's text by the schema node at its path. */
export function coerce(text: string, node: Node | undefined, key: string): unknown {
  const bad = (what: string) =>
    fail(
      'CFG_ERR_TYPE',
      `${key}: expected ${what}, got ${JSON.stringify(text)} (from override ${key}=${text})`,
      { path: key, value: text },
    )
  if (text === 'null' || text === '~') return null
  switch (node?.kind) {
    case 'int': {
      if (!/^[-+]?\d+$/.test(text.replace(/_/g, ''))) throw bad(expected(node))
      return Number(text.replace(/_/g, ''))
    }
    case 'num': {
      const v = Number(text)
      if (text.trim() === '' || Number.isNaN(v)) throw bad(expected(node))
      return v
    }
    case 'str':
    case 'enum':
      return text
    case 'bool': {
      const t = text.toLowerCase()
      if (['true', 'yes', 'on', '1'].includes(t)) return true
      if (['false', 'no', 'off', '0'].includes(t)) return false
      throw bad(expected(node))
    }
    case 'list': {
      const inner = text.trim().startsWith('[') ? text.trim().slice(1, -1) : text
      const parts = inner.trim() === '' ? [] : inner.split(',').map((s) => s.trim())
      return parts.map((p) => coerce(p, node.item, key))
    }
    default: {
      // a mapping, a custom section or a key the schema does not know: read it as a YAML value
      try {
        return parseYaml(text)
      } catch {
        return text
      }
    }
  }
}

export interface Override {
  key: string
  path: string[]
  text: string
}

export function parseOverride(arg: string): Override {
  const eq = arg.indexOf('=')
  const key = eq > 0 ? arg.slice(0, eq).trim() : ''
  if (!key || !/^[A-Za-z_][\w-]*(\.[\w-]+)*$/.test(key))
    throw fail('CFG_ERR_OVERRIDE', `${JSON.stringify(arg)}: expected key.path=value`, { arg })
  return { key, path: key.split('.'), text: arg.slice(eq + 1) }
}

export interface LoadOptions {
  /** YAML file path */
  file?: string
  /** already-parsed YAML (tests) */
  raw?: Record<string, unknown>
  /** key.path=value strings */
  overrides?: string[]
}

/** Build a validated config: defaults ← file ← overrides. Throws CFG_ERR_* naming key, value, expectation. */
export function loadConfig<N extends ObjNode>(schema: N, opts: LoadOptions = {}): ConfigOf<N> {
  const merged = defaultsOf(schema) as Record<string, unknown>
  const origin = new Map<string, string>()
  let fileRaw = opts.raw
  if (opts.file) {
    let text: string
    try {
      text = readFileSync(opts.file, 'utf8')
    } catch (e) {
      throw fail('CFG_ERR_FILE', `${opts.file}: ${(e as Error).message}`, { file: opts.file })
    }
    try {
      fileRaw = (parseYaml(text) ?? {}) as Record<string, unknown>
    } catch (e) {
      throw fail('CFG_ERR_FILE', `${opts.file}: ${(e as Error).message}`, { file: opts.file })
    }
    if (!isPlain(fileRaw))
      throw fail('CFG_ERR_FILE', `${opts.file}: top level must be a mapping`, { file: opts.file })
  }
  if (fileRaw) mergeInto(merged, structuredClone(fileRaw))
  for (const arg of opts.overrides ?? []) {
    const o = parseOverride(arg)
    const value = coerce(o.text, nodeAt(schema, o.path), o.key)
    let cur = merged
    for (const k of o.path.slice(0, -1)) {
      if (!isPlain(cur[k])) cur[k] = {}
      cur = cur[k] as Record<string, unknown>
    }
    cur[o.path[o.path.length - 1]] = value
    origin.set(o.key, ` (from override ${arg})`)
  }
  const src = (p: string) => {
    for (const [k, v] of origin) if (k === p || k.startsWith(`${p}.`)) return v
    return opts.file ? ` (in ${opts.file})` : ''
  }
  return check(schema, merged, '', src) as ConfigOf<N>
}

/** Render the schema as rows of (key, default, expected, doc) for documentation. */
export function describeSchema(
  n: Node,
  path = '',
): { key: string; def: string; type: string; doc: string }[] {
  if (n.kind === 'obj') {
    const rows = []
    for (const [k, f] of Object.entries(n.fields)) rows.push(...describeSchema(f, path ? `${path}.${k}` : k))
    return rows
  }
  const d = defaultsOf(n)
  return [
    {
      key: path,
      def: d === undefined ? '(required)' : JSON.stringify(d),
      type: expected(n),
      doc: n.doc ?? '',
    },
  ]
}
