/**
 * From fetched trajectories to what each rank trains on:
 *
 *   groups' packed trajectories ──assemble──▶ one flat batch (validated)
 *   ──split by tokens──▶ one shard per rank, each cut into the same number of minibatches
 *   ──per minibatch──▶ micro-batches within a token budget (native PpoMicroBatch)
 *
 * Balance: samples go longest first to the least-loaded rank (LPT), and within a rank to the least-loaded
 * minibatch. Every rank gets exactly `minibatches` non-empty minibatches (collective calls must match
 * across ranks): an empty one gets a 2-token dummy sample with no loss tokens, which adds nothing to the
 * loss or its token count.
 */
import type { PpoMicroBatch } from '../../native/index.ts'
import { fail } from '../../runtime/errors.ts'
import type { PackedTrajectoriesMsg } from '../../runtime/messages.ts'

export interface Batch {
  /** sample k spans [offsets[k], offsets[k+1]) */
  offsets: Int32Array
  inputIds: Int32Array
  lossMask: Uint8Array
  /** behaviour (engine) log-probs */
  logprobs: Float32Array
  versions: Int32Array
  rewards: Float64Array
  /** index into the step's groups, per sample */
  groups: Int32Array
}

/** One rank's share of a step (the body of trainer:shard, less the step number). */
export interface Shard {
  inputIds: Int32Array<ArrayBuffer>
  cuSeqlens: Int32Array<ArrayBuffer>
  lossMask: Uint8Array<ArrayBuffer>
  logprobs: Float32Array<ArrayBuffer>
  advantages: Float32Array<ArrayBuffer>
  /** [first, end) sample indices of each minibatch */
  minibatches: number[][]
}

/** Concatenate the groups' samples, checking every array against the offsets and the vocabulary. */
export function assemble(packs: PackedTrajectoriesMsg[], vocabSize: number): Batch {
  let samples = 0
  let tokens = 0
  packs.forEach((p, g) => {
    const n = p.offsets.length - 1
    const T = p.inputIds.length
    const bad = (why: string) => fail('TRN_ERR_BATCH', `group ${g} (${p.ref}): ${why}`, { ref: p.ref })
    if (n < 0 || p.offsets[0] !== 0 || p.offsets[n] !== T) throw bad('offsets do not span the tokens')
    for (const [name, a] of [
      ['lossMask', p.lossMask],
      ['logprobs', p.logprobs],
      ['versions', p.versions],
    ] as const)
      if (a.length !== T) throw bad(`${name} has ${a.length} entries for ${T} tokens`)
    if (p.rewards.length !== n) throw bad(`${p.rewards.length} rewards for ${n} samples`)
    for (let k = 0; k < n; k++) {
      if (p.offsets[k + 1]! <= p.offsets[k]!) throw bad(`sample ${k} is empty`)
      if (p.lossMask[p.offsets[k]!]) throw bad(`sample ${k}: its first token is in the loss mask`)
      if (!Number.isFinite(p.rewards[k]!)) throw bad(`sample ${k}: reward ${p.rewards[k]} is not finite`)
    }
    for (let t = 0; t < T; t++)
      if (p.inputIds[t]! < 0 || p.inputIds[t]! >= vocabSize)
        throw bad(`token ${t} = ${p.inputIds[t]} outside the vocabulary`)
    samples += n
    tokens += T
  })
  if (samples === 0) throw fail('TRN_ERR_BATCH', `the step's ${packs.length} group(s) hold no samples`)
  const b: Batch = {
    offsets: new Int32Array(samples + 1),
    inputIds: new Int32Array(tokens),
    lossMask: new Uint8Array(tokens),
    logprobs: new Float32Array(tokens),
    versions: new Int32Array(tokens),
    rewards: new Float64Array(samples),
    groups: new Int32Array(samples),
  }
  let k0 = 0
  let t0 = 0
  packs.forEach((p, g) => {
    b.inputIds.set(p.inputIds, t0)
    b.lossMask.set(p.lossMask, t0)
    b.logprobs.set(p.logprobs, t0)
    b.versions.set(p.versions, t0)
    const n = p.offsets.length - 1
    for (let k = 0; k < n; k++) {
      b.offsets[k0 + k + 1] = t0 + p.offsets[k + 1]!
      b.rewards[k0 + k] = p.rewards[k]!
      b.groups[k0 + k] = g
    }
    k0 += n
    t0 += p.inputIds.length
  })
  let loss = 0
  for (let t = 0; t < tokens; t++) loss += b.lossMask[t]!
  if (loss === 0) throw fail('TRN_ERR_BATCH', `the step's ${samples} samples have no loss tokens`)
  return b
}

