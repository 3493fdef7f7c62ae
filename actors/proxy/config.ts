/**
 * The proxy's config (`proxy:` in configs/*.yaml): its type, defaults and `validate(raw)`, which rejects
 * unknown keys and wrong types with coded errors naming the key path (`proxy.engines[1].url`).
 */
import { fail } from '../../runtime/errors.ts'

export type EngineKind = 'sglang' | 'vllm' | 'embedded'

export interface EngineConfig {
  kind: EngineKind
  /** base URL of an SGLang / vLLM server (http://host:port) */
  url?: string
  /** actor id of an embedded engine on the bus */
  actor?: string
  /** per-request timeout towards this engine */
  timeout_ms?: number
  /** vLLM only: endpoint that loads weights from disk (vLLM has none upstream; AReaL-style extensions do) */
  update_path?: string
}

export interface ProxyConfig {
  /** interface to listen on */
  host: string
  /** port (0 = ephemeral) */
  port: number
  /** URL agents use to reach this proxy; '' = http://host:port as bound */
  public_url: string
  /** model directory holding tokenizer.json + tokenizer_config.json ('' in a run config: engine.model.path) */
  model_dir: string
  /** model id reported by GET /v1/models and in replies */
  model_name: string
  /** prompt + output tokens allowed per completion */
  context_length: number
  /** output tokens when the request does not say */
  max_new_tokens: number
  /** open sessions allowed at once (beyond: 429) */
  max_sessions: number
  /** completions in flight at once (beyond: 429) */
  max_inflight: number
  /** largest accepted request body */
  body_limit_bytes: number
  /** default engine request timeout */
  request_timeout_ms: number
  /** build prompts incrementally (token-in-token-out); false = full re-render every turn */
  incremental: boolean
  tool_parser: 'qwen' | 'none'
  reasoning_parser: 'qwen3' | 'none'
  /** an engine that failed to connect is skipped this long before being tried again */
  engine_retry_ms: number
  /** sessions idle this long (agent gone, never ended) are dropped; 0 = never */
  session_idle_ms: number
  /** exported trajectories nobody fetched or released are freed after this long; 0 = never */
  trajectory_ttl_ms: number
  export: { style: 'individual' | 'concat'; turn_discount: number }
  engines: EngineConfig[]
}

export const defaults: ProxyConfig = {
  host: '127.0.0.1',
  port: 0,
  public_url: '',
  model_dir: '',
  model_name: 'policy',
  context_length: 32768,
  max_new_tokens: 1024,
  max_sessions: 1024,
  max_inflight: 1024,
  body_limit_bytes: 16 * 1024 * 1024,
  request_timeout_ms: 600_000,
  incremental: true,
  tool_parser: 'qwen',
  reasoning_parser: 'qwen3',
  engine_retry_ms: 2000,
  session_idle_ms: 3_600_000,
  trajectory_ttl_ms: 3_600_000,
  export: { style: 'individual', turn_discount: 1 },
  engines: [],
}

type Check = (v: unknown, path: string) => unknown

const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v)

function typeErr(path: string, want: string, v: unknown): never {
  throw fail('CFG_ERR_TYPE', `${path}: expected ${want}, got ${JSON.stringify(v)}`, { key: path })
}

const str: Check = (v, p) => (typeof v === 'string' ? v : typeErr(p, 'string', v))
const bool: Check = (v, p) => (typeof v === 'boolean' ? v : typeErr(p, 'boolean', v))
const int =
  (min: number, max = Number.MAX_SAFE_INTEGER): Check =>
  (v, p) => {
    if (typeof v !== 'number' || !Number.isInteger(v)) typeErr(p, 'integer', v)
    if ((v as number) < min || (v as number) > max) {
      throw fail('CFG_ERR_VALUE', `${p}: ${v} is outside [${min}, ${max}]`, { key: p })
    }
    return v
  }
const num =
  (min: number, max: number): Check =>
  (v, p) => {
    if (typeof v !== 'number' || !Number.isFinite(v)) typeErr(p, 'number', v)
    if ((v as number) < min || (v as number) > max) {
      throw fail('CFG_ERR_VALUE', `${p}: ${v} is outside [${min}, ${max}]`, { key: p })
    }
    return v
  }
