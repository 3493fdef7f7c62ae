/**
 * `npm run bench:gpu`: the native trainer's PPO update on CUDA against the PyTorch reference, same card,
 * same call (issue 8).
 *
 *   npm run bench:gpu -- --config configs/models/qwen3-1.7b/config.json --tokens 16384 --seqlen 2048 \
 *       --steps 5 --warmup 2 --ckpt --gpus N [--skip-single]
 *
 * 1. Native, 1 GPU: one micro-batch of `tokens` tokens (tokens/seqlen packed sequences), fp32 master
 *    weights, bf16 compute, activation checkpointing with --ckpt; median step time → tok_s, mfu.
 * 2. Native, N GPUs (--gpus N > 1): N forked ranks, NCCL over a TCPStore on 127.0.0.1, rank r on cuda:r,
 *    each with its own `tokens` tokens; the slowest rank's time per step, median → tok_s per GPU, and
 *    dp_scaling = tok_s per GPU at N / tok_s at 1 (--skip-single: no 1-GPU run, for models that need several).
 * 3. Reference: bench/reference/ppo_ref.py with the same arguments (torch.distributed.run with
 *    --nproc_per_node N when N > 1); ratio = native tok_s / reference tok_s at N GPUs.
 * Each measurement is its own process, so each starts with the whole GPU. Same loss, optimizer and input
 * recipe on both sides (bench/gpu/ppo-worker.ts, inputs.ts); MFU by bench/gpu/mfu.ts (= reference's mfu.py).
 * Appends a row to bench/RESULTS.md. Progress on stderr; last line on stdout:
 *   RESULT gpu tok_s=… ref_tok_s=… ratio=… mfu=… [dp_scaling=…]
 * Without CUDA (CPU-only addon or no device) it says why and prints `RESULT gpu skipped=no-cuda` (exit 0).
 * PYTHON picks the interpreter of the reference (default python3).
 */