/** Longest first onto the least-loaded bin; returns the bin of each item. */
function lpt(lengths: number[], bins: number): number[] {
  const load = new Array(bins).fill(0)
  const out = new Array(lengths.length).fill(0)
  const order = lengths.map((_, i) => i).sort((a, b) => lengths[b]! - lengths[a]! || a - b)
  for (const i of order) {
    let best = 0
    for (let j = 1; j < bins; j++) if (load[j] < load[best]) best = j
    out[i] = best
    load[best] += lengths[i]!
  }
  return out
}

/**
 * Split a batch (with its per-token advantages) into `minibatches` global minibatches, then each
 * minibatch over the ranks: minibatch m is the same data whatever the number of ranks.
 */
export function split(b: Batch, advantages: Float32Array, worldSize: number, minibatches: number): Shard[] {
  const n = b.offsets.length - 1
  const len = (k: number) => b.offsets[k + 1]! - b.offsets[k]!
  const lengths = Array.from({ length: n }, (_, k) => len(k))
  const mbOf = lpt(lengths, minibatches)
  // per rank, per minibatch: sample indices (null = dummy)
  const plan: (number | null)[][][] = Array.from({ length: worldSize }, () =>
    Array.from({ length: minibatches }, () => []),
  )
  for (let m = 0; m < minibatches; m++) {
    const inMb = lengths.map((_, k) => k).filter((k) => mbOf[k] === m)
    const rankOf = lpt(
      inMb.map((k) => lengths[k]!),
      worldSize,
    )
    for (const [i, k] of inMb.entries()) plan[rankOf[i]!]![m]!.push(k)
  }
  const shards: Shard[] = []
  for (let r = 0; r < worldSize; r++) {
    const ordered = plan[r]!
    for (const mb of ordered) if (mb.length === 0) mb.push(null) // dummy: keeps collectives in step
    const flat = ordered.flat()
    const T = flat.reduce<number>((a, k) => a + (k === null ? 2 : len(k)), 0)
    const s: Shard = {
      inputIds: new Int32Array(T),
      cuSeqlens: new Int32Array(flat.length + 1),
      lossMask: new Uint8Array(T),
      logprobs: new Float32Array(T),
      advantages: new Float32Array(T),
      minibatches: [],
    }
    let t = 0
    flat.forEach((k, i) => {
      if (k !== null) {
        const [a, e] = [b.offsets[k]!, b.offsets[k + 1]!]
        s.inputIds.set(b.inputIds.subarray(a, e), t)
        s.lossMask.set(b.lossMask.subarray(a, e), t)
        s.logprobs.set(b.logprobs.subarray(a, e), t)
        s.advantages.set(advantages.subarray(a, e), t)
        t += e - a
      } else t += 2
      s.cuSeqlens[i + 1] = t
    })
    let first = 0
    for (const mb of ordered) {
      s.minibatches.push([first, first + mb.length])
      first += mb.length
    }
    shards.push(s)
  }
  return shards
}

/** The micro-batches of one minibatch of a shard, each within `budget` tokens (a longer sample alone). */
export function microBatches(s: Shard, mb: number[], prox: Float32Array, budget: number): PpoMicroBatch[] {
  const out: PpoMicroBatch[] = []
  const [first, end] = [mb[0]!, mb[1]!]
  let k = first
  while (k < end) {
    let j = k + 1
    while (j < end && s.cuSeqlens[j + 1]! - s.cuSeqlens[k]! <= budget) j++
    const [a, e] = [s.cuSeqlens[k]!, s.cuSeqlens[j]!]
    const cu = new Int32Array(j - k + 1)
    for (let i = k; i <= j; i++) cu[i - k] = s.cuSeqlens[i]! - a
    out.push({
      inputIds: s.inputIds.slice(a, e),
      cuSeqlens: cu,
      lossMask: s.lossMask.slice(a, e),
      advantages: s.advantages.slice(a, e),
      proxLogprobs: prox.slice(a, e),
      behaveLogprobs: s.logprobs.slice(a, e),
    })
    k = j
  }
  return out
}
