/**
 * GPU correctness checks of the native trainer (issue 8), one command:
 *
 *   node --import tsx bench/gpu/parity.ts [--dir D] [--device cuda:0]
 *
 * 1. HF parity. A random qwen3-50m model (fp32 master) on the GPU is saved to D/model (float32
 *    safetensors + config.json); a seeded packed batch (sequences of 37, 200 and 511 tokens) is scored with
 *    computeDtype float32 and, on a second model given the same weights, bfloat16. D gets the files of
 *    bench/gpu/hf_parity.py (batch.json, native-float32.f32, native-bfloat16.f32), which then loads D/model
 *    in transformers and compares (fp32 ≤ 1e-4, bf16 ≤ 1e-2 relative; no missing/unexpected keys).
 * 2. One PPO step on the GPU (bf16 compute, fp32 master) against the same step on the CPU (float32) for
 *    qwen3-debug, same weights and batch: per parameter, ‖Δgpu − Δcpu‖ / ‖Δcpu‖ ≤ 5e-2 with Δ = after − before.
 *    NOTE: AdamW's first step is lr·g/(|g| + eps): with the default eps (1e-8) that is lr·sign(g), and bf16
 *    noise flips the sign of near-zero gradients, so Δ would compare noise. eps = 1 (≫ |g|) makes Δ ≈ lr·g,
 *    linear in the gradient, and lr = 1 makes Δ large against float32 rounding of the weights (ulp/2 of
 *    a weight of 1 is 6e-8): the check then sees the error of the whole bf16 forward/backward.
 *    prox = the CPU model's own log-probs, so ρ ≈ 1 on both sides and no token changes clip branch.
 * Prints a table per check; last line `PARITY hf=ok|fail update=ok|fail update_rel=…`; exit 1 on any failure.
 * Without CUDA: says why, prints `PARITY skipped=no-cuda`, exits 0. PYTHON picks the interpreter.
 */
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import {
  createModel,
  type DeviceName,
  type Model,
  type PpoMicroBatch,
  readHfConfig,
} from '../../native/index.ts'
import { fail } from '../../runtime/errors.ts'
import { updateErrors } from './compare.ts'
import { noCudaReason } from './cuda.ts'
import { packedBatch, rng } from './inputs.ts'

const models = new URL('../../configs/models/', import.meta.url).pathname
const hfParity = new URL('./hf_parity.py', import.meta.url).pathname
const UPDATE_TOL = 5e-2
const LENGTHS = [37, 200, 511]

function f32File(path: string, a: Float32Array): void {
  // little-endian on every machine this runs on (x86-64, aarch64)
  writeFileSync(path, new Uint8Array(a.buffer, a.byteOffset, a.byteLength))
}

/** Gives `to` the weights of `from` (so the check does not depend on how seeds map to weights). */
async function copyWeights(from: Model, to: Model): Promise<void> {
  const ps = await from.parameters()
  for (const [name, data] of Object.entries(ps)) to.setParameter(name, data)
}

async function hfCheck(dir: string, device: DeviceName): Promise<boolean> {
  const config = readHfConfig(join(models, 'qwen3-50m'))
  const batch = packedBatch(LENGTHS, config.vocab_size, 7)
  const m32 = await createModel({ config, seed: 1, dtype: 'float32', device, computeDtype: 'float32' })
  const m16 = await createModel({ config, seed: 1, dtype: 'float32', device, computeDtype: 'bfloat16' })
  try {
    for (const m of [m32, m16]) {
      if (!m.device.startsWith('cuda'))
        throw fail('TRN_ERR_DEVICE', `model on ${m.device}, asked for ${device}`)
    }
    await copyWeights(m32, m16)
    const files = await m32.save(join(dir, 'model'), { dtype: 'float32' })
    process.stderr.write(`[parity] wrote ${files.join(', ')} to ${join(dir, 'model')}\n`)
    writeFileSync(
      join(dir, 'batch.json'),
      JSON.stringify({ inputIds: Array.from(batch.inputIds), cuSeqlens: Array.from(batch.cuSeqlens) }),
    )
    f32File(join(dir, 'native-float32.f32'), (await m32.logprobs(batch)).logprobs)
    f32File(join(dir, 'native-bfloat16.f32'), (await m16.logprobs(batch)).logprobs)
  } finally {
    m32.dispose()
    m16.dispose()
  }
  const py = process.env.PYTHON ?? 'python3'
  const r = spawnSync(py, [hfParity, '--dir', dir], { stdio: ['ignore', 'inherit', 'inherit'] })
  if (r.error) process.stderr.write(`[parity] cannot run ${py}: ${r.error.message}\n`)
  return r.status === 0
}

