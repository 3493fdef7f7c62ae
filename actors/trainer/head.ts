/**
 * Rank 0's part: the controller-facing trainer messages.
 *
 *   trainer:step   proxy:fetch each group's trajectories (by reference) ─▶ assemble ─▶ advantages
 *                  ─▶ split by tokens ─▶ trainer:shard to ranks > 0 ∥ own shard ─▶ merged stats
 *                  (fetched data is held until its step succeeds: a failed step can be retried)
 *   trainer:publish     trainer:save (publish) to ranks > 0 ∥ own save: HF safetensors + config.json
 *   trainer:checkpoint  the same into <dir>/weights (float32), then <dir>/trainer.json (written last:
 *                       a checkpoint with trainer.json is complete)
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import type { StepStats } from '../../native/index.ts'
import type { Actor } from '../../runtime/actor.ts'
import { type CodedError, fail } from '../../runtime/errors.ts'
import type { AskReq, AskRes, PackedTrajectoriesMsg } from '../../runtime/messages.ts'
import { computeAdvantages, shapeReward } from './advantages.ts'
import { assemble, split } from './batch.ts'
import type { TrainerConfig } from './config.ts'
import type { DistributedPublisher } from './publish-distributed.ts'
import type { RankWorker, ShardResult } from './rank.ts'

/** What trainer.json holds (the TS side of a checkpoint; the weights sit beside it). */
export interface TrainerState {
  /** train steps done (the controller's step number at the checkpoint) */
  step: number
  /** optimizer steps taken (drives the LR schedule) */
  optimizerSteps: number
  worldSize: number
  /** false: AdamW moments are not in the checkpoint (native/ has no export of them yet) */
  optimizerState: boolean
  savedAt: string
}

export function readTrainerState(dir: string): TrainerState {
  const f = join(dir, 'trainer.json')
  if (!existsSync(f))
    throw fail('TRN_ERR_CHECKPOINT', `${dir} has no trainer.json (incomplete checkpoint)`, { dir })
  try {
    return JSON.parse(readFileSync(f, 'utf8')) as TrainerState
  } catch (e) {
    throw fail('TRN_ERR_CHECKPOINT', `${f}: ${(e as Error).message}`, { file: f }, e)
  }
}

/** fetched trajectories kept for a retry of a failed step (the proxy frees them once fetched) */
const KEEP = 256

export class TrainerHead {
  /** train steps done */
  stepsDone: number
  /** fetched packs of steps that have not succeeded yet, by reference (oldest first) */
  private readonly kept = new Map<string, PackedTrajectoriesMsg>()

  constructor(
    private readonly actor: Actor,
    private readonly worker: RankWorker,
    private readonly cfg: TrainerConfig,
    /** actor ids of ranks 1..W-1 */
    private readonly peers: string[],
    stepsDone = 0,
    /** tensor-parallel ranks per replica: ranks r·tp … r·tp+tp−1 train the same shard */
    private readonly tp = 1,
    /** publish_mode broadcast: the update group to the engines (connected at the first publish) */
    private readonly publisher?: DistributedPublisher,
  ) {
    this.stepsDone = stepsDone
  }

