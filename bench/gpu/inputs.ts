/**
 * Seeded inputs of the GPU benchmarks, the recipe of bench/reference/ppo_ref.py (same distributions, not
 * the same numbers: each side has its own generator).
 */

import type { PackedBatch, PpoMicroBatch } from '../../native/index.ts'
import { rng } from '../../runtime/rng.ts'

export { rng }

/** Random ids in [0, vocab) for sequences of the given lengths, packed in one row. */
export function packedBatch(lengths: readonly number[], vocab: number, seed: number): PackedBatch {
  const r = rng(seed)
  const total = lengths.reduce((a, b) => a + b, 0)
  const inputIds = new Int32Array(total)
  for (let i = 0; i < total; i++) inputIds[i] = Math.floor(r() * vocab)
  const cuSeqlens = new Int32Array(lengths.length + 1)
  lengths.forEach((l, i) => {
    cuSeqlens[i + 1] = cuSeqlens[i]! + l
  })
  return { inputIds, cuSeqlens }
}

/**
 * The benchmark's micro-batch: `tokens / seqlen` sequences of random ids, loss mask every token but each
 * sequence's first, advantages ~ N(0, 1), prox = behave ~ U(−3, −0.1) (so the decoupled weight is 1).
 */
export function benchMicroBatch(tokens: number, seqlen: number, vocab: number, seed: number): PpoMicroBatch {
  const lengths = Array.from({ length: tokens / seqlen }, () => seqlen)
  const b = packedBatch(lengths, vocab, seed)
  const r = rng(seed ^ 0x5bd1e995)
  const lossMask = new Uint8Array(tokens).fill(1)
  for (let s = 0; s < lengths.length; s++) lossMask[b.cuSeqlens[s]!] = 0
  const advantages = new Float32Array(tokens)
  for (let i = 0; i < tokens; i++) {
    // Box–Muller; 1 − u keeps the log finite
    advantages[i] = Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r())
  }
  const proxLogprobs = new Float32Array(tokens)
  for (let i = 0; i < tokens; i++) proxLogprobs[i] = -3 + 2.9 * r()
  return { ...b, lossMask, advantages, proxLogprobs, behaveLogprobs: proxLogprobs.slice() }
}