import { type ChildProcess, fork, spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { readHfConfig } from '../native/index.ts'
import { fail } from '../runtime/errors.ts'
import { freePort } from '../runtime/net.ts'
import { noCudaReason } from './gpu/cuda.ts'
import { mfu, stepFlops } from './gpu/mfu.ts'
import { type GpuBenchOptions, parseOptions } from './gpu/options.ts'
import type { WorkerArgs, WorkerReport } from './gpu/ppo-worker.ts'
import { appendResult } from './gpu/results.ts'

const root = new URL('..', import.meta.url).pathname
const workerPath = new URL('./gpu/ppo-worker.ts', import.meta.url).pathname
const refPath = new URL('./reference/ppo_ref.py', import.meta.url).pathname
const resultsPath = new URL('./RESULTS.md', import.meta.url).pathname

function progress(msg: string): void {
  process.stderr.write(`[bench:gpu ${new Date().toISOString().slice(11, 19)}] ${msg}\n`)
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

interface Measured {
  /** Median over steps of the slowest rank's step time. */
  stepS: number
  tokS: number
  mfu: number
  numParams: number
  losses: number[]
  /** The largest rank's peak of allocated GPU memory (GiB). */
  peakGiB: number
}

/** Runs `world` native ranks as child processes; any rank failing ends them all. */
async function runNative(o: GpuBenchOptions, world: number): Promise<Measured> {
  const port = world > 1 ? await freePort() : undefined
  const children: ChildProcess[] = []
  const reports = await new Promise<Extract<WorkerReport, { type: 'result' }>[]>((resolve, reject) => {
    const got: Extract<WorkerReport, { type: 'result' }>[] = []
    let failed = false
    const stopAll = (why: Error) => {
      if (failed) return
      failed = true
      for (const c of children) if (c.exitCode === null) c.kill('SIGKILL')
      reject(why)
    }
    for (let rank = 0; rank < world; rank++) {
      const args: WorkerArgs = { ...o, rank, world, port }
      const child = fork(workerPath, [JSON.stringify(args)], {
        cwd: root,
        execArgv: ['--import', 'tsx'],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      })
      children.push(child)
      let reported = false
      child.on('message', (m: WorkerReport) => {
        reported = true
        if (m.type === 'error')
          stopAll(fail('TRN_ERR_TORCH', `native rank ${m.rank}: ${m.code ?? ''} ${m.message}`))
        else {
          got.push(m)
          if (got.length === world) resolve(got)
        }
      })
      child.on('exit', (code, signal) => {
        if (!reported)
          stopAll(fail('TRN_ERR_RANK', `native rank ${rank} exited (${code ?? signal}) without a result`))
      })
    }
  })
  const steps = reports[0]!.stepTimes.length
  const perStep = Array.from({ length: steps }, (_, i) => Math.max(...reports.map((r) => r.stepTimes[i]!)))
  const stepS = median(perStep)
  const cfg = readHfConfig(o.config)
  const flops = stepFlops(
    cfg,
    o.tokens,
    Array.from({ length: o.tokens / o.seqlen }, () => o.seqlen),
  )
  const r0 = reports.find((r) => r.rank === 0)!
  return {
    stepS,
    tokS: o.tokens / stepS,
    mfu: mfu(flops, stepS),
    numParams: r0.numParams,
    losses: r0.losses,
    peakGiB: Math.max(...reports.map((r) => r.peakGiB)),
  }
}

interface RefResult {
  tok_s: number
  step_s: number
  mfu: number
  peak_mem_gib: number
  world: number
  card: string
  torch: string
}

/** The PyTorch reference with the same arguments; its stdout goes to our stderr (progress). */
async function runReference(o: GpuBenchOptions): Promise<RefResult> {
  const py = process.env.PYTHON ?? 'python3'
  const dir = mkdtempSync(join(tmpdir(), 'bench-gpu-'))
  const out = join(dir, 'ref.json')
  const refArgs = [
    refPath,
    ...['--config', o.config, '--tokens', `${o.tokens}`, '--seqlen', `${o.seqlen}`],
    ...['--steps', `${o.steps}`, '--warmup', `${o.warmup}`, '--seed', `${o.seed}`, '--out', out],
    ...(o.ckpt ? ['--ckpt'] : []),
    ...(o.ckpt && o.refCkptLayers >= 0 ? ['--ckpt-layers', `${o.refCkptLayers}`] : []),
  ]
  const argv =
    o.gpus > 1
      ? ['-m', 'torch.distributed.run', '--standalone', `--nproc_per_node=${o.gpus}`, ...refArgs]
      : refArgs
  progress(`reference: ${py} ${argv.join(' ')}`)
  const code = await new Promise<number | null>((resolve) => {
    const child = spawn(py, argv, {
      cwd: root,
      stdio: ['ignore', 2, 2],
      env: { ...process.env, PYTHONUNBUFFERED: '1' },
    })
    child.on('error', (e) => {
      progress(`reference: cannot start ${py}: ${e.message}`)
      resolve(null)
    })
    child.on('exit', (c) => resolve(c))
  })
  try {
    if (code !== 0)
      throw fail('TRN_ERR_TORCH', `the PyTorch reference exited with ${code}; see its output above`)
    return JSON.parse(readFileSync(out, 'utf8')) as RefResult
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

function cardName(): string {
  const r = spawnSync('nvidia-smi', ['--query-gpu=name', '--format=csv,noheader', '-i', '0'], {
    encoding: 'utf8',
  })
  return r.status === 0 ? r.stdout.trim() : 'unknown GPU'
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2))
  const why = noCudaReason(o.gpus)
  if (why !== undefined) {
    progress(`no CUDA: ${why}; nothing measured`)
    console.log('RESULT gpu skipped=no-cuda')
    return
  }
  const cfg = readHfConfig(o.config)
  progress(
    `${o.config}: ${o.tokens} tokens/GPU as ${o.tokens / o.seqlen}×${o.seqlen}, ckpt ${o.ckpt}${o.ckptLayers >= 0 ? ` (first ${o.ckptLayers} layers)` : ''}` +
      `${o.refCkptLayers !== o.ckptLayers ? ` (reference: ${o.refCkptLayers < 0 ? 'all' : `first ${o.refCkptLayers}`} layers)` : ''}, ${o.gpus} GPU(s)`,
  )

  const one = o.skipSingle && o.gpus > 1 ? undefined : await runNative(o, 1)
  if (one)
    progress(
      `native 1 GPU: ${one.tokS.toFixed(0)} tok/s, mfu ${one.mfu.toFixed(4)}, step ${one.stepS.toFixed(4)} s, peak ${one.peakGiB.toFixed(1)} GiB`,
    )
  let atN = one!
  let dpScaling: number | undefined
  if (o.gpus > 1) {
    atN = await runNative(o, o.gpus)
    dpScaling = one ? atN.tokS / one.tokS : undefined
    progress(
      `native ${o.gpus} GPUs: ${atN.tokS.toFixed(0)} tok/s per GPU, mfu ${atN.mfu.toFixed(4)}, peak ${atN.peakGiB.toFixed(1)} GiB` +
        (dpScaling === undefined ? '' : `, dp_scaling ${dpScaling.toFixed(3)}`),
    )
  }
  const ref = await runReference(o)
  const ratio = atN.tokS / ref.tok_s
  progress(
    `reference ${ref.world} GPU(s): ${ref.tok_s.toFixed(0)} tok/s per GPU, mfu ${ref.mfu.toFixed(4)}, peak ${ref.peak_mem_gib.toFixed(1)} GiB`,
  )

  const command = `npm run bench:gpu -- ${process.argv.slice(2).join(' ')}`.trim()
  appendResult(resultsPath, {
    date: new Date().toISOString().slice(0, 16).replace('T', ' '),
    card: ref.card || cardName(),
    command,
    tokS: atN.tokS,
    refTokS: ref.tok_s,
    ratio,
    mfu: atN.mfu,
    dpScaling,
    notes:
      `${(atN.numParams / 1e9).toFixed(2)}B params (${cfg.num_hidden_layers} layers), ${o.gpus} GPU(s), ` +
      `native step ${atN.stepS.toFixed(3)} s, native peak ${atN.peakGiB.toFixed(1)} GiB, ref step ${ref.step_s.toFixed(3)} s, ` +
      `ref mfu ${ref.mfu.toFixed(4)}, ref peak ${ref.peak_mem_gib.toFixed(1)} GiB, torch ${ref.torch}`,
  })
  const f = (x: number, d: number) => x.toFixed(d)
  console.log(
    `RESULT gpu tok_s=${f(atN.tokS, 1)} ref_tok_s=${f(ref.tok_s, 1)} ratio=${f(ratio, 3)} mfu=${f(atN.mfu, 4)}` +
      (dpScaling === undefined ? '' : ` dp_scaling=${f(dpScaling, 3)}`),
  )
}

try {
  await main()
} catch (e) {
  const err = e as { code?: string; message?: string }
  process.stderr.write(`bench:gpu failed: ${err.code ?? ''} ${err.message ?? String(e)}\n`)
  process.exitCode = 1
}
