/**
 * Environment sessions: the protocol between an episode (main thread) and the environment that holds
 * its state (a piscina worker, or the calling thread). Every op is plain data in, plain data out, and
 * names its episode; a thread keeps one Environment per open episode.
 *
 *   open      { episodeId, dataDir, domain, taskId, solo }  → tools, policy, history
 *   tools     { episodeId, calls }                          → tool messages (executed in order, synced)
 *   evaluate  { dataDir, domain, taskId, trajectory, ... }  → EvaluationResult (fresh environments)
 *   close     { episodeId }                                 → closed
 *   crash     (tests only) throws outside any tool to simulate a worker fault
 */
import { fail } from '../../../runtime/errors.ts'
import { type DomainData, loadDomainData, loadTask } from './data.ts'
import { Environment } from './environment.ts'
import { type EvaluationResult, evaluateEpisode } from './evaluation.ts'
import type { OpenAITool } from './tools.ts'
import type { Message, Task, TerminationReason, ToolCall, ToolMessage } from './types.ts'

export type SessionOp =
  | { op: 'open'; episodeId: string; dataDir: string; domain: string; taskId: string; solo: boolean }
  | { op: 'tools'; episodeId: string; calls: ToolCall[] }
  | {
      op: 'evaluate'
      dataDir: string
      domain: string
      taskId: string
      solo: boolean
      trajectory: Message[]
      terminationReason: TerminationReason
    }
  | { op: 'close'; episodeId: string }
  | { op: 'crash'; episodeId: string; how: 'throw' | 'exit' }

export interface OpenResult {
  task: Task
  policy: string
  agentTools: OpenAITool[]
  userTools: OpenAITool[]
  /** the task's message history after initialisation (empty for most tasks) */
  history: Message[]
  /** user simulator guidelines matching the domain (with or without user tools) */
  guidelines: string
}

export type SessionResult = OpenResult | ToolMessage[] | EvaluationResult | { closed: boolean }

const dataCache = new Map<string, DomainData>()
const taskCache = new Map<string, Task>()
const episodes = new Map<string, Environment>()

function domainData(dataDir: string, domain: string): DomainData {
  const key = `${dataDir}\0${domain}`
  let d = dataCache.get(key)
  if (!d) {
    d = loadDomainData(dataDir, domain)
    dataCache.set(key, d)
  }
  return d
}

function task(dataDir: string, domain: string, id: string): Task {
  const key = `${dataDir}\0${domain}\0${id}`
  let t = taskCache.get(key)
  if (!t) {
    t = loadTask(dataDir, domain, id)
    taskCache.set(key, t)
  }
  return t
}

/** Run one op on this thread's sessions. Synchronous: the caller decides which thread runs it. */
export function handleOp(op: SessionOp): SessionResult {
  switch (op.op) {
    case 'open': {
      const data = domainData(op.dataDir, op.domain)
      const t = task(op.dataDir, op.domain, op.taskId)
      const env = new Environment(data, { solo: op.solo })
      const history = (t.initial_state?.message_history ?? []) as Message[]
      env.setState(t.initial_state, history, true)
      episodes.set(op.episodeId, env)
      return {
        task: t,
        policy: env.policy,
        agentTools: env.agentToolSchemas(),
        userTools: env.userToolSchemas(t.user_tools),
        history: structuredClone(history),
        guidelines: data.userDb ? data.guidelinesTools : data.guidelines,
      }
    }
    case 'tools': {
      const env = episodes.get(op.episodeId)
      if (!env) throw fail('ENV_ERR_EPISODE_LOST', op.episodeId, { episodeId: op.episodeId })
      return op.calls.map((c) => env.getResponse(c))
    }
    case 'evaluate': {
      const data = domainData(op.dataDir, op.domain)
      return evaluateEpisode(
        data,
        task(op.dataDir, op.domain, op.taskId),
        op.trajectory,
        op.terminationReason,
        op.solo,
      )
    }
    case 'close':
      return { closed: episodes.delete(op.episodeId) }
    case 'crash':
      if (op.how === 'exit') process.exit(1)
      throw new Error('simulated worker fault')
  }
}

/** Episodes open on this thread (diagnostics and tests). */
export function openEpisodes(): number {
  return episodes.size
}
