/**
 * One native rank of `npm run bench:gpu`, a child process forked by bench/gpu.ts (so each measurement
 * starts with an empty GPU and the reference that runs after it gets the whole card).
 *
 *   argv[2]: JSON WorkerArgs.   IPC: sends one WorkerReport ({type: 'result'} or {type: 'error'}).
 *
 * World 1: a model on cuda:0. World N: rank r joins an NCCL group over a TCPStore on 127.0.0.1:port and
 * creates its model (sharded over the group) on cuda:r. Every rank trains its own micro-batch of
 * `tokens` tokens (seed + rank, the recipe of bench/gpu/inputs.ts) and times `warmup + steps` calls of
 * ppoStep (each resolves once the step has finished on the device; the host→device copy of the batch is
 * part of the step, as it is for the trainer actor).
 */
import {
  createModel,
  cudaMemory,
  initProcessGroup,
  type ProcessGroup,
  readHfConfig,
} from '../../native/index.ts'
import { benchMicroBatch } from './inputs.ts'

export interface WorkerArgs {
  /** Path of an HF config.json. */
  config: string
  tokens: number
  seqlen: number
  steps: number
  warmup: number
  ckpt: boolean
  /** With ckpt: recompute only the first this many layers (-1: all). */
  ckptLayers?: number
  seed: number
  rank: number
  world: number
  /** TCPStore port (world > 1). */
  port?: number
}

export type WorkerReport =
  | {
      type: 'result'
      rank: number
      /** Seconds per timed step. */
      stepTimes: number[]
      numParams: number
      device: string
      /** Loss of each step, warm-up included. */
      losses: number[]
      /** Most GPU memory the caching allocator had allocated at once (GiB). */
      peakGiB: number
    }
  | { type: 'error'; rank: number; code?: string; message: string }

/** PPO settings of the benchmark: those of bench/reference/ppo_ref.py (torch AdamW's default decay). */
export const BENCH_LOSS = { epsClip: 0.2 } as const
export const BENCH_OPTIM = { lr: 1e-6, maxGradNorm: 1, weightDecay: 0.01 } as const

function progress(rank: number, msg: string): void {
  if (rank === 0) process.stderr.write(`[native ${new Date().toISOString().slice(11, 19)}] ${msg}\n`)
}

async function run(a: WorkerArgs): Promise<WorkerReport> {
  const config = readHfConfig(a.config)
  const device = `cuda:${a.rank}` as const
  let group: ProcessGroup | undefined
  if (a.world > 1) {
    group = await initProcessGroup({
      rank: a.rank,
      worldSize: a.world,
      host: '127.0.0.1',
      port: a.port,
      backend: 'nccl',
      device,
    })
  }
  const t0 = performance.now()
  const model = await createModel({
    config,
    seed: a.seed,
    dtype: 'float32',
    device,
    computeDtype: 'bfloat16',
    activationCheckpointing: a.ckpt,
    checkpointLayers: a.ckptLayers ?? -1,
    // the head's softmax kept in bf16 for its backward (5 GB at 16k tokens): what the measured rows used
    keepSoftmax: true,
    processGroup: group,
  })
  progress(
    a.rank,
    `world ${a.world}: ${(model.numParams / 1e9).toFixed(3)}B params on ${model.device} in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  )
  const mb = benchMicroBatch(a.tokens, a.seqlen, config.vocab_size, a.seed + a.rank)
  const stepTimes: number[] = []
  const losses: number[] = []
  for (let i = 0; i < a.warmup + a.steps; i++) {
    const t = performance.now()
    const stats = await model.ppoStep([mb], BENCH_LOSS, BENCH_OPTIM)
    const dt = (performance.now() - t) / 1000
    const timed = i >= a.warmup
    if (timed) stepTimes.push(dt)
    losses.push(stats.loss)
    progress(
      a.rank,
      `world ${a.world} ${timed ? 'step' : 'warmup'} ${i + 1}/${a.warmup + a.steps}: ${dt.toFixed(3)} s, loss ${stats.loss.toFixed(5)}` +
        (stats.timingsMs
          ? ` (${Object.entries(stats.timingsMs)
              .map(([k, v]) => `${k} ${v.toFixed(1)} ms`)
              .join(', ')})`
          : ''),
    )
  }
  const report: WorkerReport = {
    type: 'result',
    rank: a.rank,
    stepTimes,
    numParams: model.numParams,
    device: model.device,
    losses,
    peakGiB: cudaMemory(device).peakBytes / 2 ** 30,
  }
  model.dispose()
  return report
}

const args = JSON.parse(process.argv[2] ?? '{}') as WorkerArgs
let report: WorkerReport
try {
  report = await run(args)
} catch (e) {
  const err = e as { code?: string; message?: string }
  report = { type: 'error', rank: args.rank, code: err.code, message: err.message ?? String(e) }
}
process.send?.(report, () => process.exit(report.type === 'result' ? 0 : 1))
