/**
 * Tool definitions: our own declarative form of a tau2 toolkit. A tool has a kind (read/write/think/
 * generic — `write` tools mutate state and are re-executed when a recorded history is replayed), an
 * LLM-facing description, JSON-schema parameters in signature order, and `run`. Env functions (used by
 * `initialization_actions` and `env_assertions`) are plain functions never shown to an LLM.
 *
 * A tool signals a domain error by throwing a plain Error; the environment turns it into an
 * `Error: <message>` tool message. Argument problems are reported the way Python reports a bad call.
 */
import type { FloatRules } from './pyjson.ts'

export type ToolKind = 'read' | 'write' | 'think' | 'generic'

/** A JSON-schema fragment (the subset our tools use). */
export interface JsonSchema {
  type?: 'string' | 'integer' | 'number' | 'boolean' | 'array' | 'object' | 'null'
  description?: string
  enum?: unknown[]
  items?: JsonSchema
  properties?: Record<string, JsonSchema>
  required?: string[]
  anyOf?: JsonSchema[]
  default?: unknown
  additionalProperties?: boolean | JsonSchema
  title?: string
}

export interface ParamSpec {
  schema: JsonSchema
  /** absent = required */
  default?: unknown
  optional?: boolean
}

export type Args = Record<string, unknown>

export interface ToolDef<S> {
  name: string
  kind: ToolKind
  description: string
  params: Record<string, ParamSpec>
  run: (s: S, a: Args) => unknown
}

export type EnvFn<S> = (s: S, a: Args) => unknown

/** A set of tools and env functions over one state (one database). */
export interface Toolkit<S = unknown> {
  state: S
  tools: ReadonlyMap<string, ToolDef<S>>
  envFns: ReadonlyMap<string, EnvFn<S>>
  /** the database to hash and to merge `initialization_data` into */
  db: () => Record<string, unknown>
  /** replace the database (after update_db) */
  setDb: (db: Record<string, unknown>) => void
  floats: FloatRules
}

// --- schema helpers ---------------------------------------------------------------------------------
export const str = (description?: string, extra: JsonSchema = {}): JsonSchema => ({
  type: 'string',
  ...(description ? { description } : {}),
  ...extra,
})
export const int = (description?: string): JsonSchema => ({
  type: 'integer',
  ...(description ? { description } : {}),
})
export const num = (description?: string): JsonSchema => ({
  type: 'number',
  ...(description ? { description } : {}),
})
export const bool = (description?: string): JsonSchema => ({
  type: 'boolean',
  ...(description ? { description } : {}),
})
export const arr = (items: JsonSchema, description?: string): JsonSchema => ({
  type: 'array',
  items,
  ...(description ? { description } : {}),
})
export const obj = (
  properties: Record<string, JsonSchema>,
  required = Object.keys(properties),
  title?: string,
) => ({
  type: 'object' as const,
  properties,
  required,
  ...(title ? { title } : {}),
})
/** a required parameter */
export const p = (schema: JsonSchema): ParamSpec => ({ schema })
/** an optional parameter with a default */
export const opt = (schema: JsonSchema, def: unknown = null): ParamSpec => ({
  schema,
  default: def,
  optional: true,
})

/** The OpenAI function-tool schema of a tool. */
export function openaiSchema(t: ToolDef<unknown>) {
  const properties: Record<string, JsonSchema> = {}
  const required: string[] = []
  for (const [k, spec] of Object.entries(t.params)) {
    properties[k] = spec.optional ? { ...spec.schema, default: spec.default } : spec.schema
    if (!spec.optional) required.push(k)
  }
  return {
    type: 'function' as const,
    function: {
      name: t.name,
      description: t.description,
      parameters: { type: 'object', properties, required, additionalProperties: false },
    },
  }
}
export type OpenAITool = ReturnType<typeof openaiSchema>