/** Sequences of 40, 64 and 100 tokens; mask all but each first token; prox = `prox`, behave near it. */
function stepBatch(vocab: number, prox: (b: PpoMicroBatch) => Promise<Float32Array>): Promise<PpoMicroBatch> {
  const b = packedBatch([40, 64, 100], vocab, 11)
  const T = b.inputIds.length
  const r = rng(12)
  const lossMask = new Uint8Array(T).fill(1)
  for (let s = 0; s + 1 < b.cuSeqlens.length; s++) lossMask[b.cuSeqlens[s]!] = 0
  const advantages = Float32Array.from({ length: T }, () => r() * 2 - 1)
  const mb: PpoMicroBatch = { ...b, lossMask, advantages, proxLogprobs: new Float32Array(T) }
  return prox(mb).then((lp) => {
    const behaveLogprobs = Float32Array.from(lp, (x) => x + (r() - 0.5) * 0.1)
    return { ...mb, proxLogprobs: lp, behaveLogprobs }
  })
}

async function updateCheck(device: DeviceName): Promise<{ ok: boolean; global: number }> {
  const config = readHfConfig(join(models, 'qwen3-debug'))
  const cpu = await createModel({ config, seed: 3, dtype: 'float32', device: 'cpu' })
  const gpu = await createModel({ config, seed: 3, dtype: 'float32', device, computeDtype: 'bfloat16' })
  // the same step in float32 on the GPU, for information: separates device bugs from bf16 rounding
  const gpu32 = await createModel({ config, seed: 3, dtype: 'float32', device, computeDtype: 'float32' })
  try {
    await copyWeights(cpu, gpu)
    await copyWeights(cpu, gpu32)
    const mb = await stepBatch(config.vocab_size, async (b) => (await cpu.logprobs(b)).logprobs)
    const loss = { epsClip: 0.2 }
    const optim = { lr: 1, eps: 1, maxGradNorm: 1, weightDecay: 0 }
    const before = await cpu.parameters()
    const step = async (m: Model) => {
      const stats = await m.ppoStep([mb], loss, optim)
      return { stats, after: await m.parameters() }
    }
    const c = await step(cpu)
    const g = await step(gpu)
    const g32 = await step(gpu32)
    const { tensors, global } = updateErrors(before, c.after, before, g.after)
    const info = updateErrors(before, c.after, before, g32.after)
    const e = (x: number) => x.toExponential(3).padStart(10)
    console.log(`one PPO step, qwen3-debug: cpu float32 vs ${gpu.device} bfloat16 (lr 1, eps 1)`)
    for (const [name, s] of [
      ['cpu float32', c.stats],
      ['cuda bfloat16', g.stats],
      ['cuda float32', g32.stats],
    ] as const) {
      console.log(
        `  ${name.padEnd(14)} loss ${s.loss.toExponential(4)}, grad norm ${s.gradNorm.toExponential(4)}, clip fraction ${s.clipFraction}`,
      )
    }
    // every parameter of the small config, else the worst and every failing one
    const worst = [...tensors].sort((x, y) => y.relErr - x.relErr)
    const shown = worst.length <= 40 ? worst : worst.filter((t, i) => i < 12 || !(t.relErr <= UPDATE_TOL))
    console.log(
      `  ${'parameter'.padEnd(46)} ${'‖Δcpu‖'.padStart(10)} ${'‖Δbf16‖'.padStart(10)} ${'rel bf16'.padStart(10)} ${'rel fp32'.padStart(10)}`,
    )
    for (const t of shown) {
      const f32 = info.tensors.find((x) => x.name === t.name)!
      const flag = t.relErr <= UPDATE_TOL ? '' : t.gotNorm === 0 ? '  FAIL (not updated)' : '  FAIL'
      console.log(
        `  ${t.name.padEnd(46)} ${e(t.refNorm)} ${e(t.gotNorm)} ${e(t.relErr)} ${e(f32.relErr)}${flag}`,
      )
    }
    const bad = tensors.filter((t) => !(t.relErr <= UPDATE_TOL))
    console.log(
      `  all ${tensors.length} parameters: global rel err bf16 ${global.toExponential(3)}, fp32 ${info.global.toExponential(3)}; ${bad.length} over ${UPDATE_TOL}`,
    )
    return { ok: bad.length === 0, global }
  } finally {
    cpu.dispose()
    gpu.dispose()
    gpu32.dispose()
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: { dir: { type: 'string' }, device: { type: 'string', default: 'cuda:0' } },
  })
  const device = values.device as DeviceName
  if (!/^cuda(:\d+)?$/.test(device))
    throw fail('CFG_ERR_VALUE', `--device ${device}: expected cuda or cuda:N`)
  const why = noCudaReason()
  if (why !== undefined) {
    process.stderr.write(`[parity] no CUDA: ${why}; nothing checked\n`)
    console.log('PARITY skipped=no-cuda')
    return 0
  }
  const dir = values.dir ?? mkdtempSync(join(tmpdir(), 'trn-parity-'))
  mkdirSync(dir, { recursive: true })
  const hfOk = await hfCheck(dir, device)
  const upd = await updateCheck(device)
  console.log(
    `PARITY hf=${hfOk ? 'ok' : 'fail'} update=${upd.ok ? 'ok' : 'fail'} update_rel=${upd.global.toExponential(3)} dir=${dir}`,
  )
  return hfOk && upd.ok ? 0 : 1
}

try {
  process.exitCode = await main()
} catch (e) {
  const err = e as { code?: string; message?: string }
  process.stderr.write(`parity failed: ${err.code ?? ''} ${err.message ?? String(e)}\n`)
  process.exitCode = 1
}