  async step(req: AskReq<'trainer:step'>): Promise<AskRes<'trainer:step'>> {
    const t0 = Date.now()
    const timeoutMs = this.cfg.fetch_timeout_ms
    const fetched = await Promise.allSettled(
      req.groups.map(async (g) => {
        const kept = this.kept.get(g.traj.ref)
        if (kept) return kept
        const p = await this.actor.ask(g.traj.proxy, 'proxy:fetch', { ref: g.traj.ref }, { timeoutMs })
        this.keep(g.traj.ref, p)
        return p
      }),
    )
    // A proxy that crashed or restarted took its trajectories with it: name the lost groups (the fetched
    // ones stay kept for the retry without them); any other fetch failure fails the step as it is.
    const lost: string[] = []
    for (const [i, f] of fetched.entries()) {
      if (f.status === 'fulfilled') continue
      const code = (f.reason as CodedError).code
      if (code !== 'PRX_ERR_NO_TRAJECTORY' && code !== 'RT_ERR_PEER_DEAD') throw f.reason
      lost.push(req.groups[i]!.traj.ref)
    }
    if (lost.length)
      throw fail(
        'TRN_ERR_LOST_TRAJECTORY',
        `${lost.length} of ${req.groups.length} groups: ${lost.join(', ')}`,
        {
          refs: lost,
        },
      )
    const packs = fetched.map((f) => (f as PromiseFulfilledResult<PackedTrajectoriesMsg>).value)
    const tFetch = Date.now()
    const b = assemble(packs, this.worker.model.config.vocab_size)
    const adv = computeAdvantages(
      { offsets: b.offsets, lossMask: b.lossMask, rewards: b.rewards, groups: b.groups },
      { ...this.cfg.reward, ...this.cfg.adv },
    )
    // one shard per data-parallel replica; every tensor-parallel rank of a replica gets its replica's
    const shards = split(b, adv.advantages, (this.peers.length + 1) / this.tp, this.cfg.ppo.minibatches)
    const remote = this.peers.map((peer, i) =>
      this.actor
        .ask(
          peer,
          'trainer:shard',
          { step: req.step, ...shards[Math.floor((i + 1) / this.tp)]! },
          { timeoutMs: this.cfg.step_timeout_ms },
        )
        .catch((e: CodedError) => {
          throw fail('TRN_ERR_RANK', `${peer}: ${e.code}: ${e.message}`, { rank: i + 1 }, e)
        }),
    )
    const [own, ...others] = await Promise.all([this.worker.train(shards[0]!, req.step), ...remote])
    this.stepsDone = req.step
    for (const g of req.groups) this.kept.delete(g.traj.ref)
    // tensor-parallel ranks of a replica report the same shard: count each replica once
    const all = [own!.local, ...others.map((o) => o.stats)] as Record<string, number>[]
    const local = all.filter((_, r) => r % this.tp === 0)
    const sum = (k: string) => local.reduce((a, l) => a + (l[k] ?? 0), 0)
    const lossTokens = sum('lossTokens')
    const rewards = Array.from(b.rewards)
    let vMin = Number.POSITIVE_INFINITY
    let vMax = Number.NEGATIVE_INFINITY
    let stale = 0
    for (let t = 0; t < b.versions.length; t++) {
      if (!b.lossMask[t]) continue
      vMin = Math.min(vMin, b.versions[t]!)
      vMax = Math.max(vMax, b.versions[t]!)
      stale += req.version - b.versions[t]!
    }
    const stats: Record<string, number> = {
      ...merge((own as ShardResult).steps),
      samples: rewards.length,
      tokens: b.inputIds.length,
      loss_tokens: lossTokens,
      reward_mean: mean(rewards),
      reward_shaped_mean: mean(rewards.map((r) => shapeReward(r, this.cfg.reward))),
      adv_raw_mean: adv.rawMean,
      adv_raw_std: adv.rawStd,
      behave_minus_prox: sum('behaveMinusProx') / lossTokens,
      abs_behave_minus_prox: sum('absBehaveMinusProx') / lossTokens,
      version_min: vMin,
      version_max: vMax,
      staleness_mean: stale / lossTokens,
      optimizer_steps: this.worker.optimizerSteps,
      ranks: this.peers.length + 1,
      fetch_ms: tFetch - t0,
      train_ms: Date.now() - tFetch,
    }
    this.actor.log.info(
      {
        step: req.step,
        loss: stats.loss,
        gradNorm: stats.grad_norm,
        samples: stats.samples,
        ms: Date.now() - t0,
      },
      'train step',
    )
    return { step: req.step, stats, ms: Date.now() - t0 }
  }

  /** Hold a fetched pack until its step succeeds (a failed step can be retried with the same refs). */
  private keep(ref: string, p: PackedTrajectoriesMsg): void {
    this.kept.set(ref, p)
    for (const old of this.kept.keys()) {
      if (this.kept.size <= KEEP) break
      this.kept.delete(old)
      this.actor.log.warn({ ref: old }, 'dropped trajectories of a failed step (retry window full)')
    }
  }

