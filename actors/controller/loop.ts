/**
 * The training loop of the controller: admission under the staleness bound, dispatch of task groups to
 * the least-loaded rollout actor, group filtering, batching by reference, the train step and the
 * weight-update sequence, checkpoints and metrics.
 *
 *   dispatch lane ──admit (η)──▶ rollout:run (least-loaded rollout) ──▶ result ──filter──▶ ready (FIFO)
 *   train lane:  ready ≥ batch ─▶ drop stragglers (η) ─▶ trainer:step ─▶ pause engines ─▶ publish
 *                ─▶ load weights + version bump everywhere ─▶ resume ─▶ metrics ─▶ checkpoint
 *
 * Generation keeps running while the trainer computes (that overlap is the point of η > 0); only the
 * publish/load part of a weight update pauses it. Every admitted group is counted exactly once, as
 * trained, filtered, stale (dropped at batch formation), or failed (its rollout actor died or errored).
 * The loop talks to the rest of the system through `LoopOps` (bus messages in production).
 */
import { type CodedError, fail } from '../../runtime/errors.ts'
import type { Logger } from '../../runtime/log.ts'
import type { AskReq, AskRes, EpisodeResult, TrajRef } from '../../runtime/messages.ts'
import type { DatasetState, TaskDataset } from './dataset.ts'
import { blameCounts, componentFailureRates, mean, passHatK } from './metrics.ts'
import { StalenessManager } from './staleness.ts'

export interface LoopConfig {
  /** groups per train step */
  batchSize: number
  /** episodes per group */
  nSamples: number
  /** η: max_head_offpolicyness */
  eta: number
  /** groups generating at once */
  maxConcurrent: number
  totalSteps: number
  seed: number
  /** drop a group whose mean reward is above this (nothing to learn); > 1 = off */
  filterMeanAbove: number
  /** drop groups whose rewards are all equal (zero advantage); off by default */
  filterNoVariance: boolean
  /** checkpoint every N steps (0 = never) */
  saveEvery: number
  /** where weights for engines are published, one folder per version */
  weightsDir: string
  checkpointDir: string
  /** pass^k reported for k = 1..passK */
  passK: number
  /**
   * After failed groups in a row, the next dispatch waits base·2^(k−1) ms (at most 5 s), so an outage (no
   * live proxy, a dead rollout actor) is not retried in a tight loop; a success resets it, and a peer
   * coming up or going down (poke) retries at once. Default 100.
   */
  failureBackoffMs?: number
}

const MAX_FAILURE_BACKOFF_MS = 5000

export interface LoopOps {
  /** live rollout actor ids */
  rollouts(): string[]
  runGroup(rollout: string, req: AskReq<'rollout:run'>): Promise<AskRes<'rollout:run'>>
  trainStep(req: AskReq<'trainer:step'>): Promise<AskRes<'trainer:step'>>
  pauseGeneration(): Promise<void>
  /** `loaded`: the weights went to the engines themselves (broadcast), not only to `dir` */
  publish(version: number, dir: string): Promise<{ loaded: boolean }>
  loadWeights(dir: string, version: number, loaded: boolean): Promise<void>
  /** Bring one proxy (a restarted one) to the weights of `version` (as loadWeights, for that proxy only). */
  syncProxy(id: string, dir: string, version: number, loaded: boolean): Promise<void>
  resumeGeneration(): Promise<void>
  checkpoint(dir: string, step: number, state: ControllerState): Promise<void>
  /** free exported trajectories that will not be trained (filtered, stale) */
  release(refs: TrajRef[]): Promise<void>
}

export interface Counters {
  admitted: number
  trained: number
  filtered: number
  stale: number
  failed: number
  episodes: number
  trainedTokens: number
}

export interface ControllerState {
  step: number
  version: number
  dataset: DatasetState
  counters: Counters
}

interface Ready {
  groupId: string
  taskId: string
  admittedAt: number
  traj: TrajRef
  episodes: EpisodeResult[]
}

export interface StepMetrics extends Record<string, unknown> {
  step: number
  version: number
}

