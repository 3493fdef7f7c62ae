/**
 * Rollout actor: runs task groups for the controller.
 *
 *   controller ──rollout:run {groupId, taskId, nSamples}──▶ rollout
 *     per episode:  proxy:session:open ─▶ workflow.run(task, {baseURL, apiKey}) ─▶ proxy:session:reward
 *                   ─▶ proxy:session:end        (the agent talks HTTP to the proxy with the openai client)
 *     per group:    proxy:export {sessionIds} ─▶ trajRef ──reply──▶ controller (metadata + reference only)
 *
 * One group's sessions all live on one proxy (the least-loaded one when the group starts), so they
 * export under one reference. Environment work (tools, evaluation) runs in the piscina pool of the
 * workflow. An episode that fails still reports: status 'failed', blamed on the agent (the policy), the
 * user simulator, the environment or infrastructure, so metrics keep user-simulator failures apart from
 * the policy's. Sockets: one inbox; Dealers to the controller and to proxies.
 */
import type { Actor } from '../../runtime/actor.ts'
import { toWire } from '../../runtime/errors.ts'
import type { Logger } from '../../runtime/log.ts'
import type { AskReq, AskRes, EpisodeResult } from '../../runtime/messages.ts'
import type { Tau2EpisodeInfo } from './tau2/workflow.ts'
import type { AgentWorkflow } from './workflow.ts'

export interface RolloutOptions {
  actor: Actor
  workflow: AgentWorkflow<string>
  log: Logger
  /** model name the agent puts in its requests */
  model: string
  /** γ for the proxy's backward reward discount over turns */
  turnDiscount: number
  /** abort an episode after this long */
  episodeTimeoutMs: number
  exportStyle: 'individual' | 'concat'
}

const BLAME: Record<string, EpisodeResult['blame']> = {
  agent_error: 'agent',
  user_error: 'user',
  env_error: 'env',
  infrastructure_error: 'infra',
  agent: 'agent',
  user_simulator: 'user',
  environment: 'env',
}

/** Map a tau2 episode's info to the reported result fields. */
export function summarise(
  reward: number,
  info: Partial<Tau2EpisodeInfo>,
): Omit<EpisodeResult, 'sessionId' | 'completions'> {
  const term = info.terminationReason ?? 'unknown'
  const components: Record<string, number | null> = {}
  for (const [k, v] of Object.entries(info.evaluation?.components ?? {}))
    if (v?.inBasis) components[k] = v.reward
  const failedRun = ['agent_error', 'user_error', 'env_error', 'infrastructure_error'].includes(term)
  const blame = failedRun
    ? BLAME[term]
    : reward < 1 && info.evaluation?.failureSource
      ? BLAME[info.evaluation.failureSource]
      : undefined
  return {
    reward,
    status: failedRun ? 'failed' : 'completed',
    ...(blame ? { blame } : {}),
    ...(info.error
      ? {
          error: {
            code: 'ENV_ERR_EPISODE',
            message: String((info.error as { message?: string }).message ?? info.error),
          },
        }
      : {}),
    components,
    termination: term,
    turns: info.steps ?? 0,
  }
}

export class RolloutWorker {
  private readonly proxyLoad = new Map<string, number>()
  private inflight = 0
  private draining = false
  private completed = 0
  private idle: (() => void)[] = []

  constructor(private readonly o: RolloutOptions) {
    o.actor.handle({
      'rollout:run': (b) => this.runGroup(b),
      'rollout:drain': async () => {
        this.draining = true
        while (this.inflight > 0) await new Promise<void>((r) => this.idle.push(r))
        return { completed: this.completed }
      },
    })
  }

  private async pickProxy(): Promise<string> {
    const ids = await this.o.actor.idsOfRole('proxy')
    if (ids.length === 0) throw Object.assign(new Error('no live proxy'), { code: 'RT_ERR_NO_ACTOR' })
    let best = ids[0]
    for (const id of ids) if ((this.proxyLoad.get(id) ?? 0) < (this.proxyLoad.get(best) ?? 0)) best = id
    return best
  }

  async runGroup(req: AskReq<'rollout:run'>): Promise<AskRes<'rollout:run'>> {
    if (this.draining) throw Object.assign(new Error('rollout actor is draining'), { code: 'RT_ERR_CLOSED' })
    const t0 = Date.now()
    this.inflight++
    const proxy = await this.pickProxy()
    this.proxyLoad.set(proxy, (this.proxyLoad.get(proxy) ?? 0) + req.nSamples)
    const log = this.o.log.child({ group: req.groupId, task: req.taskId, proxy })
    try {
      const episodes = await Promise.all(
        Array.from({ length: req.nSamples }, (_, i) => this.episode(proxy, req, i, log)),
      )
      const sessionIds = episodes.map((e) => e.sessionId)
      let traj: AskRes<'rollout:run'>['traj']
      try {
        const ref = await this.o.actor.ask(proxy, 'proxy:export', {
          sessionIds,
          style: this.o.exportStyle,
          turnDiscount: this.o.turnDiscount,
        })
        traj = ref.samples > 0 ? ref : undefined
        if (!traj) await this.o.actor.ask(proxy, 'proxy:release', { refs: [ref.ref] }).catch(() => {})
      } catch (e) {
        log.warn({ err: (e as Error).message }, 'export failed; group has no trajectories')
      }
      this.completed++
      log.info({ rewards: episodes.map((e) => e.reward), ms: Date.now() - t0 }, 'group done')
      return { groupId: req.groupId, episodes, ...(traj ? { traj } : {}), ms: Date.now() - t0 }
    } finally {
      this.proxyLoad.set(proxy, (this.proxyLoad.get(proxy) ?? req.nSamples) - req.nSamples)
      this.inflight--
      if (this.inflight === 0) for (const r of this.idle.splice(0)) r()
    }
  }

  private async episode(
    proxy: string,
    req: AskReq<'rollout:run'>,
    i: number,
    log: Logger,
  ): Promise<EpisodeResult> {
    const actor = this.o.actor
    const s = await actor.ask(proxy, 'proxy:session:open', {
      meta: { groupId: req.groupId, taskId: req.taskId, i },
    })
    const ac = new AbortController()
    const timer = setTimeout(() => ac.abort(new Error('episode timeout')), this.o.episodeTimeoutMs)
    let result: EpisodeResult
    try {
      const { reward, info } = await this.o.workflow.run(req.taskId, {
        baseURL: s.baseUrl,
        apiKey: s.apiKey,
        model: this.o.model,
        signal: ac.signal,
        log,
        episodeId: `${req.groupId}-${i}`,
      })
      result = {
        sessionId: s.sessionId,
        completions: 0,
        ...summarise(reward, info as Partial<Tau2EpisodeInfo>),
      }
    } catch (e) {
      // the workflow rejects only on abort or a task that cannot start: infrastructure or data
      const w = toWire(e)
      log.warn({ code: w.code, err: w.message }, 'episode failed')
      result = {
        sessionId: s.sessionId,
        reward: 0,
        status: 'failed',
        blame: w.code.startsWith('ENV_') ? 'env' : 'infra',
        error: w,
        turns: 0,
        completions: 0,
      }
    } finally {
      clearTimeout(timer)
    }
    // the reward goes on the session's last completion; the proxy discounts it backwards over turns
    await actor
      .ask(proxy, 'proxy:session:reward', { sessionId: s.sessionId, reward: result.reward })
      .catch(() => {})
    const end = await actor.ask(proxy, 'proxy:session:end', { sessionId: s.sessionId })
    result.completions = end.completions
    return result
  }
}
