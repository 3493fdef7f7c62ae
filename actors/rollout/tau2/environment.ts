/**
 * The tau2 environment: one domain instance (agent toolkit, optional user toolkit, sync) plus the
 * mechanics of SPEC §3 — tool call → tool message (errors become `Error: …`), requestor routing and
 * solo mode, task initialisation (`set_state`), env-function calls and assertions, canonical DB hashes.
 * Pure and synchronous: it runs inside a piscina worker (see worker.ts) or, for tests, in-thread.
 */
import { fail } from '../../../runtime/errors.ts'
import type { DomainData } from './data.ts'
import { type DomainInstance, domainModule } from './domains/index.ts'
import { dbHash, toolResultText } from './pyjson.ts'
import { bindArgs, deepMerge, type OpenAITool, openaiSchema, type Toolkit } from './tools.ts'
import type {
  EnvAssertion,
  EnvFunctionCall,
  InitialState,
  Message,
  Requestor,
  ToolCall,
  ToolMessage,
} from './types.ts'

export interface EnvOptions {
  solo?: boolean
}

export class Environment {
  readonly domain: DomainInstance
  readonly solo: boolean
  readonly policy: string

  constructor(
    readonly data: DomainData,
    opts: EnvOptions = {},
  ) {
    const mod = domainModule(data.domain)
    this.solo = opts.solo ?? false
    if (this.solo && !mod.soloSupported)
      throw fail('ENV_ERR_SOLO_UNSUPPORTED', data.domain, { domain: data.domain })
    this.domain = mod.create(data, { solo: this.solo })
    this.policy = this.solo ? (data.policySolo ?? data.policy) : data.policy
    if (this.solo && this.domain.user) {
      const overlap = [...this.domain.user.tools.keys()].filter((n) => this.domain.agent.tools.has(n))
      if (overlap.length)
        throw fail('ENV_ERR_SOLO_UNSUPPORTED', `agent and user tools overlap: ${overlap.join(', ')}`)
    }
    this.sync()
  }

  /** tau2 `sync_tools`. */
  sync(): void {
    this.domain.sync()
  }

  private toolkitFor(name: string, requestor: Requestor): Toolkit<any> {
    const { agent, user } = this.domain
    if (requestor === 'user') {
      if (this.solo) throw new Error('User tools are not available in solo mode.')
      if (!user) throw new Error(`Tool '${name}' not found.`)
      return user
    }
    if (this.solo && user && !agent.tools.has(name) && user.tools.has(name)) return user
    return agent
  }

  /** Call a tool by name; throws what the tool throws (tau2 `make_tool_call`). */
  makeToolCall(
    name: string,
    requestor: Requestor,
    args: unknown,
  ): { result: unknown; toolkit: Toolkit<any> } {
    const tk = this.toolkitFor(name, requestor)
    const tool = tk.tools.get(name)
    if (!tool) throw new Error(`Tool '${name}' not found.`)
    return { result: tool.run(tk.state, bindArgs(tool, args)), toolkit: tk }
  }

  /** Execute a tool call and answer with its tool message; any error becomes `Error: …` (tau2 `get_response`). */
  getResponse(call: ToolCall): ToolMessage {
    const requestor = call.requestor ?? 'assistant'
    let content: string
    let error = false
    try {
      const { result, toolkit } = this.makeToolCall(call.name, requestor, call.arguments)
      content = toolResultText(result, toolkit.floats)
    } catch (err) {
      content = `Error: ${err instanceof Error ? err.message : String(err)}`
      error = true
    }
    this.sync()
    return { role: 'tool', id: call.id, content, requestor, error }
  }

  /** Whether a tool of this name and requestor changes state (only those are replayed). */
  isMutating(name: string, requestor: Requestor): boolean {
    try {
      return this.toolkitFor(name, requestor).tools.get(name)?.kind === 'write'
    } catch {
      return false
    }
  }

  hasTool(name: string, requestor: Requestor): boolean {
    try {
      return this.toolkitFor(name, requestor).tools.has(name)
    } catch {
      return false
    }
  }

  /** Run an env function (or a tool, called directly) named by `initialization_actions`/`env_assertions`. */
  runEnvFunction(call: EnvFunctionCall): unknown {
    const tk = call.env_type === 'user' ? this.domain.user : this.domain.agent
    if (!tk) throw fail('ENV_ERR_ENV_FUNCTION', `${this.data.domain} has no user toolkit (${call.func_name})`)
    const fn = tk.envFns.get(call.func_name)
    if (fn) return fn(tk.state, call.arguments ?? {})
    const tool = tk.tools.get(call.func_name)
    if (tool) return tool.run(tk.state, bindArgs(tool, call.arguments))
    throw fail(
      'ENV_ERR_ENV_FUNCTION',
      `${call.env_type} function ${call.func_name} not found in ${this.data.domain}`,
      {
        func: call.func_name,
      },
    )
  }

