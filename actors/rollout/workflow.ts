/**
 * The AgentWorkflow contract: what the rollout actor runs per episode. A workflow drives an agent that
 * talks to an OpenAI-compatible endpoint (in training, a proxy session whose base URL and key come in
 * `ctx`) and returns the episode's reward plus diagnostics. tau2 is the first implementation
 * (tau2/workflow.ts).
 */
import type { Logger } from '../../runtime/log.ts'

export interface WorkflowContext {
  /** OpenAI-compatible base URL the agent must use (e.g. `http://host:port/s/<session>/v1`) */
  baseURL: string
  /** API key for that endpoint (the proxy session key) */
  apiKey: string
  /** model name to put in requests */
  model: string
  /** aborts the episode (the run rejects with the abort reason) */
  signal: AbortSignal
  log: Logger
  /** optional id for logs and environment sessions */
  episodeId?: string
}

export interface WorkflowResult {
  /** the episode reward in [0, 1] */
  reward: number
  /** plain data: termination, evaluation breakdown, errors, trajectory */
  info: Record<string, unknown>
}

export interface AgentWorkflow<T = unknown> {
  /**
   * Run one episode of `task`. Resolves with a reward even when the agent, the user simulator or the
   * environment failed (reward 0, `info` says which); rejects only when `ctx.signal` aborts or the task
   * itself cannot be started (unknown task, bad data: a coded error).
   */
  run(task: T, ctx: WorkflowContext): Promise<WorkflowResult>
}
