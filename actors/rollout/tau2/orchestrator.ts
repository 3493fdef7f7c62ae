/**
 * The half-duplex orchestrator (SPEC §5): agent ↔ user simulator ↔ environment, one hop per step.
 *
 *        ┌──────── text ────────┐
 *   AGENT                        USER          (solo mode: no USER; the agent ends with `done`)
 *     │ tool calls    tool calls │
 *     └──────────▶ ENV ◀─────────┘             results go back to whoever called
 *
 * Ends on a user stop token (user_stop), the solo agent's `done` (agent_stop), max_steps, max_errors
 * (failed tool calls, cumulative), the wall-clock timeout, or an error of one party (agent_error,
 * user_error, env_error) — each error keeps its code and which party caused it.
 */
import type { Logger } from '../../../runtime/log.ts'
import { STOP } from './agent.ts'
import type {
  AssistantMessage,
  Message,
  TerminationReason,
  ToolCall,
  ToolMessage,
  UserMessage,
} from './types.ts'
import { isUserStop } from './user-simulator.ts'

export const FIRST_AGENT_MESSAGE = 'Hi! How can I help you today?'

export interface EnvChannel {
  /** Execute tool calls in order; resolves their tool messages (errors are messages, not rejections). */
  tools(calls: ToolCall[]): Promise<ToolMessage[]>
}
export interface AgentLike {
  generate(trajectory: readonly Message[], signal?: AbortSignal): Promise<AssistantMessage>
}
export interface UserLike {
  generate(trajectory: readonly Message[], signal?: AbortSignal): Promise<UserMessage>
}

export interface OrchestratorOptions {
  agent: AgentLike
  /** absent in solo mode */
  user?: UserLike
  env: EnvChannel
  solo: boolean
  /** the task's initial message history (already replayed into the environment) */
  history?: readonly Message[]
  maxSteps: number
  maxErrors: number
  /** 0 = none */
  timeoutMs?: number
  signal?: AbortSignal
  log: Logger
}

export type Party = 'agent' | 'user_simulator' | 'environment'

export interface OrchestratorResult {
  trajectory: Message[]
  terminationReason: TerminationReason
  steps: number
  numErrors: number
  /** the error that ended the episode, if one did */
  error?: { code: string; message: string; party: Party }
}

type Role = 'agent' | 'user' | 'env'

function codeOf(err: unknown, fallback: string): string {
  const c = (err as { code?: unknown })?.code
  return typeof c === 'string' ? c : fallback
}

/** Run one episode to termination. Rejects only when `signal` aborts. */
export async function orchestrate(o: OrchestratorOptions): Promise<OrchestratorResult> {
  const traj: Message[] = structuredClone((o.history ?? []) as Message[]).map((m) => ({
    ...m,
    turn_idx: null,
  }))
  const started = Date.now()
  let steps = 0
  let numErrors = 0
  let from: Role
  let to: Role
  let pending: ToolCall[] = []
  const stamp = <M extends Message>(m: M): M => ({ ...m, timestamp: new Date().toISOString() })
  const done = (
    terminationReason: TerminationReason,
    error?: OrchestratorResult['error'],
  ): OrchestratorResult => {
    traj.forEach((m, i) => {
      if (m.role !== 'system') m.turn_idx = i
    })
    o.log.debug({ terminationReason, steps, numErrors, error }, 'episode ended')
    return { trajectory: traj, terminationReason, steps, numErrors, ...(error ? { error } : {}) }
  }

  // --- initial routing ----------------------------------------------------------------------------
  const last = traj[traj.length - 1]
  if (!last) {
    if (o.solo) {
      from = 'env'
      to = 'agent'
    } else {
      traj.push(stamp({ role: 'assistant', content: FIRST_AGENT_MESSAGE }))
      from = 'agent'
      to = 'user'
    }
  } else if (last.role === 'assistant') {
    from = 'agent'
    to = last.tool_calls?.length ? 'env' : 'user'
    pending = last.tool_calls ?? []
  } else if (last.role === 'user') {
    from = 'user'
    to = last.tool_calls?.length ? 'env' : 'agent'
    pending = last.tool_calls ?? []
  } else if (last.role === 'tool') {
    from = 'env'
    to = last.requestor === 'user' ? 'user' : 'agent'
  } else {
    from = 'env'
    to = o.solo ? 'agent' : 'user'
  }
  if (o.solo && to === 'user') to = 'agent'

  // --- steps --------------------------------------------------------------------------------------
  for (;;) {
    o.signal?.throwIfAborted()
    if (to === 'user') {
      if (!o.user)
        return done('user_error', {
          code: 'ENV_ERR_USER_LLM',
          message: 'no user simulator',
          party: 'user_simulator',
        })
      let m: UserMessage
      try {
        m = await o.user.generate(traj, o.signal)
      } catch (err) {
        if (o.signal?.aborted) throw err
        return done('user_error', {
          code: codeOf(err, 'ENV_ERR_USER_LLM'),
          message: (err as Error).message,
          party: 'user_simulator',
        })
      }
      traj.push(stamp(m))
      steps++
      if (isUserStop(m)) return done('user_stop')
      from = 'user'
      pending = m.tool_calls ?? []
      to = pending.length ? 'env' : 'agent'
    } else if (to === 'agent') {
      let m: AssistantMessage
      try {
        m = await o.agent.generate(traj, o.signal)
      } catch (err) {
        if (o.signal?.aborted) throw err
        return done('agent_error', {
          code: codeOf(err, 'ENV_ERR_AGENT_LLM'),
          message: (err as Error).message,
          party: 'agent',
        })
      }
      traj.push(stamp(m))
      steps++
      if (o.solo && m.content === STOP && !m.tool_calls?.length) return done('agent_stop')
      pending = m.tool_calls ?? []
      if (!pending.length && !m.content?.trim())
        return done('agent_error', {
          code: 'ENV_ERR_AGENT_LLM',
          message: 'empty agent turn (no text, no tool call)',
          party: 'agent',
        })
      if (o.solo && !pending.length)
        return done('agent_error', {
          code: 'ENV_ERR_AGENT_LLM',
          message: 'solo agent answered with text, not a tool call',
          party: 'agent',
        })
      from = 'agent'
      to = pending.length ? 'env' : 'user'
    } else {
      const requestor = from === 'user' ? 'user' : 'assistant'
      let results: ToolMessage[]
      try {
        results = await o.env.tools(pending.map((c) => ({ ...c, requestor })))
      } catch (err) {
        if (o.signal?.aborted) throw err
        return done('env_error', {
          code: codeOf(err, 'ENV_ERR_WORKER_CRASH'),
          message: (err as Error).message,
          party: 'environment',
        })
      }
      for (const r of results) {
        traj.push(stamp(r))
        if (r.error) numErrors++
      }
      steps++
      pending = []
      to = from
      from = 'env'
    }
    if (to === 'env') continue
    if (steps >= o.maxSteps) return done('max_steps')
    if (numErrors >= o.maxErrors) return done('too_many_errors')
    if (o.timeoutMs && Date.now() - started >= o.timeoutMs) return done('timeout')
  }
}