  /** tau2 `run_env_assertion`: the function must return a boolean; pass = result == assert_value. */
  runEnvAssertion(a: EnvAssertion): boolean {
    const result = this.runEnvFunction(a)
    if (typeof result !== 'boolean')
      throw fail(
        'ENV_ERR_ENV_FUNCTION',
        `${a.func_name} returned ${JSON.stringify(result)}, expected a boolean`,
        {
          func: a.func_name,
        },
      )
    return result === (a.assert_value ?? true)
  }

  /**
   * tau2 `set_state`: merge initialization data, run initialization actions, replay a message history
   * (mutating tool calls re-executed and their results compared). Returns the replay mismatches; with
   * `strict` a mismatch or a malformed history throws ENV_ERR_INIT.
   */
  setState(
    init: InitialState | null | undefined,
    history: readonly Message[] | null | undefined,
    strict = true,
  ): string[] {
    const data = init?.initialization_data
    if (data?.agent_data) this.domain.agent.setDb(deepMerge(this.domain.agent.db(), data.agent_data))
    if (data?.user_data) {
      if (!this.domain.user) throw fail('ENV_ERR_INIT', `${this.data.domain} has no user database`)
      this.domain.user.setDb(deepMerge(this.domain.user.db(), data.user_data))
    }
    for (const action of init?.initialization_actions ?? []) {
      try {
        this.runEnvFunction(action)
      } catch (err) {
        throw fail(
          'ENV_ERR_INIT',
          `initialization action ${action.func_name}: ${(err as Error).message}`,
          {
            func: action.func_name,
          },
          err,
        )
      }
      this.sync()
    }
    const mismatches = this.replay(history ?? [], strict)
    this.sync()
    return mismatches
  }

  private replay(history: readonly Message[], strict: boolean): string[] {
    const mismatches: string[] = []
    for (let i = 0; i < history.length; i++) {
      const m = history[i]
      if ((m.role !== 'assistant' && m.role !== 'user') || !m.tool_calls?.length) continue
      const requestor: Requestor = m.role
      for (let j = 0; j < m.tool_calls.length; j++) {
        const call = m.tool_calls[j]
        const rec = history[i + 1 + j]
        if (rec?.role !== 'tool' || rec.id !== call.id)
          throw fail(
            'ENV_ERR_INIT',
            `history message ${i}: tool call ${call.id} (${call.name}) has no matching tool message`,
          )
        if (!this.hasTool(call.name, requestor) || !this.isMutating(call.name, requestor)) continue
        const got = this.getResponse({ ...call, requestor })
        if (!sameContent(got.content, rec.content)) {
          const msg = `history message ${i}: replayed ${call.name} gave ${got.content.slice(0, 200)}, recorded ${rec.content.slice(0, 200)}`
          if (strict) throw fail('ENV_ERR_INIT', msg, { tool: call.name })
          mismatches.push(msg)
        }
      }
    }
    return mismatches
  }

  agentDbHash(): string {
    return dbHash(this.domain.agent.db(), this.domain.agent.floats)
  }
  userDbHash(): string | null {
    return this.domain.user ? dbHash(this.domain.user.db(), this.domain.user.floats) : null
  }

  /** OpenAI tool schemas the agent sees (solo mode: agent + user tools). */
  agentToolSchemas(): OpenAITool[] {
    const out = [...this.domain.agent.tools.values()].map(openaiSchema)
    if (this.solo && this.domain.user) out.push(...[...this.domain.user.tools.values()].map(openaiSchema))
    return out
  }

  /** OpenAI tool schemas of the user simulator, filtered by the task's `user_tools` allow-list. */
  userToolSchemas(allow?: readonly string[] | null): OpenAITool[] {
    if (!this.domain.user || this.solo) return []
    return [...this.domain.user.tools.values()]
      .filter((t) => !allow || allow.includes(t.name))
      .map(openaiSchema)
  }
}

/** Compare tool outputs as tau2 does: parsed JSON when both parse, raw text otherwise. */
function sameContent(a: string, b: string): boolean {
  const pa = tryJson(a)
  const pb = tryJson(b)
  if (pa.ok && pb.ok) return deepEqual(pa.v, pb.v)
  return a === b
}
function tryJson(s: string): { ok: boolean; v?: unknown } {
  try {
    return { ok: true, v: JSON.parse(s) }
  } catch {
    return { ok: false }
  }
}

/** Structural equality with Python semantics for the JSON subset (1 == 1.0, key order ignored). */
export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') return false
  if (Array.isArray(a) !== Array.isArray(b)) return false
  if (Array.isArray(a)) {
    const bb = b as unknown[]
    return a.length === bb.length && a.every((x, i) => deepEqual(x, bb[i]))
  }
  const ka = Object.keys(a as object)
  const kb = Object.keys(b as object)
  if (ka.length !== kb.length) return false
  return ka.every((k) => Object.hasOwn(b as object, k) && deepEqual((a as any)[k], (b as any)[k]))
}