  async publish(req: AskReq<'trainer:publish'>): Promise<AskRes<'trainer:publish'>> {
    const t0 = Date.now()
    if (this.publisher) {
      // broadcast to the engines (SGLang update_weights_from_distributed); ranks > 0 take part in the gathers
      const pub = this.publisher
      if (!pub.connected) await pub.connect()
      const timeoutMs = this.cfg.collective_timeout_ms
      const followers = this.peers.map((peer, i) =>
        this.actor
          .ask(
            peer,
            'trainer:save',
            { dir: req.dir, purpose: 'broadcast', step: this.stepsDone },
            { timeoutMs },
          )
          .catch((e: CodedError) => {
            throw fail('TRN_ERR_RANK', `${peer}: ${e.code}: ${e.message}`, { rank: i + 1 }, e)
          }),
      )
      const [st] = await Promise.all([pub.publish(this.worker.model, req.version), ...followers])
      this.actor.log.info({ ...st, ms: Date.now() - t0 }, 'weights broadcast to the engines')
      return { dir: req.dir, ms: Date.now() - t0, loaded: true }
    }
    await this.saveAll(req.dir, 'publish', this.stepsDone)
    this.actor.log.info({ version: req.version, dir: req.dir, ms: Date.now() - t0 }, 'weights published')
    return { dir: req.dir, ms: Date.now() - t0 }
  }

  async checkpoint(req: AskReq<'trainer:checkpoint'>): Promise<AskRes<'trainer:checkpoint'>> {
    const t0 = Date.now()
    await this.saveAll(join(req.dir, 'weights'), 'checkpoint', req.step)
    const state: TrainerState = {
      step: req.step,
      optimizerSteps: this.worker.optimizerSteps,
      worldSize: this.peers.length + 1,
      optimizerState: true,
      savedAt: new Date().toISOString(),
    }
    writeFileSync(join(req.dir, 'trainer.json'), `${JSON.stringify(state, null, 2)}\n`)
    this.actor.log.info({ step: req.step, dir: req.dir, ms: Date.now() - t0 }, 'checkpoint saved')
    return { dir: req.dir, ms: Date.now() - t0 }
  }

  private async saveAll(dir: string, purpose: 'publish' | 'checkpoint', step: number): Promise<void> {
    const dtype = purpose === 'publish' ? this.cfg.publish_dtype : 'float32'
    const timeoutMs = this.cfg.collective_timeout_ms
    const remote = this.peers.map((peer, i) =>
      this.actor.ask(peer, 'trainer:save', { dir, purpose, step }, { timeoutMs }).catch((e: CodedError) => {
        throw fail('TRN_ERR_RANK', `${peer}: ${e.code}: ${e.message}`, { rank: i + 1 }, e)
      }),
    )
    // a checkpoint's weights go to <ckpt>/weights, each rank's optimizer state to <ckpt>/optimizer
    const optimizerDir = purpose === 'checkpoint' ? join(dirname(dir), 'optimizer') : undefined
    await Promise.all([this.worker.save(dir, dtype, optimizerDir), ...remote])
  }
}

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0)

/** Minibatch step stats → one record: means, except the last lr, the max ratio and the skipped count. */
function merge(steps: StepStats[]): Record<string, number> {
  const avg = (f: (s: StepStats) => number) => mean(steps.map(f))
  return {
    loss: avg((s) => s.loss),
    clip_fraction: avg((s) => s.clipFraction),
    dual_clip_fraction: avg((s) => s.dualClipFraction),
    behav_capped_fraction: avg((s) => s.behavCappedFraction),
    ratio_mean: avg((s) => s.ratioMean),
    ratio_max: Math.max(...steps.map((s) => s.ratioMax)),
    approx_kl: avg((s) => s.approxKl),
    entropy: avg((s) => s.entropy),
    grad_norm: avg((s) => s.gradNorm),
    lr: steps.at(-1)?.lr ?? 0,
    skipped: steps.filter((s) => s.skipped).length,
    minibatches: steps.length,
  }
}
