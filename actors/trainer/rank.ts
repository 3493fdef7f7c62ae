/**
 * One trainer rank's work on its shard of a step, and its part of collective saves. Every rank runs the
 * same sequence of native calls (one logprobs, then one ppoStep per minibatch), which is what the
 * sharded model's collectives require. Calls on the model are serialised by a lock.
 *
 * The learning rate is evaluated here from the configured schedule at this trainer's optimizer-step
 * count and handed to the native step as a constant: the count is checkpointed, so a restarted trainer
 * continues the schedule where it stopped (the native counter restarts with the fresh optimizer state).
 */
import { lrAt, type Model, type SaveDtype, type StepStats } from '../../native/index.ts'
import type { Logger } from '../../runtime/log.ts'
import type { Shard } from './batch.ts'
import { microBatches } from './batch.ts'
import { lossConfig, optimizerConfig, type TrainerConfig } from './config.ts'

export interface ShardResult {
  /** one per minibatch (optimizer step); global over ranks */
  steps: StepStats[]
  /** this rank's own sums */
  local: {
    samples: number
    tokens: number
    lossTokens: number
    behaveMinusProx: number
    absBehaveMinusProx: number
  }
  ms: number
}

export class RankWorker {
  private lock: Promise<unknown> = Promise.resolve()

  constructor(
    public model: Model,
    private readonly cfg: TrainerConfig,
    private readonly log: Logger,
    /** optimizer steps taken by this trainer so far (across restarts) */
    public optimizerSteps = 0,
  ) {}

  /** Run `fn` when the model is free (one native call sequence at a time). */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn, fn)
    this.lock = run.catch(() => {})
    return run
  }

  /** Proximal log-probs, then one PPO optimizer step per minibatch (collective with a process group). */
  train(s: Shard, step: number): Promise<ShardResult> {
    return this.exclusive(async () => {
      const t0 = Date.now()
      const loss = lossConfig(this.cfg)
      const { logprobs: prox } = await this.model.logprobs(
        { inputIds: s.inputIds, cuSeqlens: s.cuSeqlens },
        { temperature: loss.temperature },
      )
      const local = {
        samples: s.cuSeqlens.length - 1,
        tokens: s.inputIds.length,
        lossTokens: 0,
        behaveMinusProx: 0,
        absBehaveMinusProx: 0,
      }
      for (let t = 0; t < s.inputIds.length; t++) {
        if (!s.lossMask[t]) continue
        const d = s.logprobs[t]! - prox[t]!
        local.lossTokens++
        local.behaveMinusProx += d
        local.absBehaveMinusProx += Math.abs(d)
      }
      const optim = optimizerConfig(this.cfg)
      const steps: StepStats[] = []
      for (const mb of s.minibatches) {
        const mbs = microBatches(s, mb, prox, this.cfg.ppo.mb_max_tokens)
        const lr = lrAt(optim, this.optimizerSteps)
        const st = await this.model.ppoStep(mbs, loss, { ...optim, lr, schedule: { kind: 'constant' } })
        if (!st.skipped) this.optimizerSteps++
        else this.log.warn({ step, gradNorm: st.gradNorm }, 'non-finite gradient: optimizer step skipped')
        steps.push(st)
      }
      return { steps, local, ms: Date.now() - t0 }
    })
  }

  /** Write the weights as HF safetensors + config.json into dir (rank 0 writes; every rank must call). */
  /**
   * Save the weights (collective: every rank calls it) and, with `optimizerDir`, this rank's AdamW state
   * (moments, master shard, step) so a checkpoint resumes exactly.
   */
  save(dir: string, dtype: SaveDtype, optimizerDir?: string): Promise<string[]> {
    return this.exclusive(async () => {
      const files = await this.model.save(dir, { dtype })
      if (optimizerDir) files.push(await this.model.saveOptimizerState(optimizerDir))
      return files
    })
  }
}