function typeOk(v: unknown, s: JsonSchema): boolean {
  if (s.anyOf) return s.anyOf.some((x) => typeOk(v, x))
  if (v === null) return s.type === 'null'
  switch (s.type) {
    case 'string':
      return typeof v === 'string' && (!s.enum || s.enum.includes(v))
    case 'integer':
      return typeof v === 'number' && Number.isInteger(v)
    case 'number':
      return typeof v === 'number' && Number.isFinite(v)
    case 'boolean':
      return typeof v === 'boolean'
    case 'array':
      return Array.isArray(v) && (!s.items || v.every((x) => typeOk(x, s.items as JsonSchema)))
    case 'object': {
      if (typeof v !== 'object' || Array.isArray(v)) return false
      const o = v as Record<string, unknown>
      for (const r of s.required ?? []) if (!(r in o)) return false
      if (s.properties)
        for (const [k, sub] of Object.entries(s.properties)) if (k in o && !typeOk(o[k], sub)) return false
      return true
    }
    default:
      return true
  }
}

/**
 * Check call arguments against a tool's signature and fill defaults; throws with Python-style texts
 * (`f() got an unexpected keyword argument 'x'`, `f() missing 1 required positional argument: 'x'`).
 */
export function bindArgs(t: ToolDef<unknown>, args: unknown): Args {
  if (args === null || args === undefined) args = {}
  if (typeof args !== 'object' || Array.isArray(args))
    throw new Error(`${t.name}() arguments must be an object`)
  const a = args as Args
  for (const k of Object.keys(a))
    if (!Object.hasOwn(t.params, k)) throw new Error(`${t.name}() got an unexpected keyword argument '${k}'`)
  const missing = Object.entries(t.params)
    .filter(([k, s]) => !s.optional && !(k in a))
    .map(([k]) => `'${k}'`)
  if (missing.length)
    throw new Error(
      `${t.name}() missing ${missing.length} required positional argument${missing.length > 1 ? 's' : ''}: ${missing.join(' and ')}`,
    )
  const out: Args = {}
  for (const [k, spec] of Object.entries(t.params)) {
    const v = k in a ? a[k] : structuredClone(spec.default)
    if (k in a && !(spec.optional && v === null) && !typeOk(v, spec.schema))
      throw new Error(
        `${t.name}() argument '${k}': expected ${describeType(spec.schema)}, got ${JSON.stringify(v)}`,
      )
    out[k] = v
  }
  return out
}

function describeType(s: JsonSchema): string {
  if (s.anyOf) return s.anyOf.map(describeType).join(' or ')
  if (s.enum) return `one of ${s.enum.map((x) => JSON.stringify(x)).join(', ')}`
  if (s.type === 'array' && s.items) return `array of ${describeType(s.items)}`
  return s.type ?? 'any'
}

/** Build a name → def map, refusing duplicates. */
export function toolMap<S>(defs: ToolDef<S>[]): Map<string, ToolDef<S>> {
  const m = new Map<string, ToolDef<S>>()
  for (const d of defs) {
    if (m.has(d.name)) throw new Error(`duplicate tool ${d.name}`)
    m.set(d.name, d)
  }
  return m
}

/** addict-style `update`: nested dicts merged, everything else replaced. */
export function deepMerge(
  target: Record<string, unknown>,
  patch: Record<string, unknown>,
): Record<string, unknown> {
  for (const [k, v] of Object.entries(patch)) {
    let cur = target[k]
    // shared (frozen) parts of a copy-on-write database are copied before being merged into
    if (isPlain(v) && isPlain(cur) && Object.isFrozen(cur)) target[k] = cur = structuredClone(cur)
    if (isPlain(v) && isPlain(cur)) deepMerge(cur, v)
    else target[k] = structuredClone(v)
  }
  return target
}

export function isPlain(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** The standard `transfer_to_human_agents` tool (same text in every domain). */
export function transferTool<S>(description: string): ToolDef<S> {
  return {
    name: 'transfer_to_human_agents',
    kind: 'generic',
    description,
    params: { summary: p(str("A summary of the user's issue.")) },
    run: () => 'Transfer successful',
  }
}
