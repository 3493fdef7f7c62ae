/** Shared fixtures of the native tests: the debug config, a seeded PRNG, packed batches, comparisons. */

import { type ChildProcess, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { packedBatch } from '../../bench/gpu/inputs.ts'
import type { HfQwen3Config, PpoMicroBatch } from '../../native/index.ts'
import { rng } from '../../runtime/rng.ts'

export const debugConfigPath = new URL('../../configs/models/qwen3-debug/config.json', import.meta.url)
  .pathname

/** The tiny debug Qwen3 config every integration test runs, with optional overrides. */
export function debugConfig(over: Partial<HfQwen3Config> = {}): HfQwen3Config {
  return { ...(JSON.parse(readFileSync(debugConfigPath, 'utf8')) as HfQwen3Config), ...over }
}

/** Random sequences of the given lengths packed in one row (the GPU bench's recipe). */
export { packedBatch as packed, rng }

/** A PPO micro-batch: the first `prompt` tokens of each sequence are prompt (mask 0), the rest output. */
export function microBatch(
  lengths: number[],
  vocab: number,
  seed: number,
  opts: { prompt?: number; prox?: Float32Array; behaveNoise?: number } = {},
): PpoMicroBatch {
  const b = packedBatch(lengths, vocab, seed)
  const r = rng(seed ^ 0x9e3779b9)
  const T = b.inputIds.length
  const lossMask = new Uint8Array(T)
  const advantages = new Float32Array(T)
  const proxLogprobs = new Float32Array(T)
  const behaveLogprobs = new Float32Array(T)
  const prompt = opts.prompt ?? 2
  for (let s = 0; s < lengths.length; s++) {
    const a = r() * 2 - 1
    for (let i = b.cuSeqlens[s]! + prompt; i < b.cuSeqlens[s + 1]!; i++) {
      lossMask[i] = 1
      advantages[i] = a
    }
  }
  for (let i = 0; i < T; i++) {
    // a random init is near uniform: log-probs near -log(vocab)
    proxLogprobs[i] = opts.prox ? opts.prox[i]! : -Math.log(vocab) + (r() - 0.5) * 0.5
    behaveLogprobs[i] = proxLogprobs[i]! + (r() - 0.5) * (opts.behaveNoise ?? 0.2)
  }
  return { ...b, lossMask, advantages, proxLogprobs, behaveLogprobs }
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`)
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!))
  return m
}

/** First n pairs, for failure messages (llm.c habit: show what differs). */
export function pairs(a: ArrayLike<number>, b: ArrayLike<number>, n = 5): string {
  const out: string[] = []
  for (let i = 0; i < Math.min(n, a.length); i++) out.push(`${a[i]} vs ${b[i]}`)
  return out.join(', ')
}

/** ‖got − want‖ / ‖want‖ (0-safe). */
export function relErr(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let num = 0
  let den = 0
  for (let i = 0; i < want.length; i++) {
    num += (got[i]! - want[i]!) ** 2
    den += want[i]! ** 2
  }
  return Math.sqrt(num / Math.max(den, 1e-300))
}

/** Cosine of the angle between two vectors (direction agreement of two updates). */
export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let ab = 0
  let aa = 0
  let bb = 0
  for (let i = 0; i < a.length; i++) {
    ab += a[i]! * b[i]!
    aa += a[i]! ** 2
    bb += b[i]! ** 2
  }
  return ab / Math.sqrt(aa * bb)
}

/** A TCP port that was free a moment ago (for a TCPStore rendezvous). */
export { freePort } from '../../runtime/net.ts'

/**
 * Runs `n` rank processes of a worker script (`node --import tsx worker …args(rank)`), each pushed onto
 * `children` (for the caller's cleanup); resolves when all exit 0, rejects with the first failing rank's
 * stderr.
 */
export async function runRanks(
  worker: string,
  n: number,
  args: (rank: number) => string[],
  children: ChildProcess[],
  env: Record<string, string> = {},
): Promise<void> {
  const exits = Array.from({ length: n }, (_, rank) => {
    const c = spawn(process.execPath, ['--import', 'tsx', worker, ...args(rank)], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, ...env },
    })
    children.push(c)
    let err = ''
    c.stderr!.on('data', (d) => {
      err += d
    })
    return new Promise<void>((ok, bad) =>
      c.on('exit', (code) => (code === 0 ? ok() : bad(new Error(`rank ${rank} exited ${code}: ${err}`)))),
    )
  })
  await Promise.all(exits)
}