const oneOf =
  (...allowed: string[]): Check =>
  (v, p) => {
    if (typeof v !== 'string') typeErr(p, allowed.join(' | '), v)
    if (!allowed.includes(v as string)) {
      throw fail('CFG_ERR_VALUE', `${p}: ${JSON.stringify(v)} is not one of ${allowed.join(', ')}`, {
        key: p,
      })
    }
    return v
  }

function object(
  fields: Record<string, Check>,
  base: Record<string, unknown>,
  required: string[] = [],
): Check {
  return (v, p) => {
    if (!isObj(v)) typeErr(p, 'object', v)
    const raw = v as Record<string, unknown>
    for (const k of Object.keys(raw)) {
      if (!Object.hasOwn(fields, k)) throw fail('CFG_ERR_UNKNOWN_KEY', `${p}.${k}`, { key: `${p}.${k}` })
    }
    const out: Record<string, unknown> = { ...base }
    for (const [k, check] of Object.entries(fields)) {
      if (raw[k] === undefined) {
        if (required.includes(k)) throw fail('CFG_ERR_MISSING', `${p}.${k}`, { key: `${p}.${k}` })
        continue
      }
      out[k] = check(raw[k], `${p}.${k}`)
    }
    return out
  }
}

const engine: Check = (v, p) => {
  const e = object(
    {
      kind: oneOf('sglang', 'vllm', 'embedded'),
      url: str,
      actor: str,
      timeout_ms: int(1),
      update_path: str,
    },
    {},
    ['kind'],
  )(v, p) as unknown as EngineConfig
  if (e.kind === 'embedded' && !e.actor)
    throw fail('CFG_ERR_MISSING', `${p}.actor (embedded engines name an actor)`, { key: `${p}.actor` })
  if (e.kind !== 'embedded') {
    if (!e.url)
      throw fail('CFG_ERR_MISSING', `${p}.url (${e.kind} engines need a base URL)`, { key: `${p}.url` })
    // the engine clients (engines/wire.ts, node:http for streams) speak plain HTTP, no TLS
    if (!/^http:\/\/[^/]+/.test(e.url)) {
      throw fail(
        'CFG_ERR_VALUE',
        `${p}.url: ${JSON.stringify(e.url)} is not an http:// URL (no TLS to engines)`,
        {
          key: `${p}.url`,
        },
      )
    }
    e.url = e.url.replace(/\/+$/, '')
  }
  return e
}

const schema = object(
  {
    host: str,
    port: int(0, 65535),
    public_url: str,
    model_dir: str,
    model_name: str,
    context_length: int(16),
    max_new_tokens: int(1),
    max_sessions: int(1),
    max_inflight: int(1),
    body_limit_bytes: int(1024),
    request_timeout_ms: int(1),
    incremental: bool,
    tool_parser: oneOf('qwen', 'none'),
    reasoning_parser: oneOf('qwen3', 'none'),
    engine_retry_ms: int(0),
    session_idle_ms: int(0),
    trajectory_ttl_ms: int(0),
    export: object(
      { style: oneOf('individual', 'concat'), turn_discount: num(0, 1) },
      defaults.export as unknown as Record<string, unknown>,
    ),
    engines: (v, p) => (Array.isArray(v) ? v.map((e, i) => engine(e, `${p}[${i}]`)) : typeErr(p, 'array', v)),
  },
  defaults as unknown as Record<string, unknown>,
)

/**
 * Check a raw `proxy:` section and fill in defaults. `path` is the key path of the section in the
 * YAML (for error messages). Throws CFG_ERR_UNKNOWN_KEY / CFG_ERR_TYPE / CFG_ERR_MISSING / CFG_ERR_VALUE.
 */
export function validate(raw: unknown, path = 'proxy'): ProxyConfig {
  const cfg = schema(raw ?? {}, path) as ProxyConfig
  if (cfg.max_new_tokens >= cfg.context_length) {
    throw fail('CFG_ERR_VALUE', `${path}.max_new_tokens must be below ${path}.context_length`, {
      key: `${path}.max_new_tokens`,
    })
  }
  return cfg
}