export class TrainingLoop {
  readonly staleness: StalenessManager
  readonly counters: Counters = {
    admitted: 0,
    trained: 0,
    filtered: 0,
    stale: 0,
    failed: 0,
    episodes: 0,
    trainedTokens: 0,
  }
  step = 0
  private readonly ready: Ready[] = []
  private readonly load = new Map<string, number>()
  private readonly inflight = new Set<Promise<void>>()
  private readonly retry: string[] = []
  private dispatchPaused = false
  private stopping = false
  private failure: Error | undefined
  private wake: () => void = () => {}
  /** groups failed in a row, and the pending retry while backing off */
  private failStreak = 0
  /** the engines' current weights (what a restarted proxy is brought to), and the update in progress */
  private weights: { dir: string; version: number; loaded: boolean } | undefined
  private updating: Promise<void> | undefined
  private backoff: ReturnType<typeof setTimeout> | undefined
  private groupSeq = 0
  private stepEpisodes: EpisodeResult[][] = []
  private readonly t0 = Date.now()

  constructor(
    private readonly cfg: LoopConfig,
    private readonly dataset: TaskDataset,
    private readonly ops: LoopOps,
    private readonly log: Logger,
    private readonly onStep: (m: StepMetrics) => void = () => {},
  ) {
    this.staleness = new StalenessManager(cfg.batchSize, cfg.eta, cfg.maxConcurrent)
  }

  /** Continue a checkpointed run: counters, dataset position, version; accepted restarts at version·batch. */
  restore(s: ControllerState): void {
    this.step = s.step
    Object.assign(this.counters, s.counters)
    this.dataset.restore(s.dataset)
    this.staleness.resume(s.version)
  }

  state(): ControllerState {
    return {
      step: this.step,
      version: this.staleness.version,
      dataset: this.dataset.position,
      counters: { ...this.counters },
    }
  }

  /** Ask the loop to stop after the current step (Ctrl-C). */
  stop(): void {
    this.stopping = true
    this.clearBackoff()
    this.wake()
  }

  /** Tell the loop a peer joined or left (re-checks dispatch at once, even while backing off). */
  poke(): void {
    this.clearBackoff()
    this.wake()
  }

  /** The weights every proxy holds now (the launcher's initial load; the loop notes its own updates). */
  noteWeights(dir: string, version: number, loaded: boolean): void {
    this.weights = { dir, version, loaded }
  }

  /**
   * A proxy registered again (its supervisor restarted it): once any weight update in progress is over,
   * bring it to the current weights — it missed the updates while it was down. Failures are logged (the
   * next update reaches it anyway).
   */
  async syncProxy(id: string): Promise<void> {
    while (this.updating) await this.updating
    const w = this.weights
    if (!w || this.stopping) return
    try {
      await this.ops.syncProxy(id, w.dir, w.version, w.loaded)
      this.log.info({ proxy: id, version: w.version }, 'proxy brought to the current weights')
    } catch (e) {
      this.log.warn(
        { proxy: id, code: (e as { code?: string }).code, err: (e as Error).message },
        'proxy sync failed',
      )
    }
  }

  private clearBackoff(): void {
    if (this.backoff) clearTimeout(this.backoff)
    this.backoff = undefined
  }

  /** Run until totalSteps are done (or stop()); resolves with the final state. */
  async run(): Promise<ControllerState> {
    while (this.step < this.cfg.totalSteps && !this.stopping && !this.failure) {
      this.dispatch()
      const batch = this.takeBatch()
      if (batch) {
        await this.trainOn(batch)
        continue
      }
      await new Promise<void>((r) => {
        this.wake = r
      })
    }
    if (this.failure) throw this.failure
    return this.state()
  }

  /** Groups done and accepted, waiting for a batch. */
  get waiting(): number {
    return this.ready.length
  }

  /** In-flight groups at the end (a stopped run leaves them; recover restarts them). */
  get running(): number {
    return this.staleness.running
  }

