/**
 * The `econfig` section: what a tau2 episode runs against. Self-contained so the launcher's config
 * loader can mount it; `validate` names the key path of every problem (`econfig.max_steps: …`).
 */
import { fail } from '../../../runtime/errors.ts'

/** `home` is the project-owned quick-start domain (data in configs/domains). */
export type Tau2Domain = 'airline' | 'retail' | 'telecom' | 'mock' | 'home'
export const DOMAINS: readonly Tau2Domain[] = ['airline', 'retail', 'telecom', 'mock', 'home']

export interface Tau2Config {
  /** which domain's tools, database, policy and tasks */
  domain: Tau2Domain
  /** task split from `split_tasks.json` (`train`, `test`, `base`, …); `all` = every task in tasks.json */
  split: string
  /** data directory; empty = env `TAU2_DATA_DIR` (layout `<dir>/<domain>/` or `<dir>/domains/<domain>/`) */
  data_dir: string
  /** step budget of one episode (one hop agent/user/env = one step) */
  max_steps: number
  /** episode ends once this many tool calls have failed */
  max_errors: number
  /** agent alone with agent+user tools, working from the ticket (telecom, mock) */
  solo_mode: boolean
  /** OpenAI-compatible base URL of the user simulator */
  user_llm_base_url: string
  /** model name for the user simulator */
  user_llm: string
  /** API key for the user simulator endpoint (empty = `USER_LLM_API_KEY` env, else a placeholder) */
  user_llm_api_key: string
  /** extra request fields for the user simulator (temperature, max_tokens, …) */
  user_llm_args: Record<string, unknown>
  /** OpenAI-compatible base URL of the NL-assertion judge; empty = NL assertions not evaluated */
  judge_llm_base_url: string
  judge_llm: string
  judge_llm_api_key: string
  judge_llm_args: Record<string, unknown>
  /** extra request fields for the agent's chat completions (temperature, max_tokens, …) */
  agent_llm_args: Record<string, unknown>
  /** γ for discounting the episode reward backwards over turns (used by the proxy export) */
  turn_discount: number
  /** wall-clock limit of one episode in seconds (0 = none) */
  timeout_s: number
  /** environment worker threads (0 = run environment steps on the calling thread) */
  env_workers: number
}

export const defaults: Tau2Config = {
  domain: 'airline',
  split: 'train',
  data_dir: '',
  max_steps: 200,
  max_errors: 10,
  solo_mode: false,
  user_llm_base_url: '',
  user_llm: 'gpt-4.1-2025-04-14',
  user_llm_api_key: '',
  user_llm_args: { temperature: 0 },
  judge_llm_base_url: '',
  judge_llm: 'gpt-4.1-2025-04-14',
  judge_llm_api_key: '',
  judge_llm_args: { temperature: 0 },
  agent_llm_args: {},
  turn_discount: 1,
  timeout_s: 0,
  env_workers: 2,
}

type Kind = 'string' | 'domain' | 'posint' | 'nonnegint' | 'bool' | 'object' | 'unit' | 'nonneg'
const schema: Record<keyof Tau2Config, Kind> = {
  domain: 'domain',
  split: 'string',
  data_dir: 'string',
  max_steps: 'posint',
  max_errors: 'posint',
  solo_mode: 'bool',
  user_llm_base_url: 'string',
  user_llm: 'string',
  user_llm_api_key: 'string',
  user_llm_args: 'object',
  judge_llm_base_url: 'string',
  judge_llm: 'string',
  judge_llm_api_key: 'string',
  judge_llm_args: 'object',
  agent_llm_args: 'object',
  turn_discount: 'unit',
  timeout_s: 'nonneg',
  env_workers: 'nonnegint',
}

const show = (v: unknown) => (typeof v === 'string' ? JSON.stringify(v) : String(JSON.stringify(v) ?? v))

/**
 * Check a raw `econfig` object (from YAML plus overrides) and fill defaults.
 * Throws CFG_ERR_UNKNOWN_KEY / CFG_ERR_TYPE / CFG_ERR_VALUE naming `<prefix>.<key>`.
 */
export function validate(raw: unknown, prefix = 'econfig'): Tau2Config {
  if (raw === undefined || raw === null) return structuredClone(defaults)
  if (typeof raw !== 'object' || Array.isArray(raw))
    throw fail('CFG_ERR_TYPE', `${prefix}: expected a mapping, got ${show(raw)}`, { key: prefix })
  const out = structuredClone(defaults) as unknown as Record<string, unknown>
  for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
    const path = `${prefix}.${key}`
    const kind = (schema as Record<string, Kind>)[key]
    if (!kind)
      throw fail(
        'CFG_ERR_UNKNOWN_KEY',
        `${path}: not a tau2 setting (known: ${Object.keys(schema).join(', ')})`,
        {
          key: path,
        },
      )
    const bad = (want: string, code: 'CFG_ERR_TYPE' | 'CFG_ERR_VALUE' = 'CFG_ERR_TYPE') =>
      fail(code, `${path}: expected ${want}, got ${show(value)}`, { key: path })
    switch (kind) {
      case 'string':
        if (typeof value !== 'string') throw bad('string')
        break
      case 'domain':
        if (typeof value !== 'string') throw bad('string')
        if (!DOMAINS.includes(value as Tau2Domain)) throw bad(`one of ${DOMAINS.join(', ')}`, 'CFG_ERR_VALUE')
        break
      case 'posint':
        if (typeof value !== 'number' || !Number.isInteger(value)) throw bad('positive integer')
        if (value <= 0) throw bad('positive integer', 'CFG_ERR_VALUE')
        break
      case 'nonnegint':
        if (typeof value !== 'number' || !Number.isInteger(value)) throw bad('non-negative integer')
        if (value < 0) throw bad('non-negative integer', 'CFG_ERR_VALUE')
        break
      case 'nonneg':
        if (typeof value !== 'number' || !Number.isFinite(value)) throw bad('non-negative number')
        if (value < 0) throw bad('non-negative number', 'CFG_ERR_VALUE')
        break
      case 'unit':
        if (typeof value !== 'number' || !Number.isFinite(value)) throw bad('number in (0, 1]')
        if (value <= 0 || value > 1) throw bad('number in (0, 1]', 'CFG_ERR_VALUE')
        break
      case 'bool':
        if (typeof value !== 'boolean') throw bad('boolean')
        break
      case 'object':
        if (typeof value !== 'object' || value === null || Array.isArray(value)) throw bad('mapping')
        break
    }
    out[key] = value
  }
  const cfg = out as unknown as Tau2Config
  if (cfg.solo_mode && (cfg.domain === 'airline' || cfg.domain === 'retail'))
    throw fail(
      'CFG_ERR_VALUE',
      `${prefix}.solo_mode: domain ${cfg.domain} has no solo mode (telecom, mock only)`,
      {
        key: `${prefix}.solo_mode`,
      },
    )
  return cfg
}

/** The data directory this config points at: `data_dir`, else env `TAU2_DATA_DIR`. */
export function dataDirOf(cfg: Pick<Tau2Config, 'data_dir'>): string {
  const dir = cfg.data_dir || process.env.TAU2_DATA_DIR || ''
  if (!dir) throw fail('ENV_ERR_DATA_DIR', 'econfig.data_dir is empty and TAU2_DATA_DIR is not set')
  return dir
}