  /** Wait for in-flight groups to settle (used at shutdown; their results are counted, not trained). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.inflight])
  }

  private dispatch(): void {
    if (this.dispatchPaused || this.stopping || this.backoff) return
    for (;;) {
      const rollouts = this.ops.rollouts()
      if (rollouts.length === 0) return
      if (!this.staleness.admit()) return
      let best = rollouts[0]
      for (const r of rollouts) if ((this.load.get(r) ?? 0) < (this.load.get(best) ?? 0)) best = r
      const taskId = this.retry.shift() ?? this.dataset.next()
      const groupId = `g${this.staleness.version}-${++this.groupSeq}`
      const admittedAt = this.staleness.version
      this.counters.admitted++
      this.load.set(best, (this.load.get(best) ?? 0) + 1)
      const p = this.runGroup(best, groupId, taskId, admittedAt).finally(() => {
        this.inflight.delete(p)
        this.load.set(best, (this.load.get(best) ?? 1) - 1)
        this.refill()
        this.wake()
      })
      this.inflight.add(p)
    }
  }

  /** Keep generating while the trainer works: refill at once — or, after failures in a row, a bit later. */
  private refill(): void {
    if (this.failStreak === 0) {
      this.dispatch()
      return
    }
    if (this.backoff || this.stopping) return
    const base = this.cfg.failureBackoffMs ?? 100
    const ms = Math.min(MAX_FAILURE_BACKOFF_MS, base * 2 ** Math.min(this.failStreak - 1, 16))
    this.backoff = setTimeout(() => {
      this.backoff = undefined
      this.dispatch()
      this.wake()
    }, ms)
  }

  private async runGroup(
    rollout: string,
    groupId: string,
    taskId: string,
    admittedAt: number,
  ): Promise<void> {
    let res: AskRes<'rollout:run'>
    try {
      res = await this.ops.runGroup(rollout, {
        groupId,
        taskId,
        nSamples: this.cfg.nSamples,
        version: admittedAt,
        seed: this.cfg.seed * 7919 + this.groupSeq,
      })
    } catch (e) {
      // the rollout actor died or failed: the group counts as failed; its task goes around again
      this.failStreak++
      this.counters.failed++
      this.staleness.finish(false)
      this.retry.push(taskId)
      this.log.warn(
        { groupId, rollout, code: (e as { code?: string }).code, err: (e as Error).message },
        'group failed',
      )
      return
    }
    this.failStreak = 0
    this.counters.episodes += res.episodes.length
    this.stepEpisodes.push(res.episodes)
    const rewards = res.episodes.map((e) => e.reward)
    const m = mean(rewards)
    const flat = rewards.every((r) => r === rewards[0])
    if (!res.traj || m > this.cfg.filterMeanAbove || (this.cfg.filterNoVariance && flat)) {
      this.counters.filtered++
      this.staleness.finish(false)
      if (res.traj) await this.ops.release([res.traj]).catch(() => {})
      return
    }
    this.staleness.finish(true)
    this.ready.push({ groupId, taskId, admittedAt, traj: res.traj, episodes: res.episodes })
  }

  /** A batch of ready groups, oldest first, after dropping stragglers past η. */
  private takeBatch(): Ready[] | undefined {
    const stale: Ready[] = []
    for (let i = 0; i < this.ready.length; ) {
      if (this.staleness.isStale(this.ready[i].admittedAt)) {
        stale.push(...this.ready.splice(i, 1))
        // it was counted as accepted: give its slot back
        this.staleness.accepted--
        this.counters.stale++
      } else i++
    }
    if (stale.length) {
      this.log.warn(
        { groups: stale.map((s) => s.groupId), version: this.staleness.version },
        'stale groups dropped',
      )
      this.ops.release(stale.map((s) => s.traj)).catch(() => {})
    }
    if (this.ready.length < this.cfg.batchSize) return undefined
    return this.ready.splice(0, this.cfg.batchSize)
  }

  /**
   * The trainer could not fetch some of the batch's groups: their proxy crashed or restarted and took
   * their trajectories with it. Those groups count as failed (their accepted slots are given back, their
   * tasks go around again); the rest return to the front of the queue for the next batch, with the step's
   * episodes, and the trainer still holds what it fetched of them.
   */
  private dropLost(batch: Ready[], refs: string[], episodes: EpisodeResult[][]): void {
    const gone = new Set(refs)
    const lost = batch.filter((b) => gone.has(b.traj.ref))
    if (lost.length === 0)
      throw fail('TRN_ERR_LOST_TRAJECTORY', 'the trainer named no group of this batch as lost')
    this.ready.unshift(...batch.filter((b) => !gone.has(b.traj.ref)))
    this.stepEpisodes.unshift(...episodes)
    this.staleness.accepted -= lost.length
    this.counters.failed += lost.length
    this.retry.push(...lost.map((b) => b.taskId))
    this.log.warn({ groups: lost.map((b) => b.groupId), step: this.step + 1 }, 'groups lost with their proxy')
    this.dispatch()
  }

  private async trainOn(batch: Ready[]): Promise<void> {
    const v = this.staleness.version
    const t0 = Date.now()
    const episodes = this.stepEpisodes
    this.stepEpisodes = []
    let res: AskRes<'trainer:step'>
    try {
      res = await this.ops.trainStep({
        step: this.step + 1,
        version: v,
        groups: batch.map((b) => ({ groupId: b.groupId, traj: b.traj })),
      })
    } catch (e) {
      const err = e as CodedError
      if (err.code !== 'TRN_ERR_LOST_TRAJECTORY') throw e
      this.dropLost(batch, (err.details as { refs?: string[] } | undefined)?.refs ?? [], episodes)
      return
    }
    const t1 = Date.now()
    // weight update: pause dispatch and engines → publish → load + version bump everywhere → resume
    this.dispatchPaused = true
    const next = v + 1
    const dir = `${this.cfg.weightsDir}/v${next}`
    let t2 = t1
    let t3 = t1
    let done = () => {}
    this.updating = new Promise<void>((r) => {
      done = r
    })
    try {
      await this.ops.pauseGeneration()
      const { loaded } = await this.ops.publish(next, dir)
      t2 = Date.now()
      await this.ops.loadWeights(dir, next, loaded)
      this.noteWeights(dir, next, loaded)
      this.staleness.setVersion(next)
      t3 = Date.now()
    } finally {
      try {
        await this.ops.resumeGeneration()
      } finally {
        this.updating = undefined
        done()
        this.dispatchPaused = false
        this.dispatch()
      }
    }
    this.step++
    this.counters.trained += batch.length
    const tokens = batch.reduce((a, b) => a + b.traj.trainableTokens, 0)
    this.counters.trainedTokens += tokens
    const staleHist: Record<string, number> = {}
    for (const b of batch)
      staleHist[String(v - b.admittedAt)] = (staleHist[String(v - b.admittedAt)] ?? 0) + 1
    const trainedEpisodes = batch.flatMap((b) => b.episodes)
    const rewards = trainedEpisodes.map((e) => e.reward)
    const m: StepMetrics = {
      step: this.step,
      version: next,
      time_s: (Date.now() - this.t0) / 1000,
      reward_mean: mean(rewards),
      reward_mean_all: mean(episodes.flat().map((e) => e.reward)),
      ...passHatK(
        batch.map((b) => b.episodes),
        this.cfg.nSamples,
      ),
      component_fail_rate: componentFailureRates(episodes.flat()),
      failures_by_blame: blameCounts(episodes.flat()),
      staleness_hist: staleHist,
      trained_tokens: tokens,
      tokens_per_s: tokens / Math.max(1e-3, (t1 - t0) / 1000),
      time_train_s: (t1 - t0) / 1000,
      time_publish_s: (t2 - t1) / 1000,
      time_load_s: (t3 - t2) / 1000,
      time_update_s: (Date.now() - t1) / 1000,
      trainer: res.stats,
      counters: { ...this.counters, running: this.staleness.running },
    }
    this.onStep(m)
    if (this.cfg.saveEvery > 0 && this.step % this.cfg.saveEvery === 0) {
      await this.ops.checkpoint(`${this.cfg.checkpointDir}/step-${this.step}`, this.step, this.state())
    }
  }
}
