/**
 * Trajectory export: a session's completions become training samples, packed into flat typed arrays
 * (one buffer per field, `offsets` delimiting samples) that travel by reference: the controller gets
 * metadata and a ref, the trainer fetches the arrays from the proxy once, and the proxy frees them then.
 *
 * Per sample: input_ids = prompt ++ output, loss_mask = 0…0 1…1, logprobs = 0…0 ++ engine log-probs,
 * versions = -1…-1 ++ per-token versions. Styles:
 * - individual: every completion is a sample;
 * - concat: one sample per conversation branch (a leaf and its exact-prefix ancestors); every ancestor's
 *   output is trained inside the leaf's sequence, checked token for token before it is trusted.
 * Rewards are discounted backwards over the session's turns: G_i = r_i + γ·G_{i+1} (unset r_i = 0).
 */
import type { CompletionRecord, Session } from './session.ts'

export type ExportStyle = 'individual' | 'concat'

export interface PackedTrajectories {
  ref: string
  style: ExportStyle
  sessionIds: string[]
  /** samples: sample k spans [offsets[k], offsets[k+1]) of the token arrays */
  offsets: Int32Array<ArrayBuffer>
  inputIds: Int32Array<ArrayBuffer>
  lossMask: Uint8Array<ArrayBuffer>
  logprobs: Float32Array<ArrayBuffer>
  versions: Int32Array<ArrayBuffer>
  rewards: Float32Array<ArrayBuffer>
  /** index into sessionIds, per sample */
  sampleSession: Int32Array<ArrayBuffer>
  /** completion ids each sample covers, per sample */
  completionIds: string[][]
}

export interface TrajectoryMeta {
  ref: string
  style: ExportStyle
  sessionIds: string[]
  samples: number
  tokens: number
  trainableTokens: number
  rewards: number[]
  minVersion: number
  maxVersion: number
  bytes: number
}

interface Sample {
  session: number
  ids: Int32Array
  mask: Uint8Array
  lps: Float32Array
  vers: Int32Array
  reward: number
  completions: string[]
}

/** G_i = r_i + γ·G_{i+1} over the session's completions in creation order. */
export function discountedRewards(
  completions: readonly CompletionRecord[],
  gamma: number,
): Map<string, number> {
  const out = new Map<string, number>()
  let g = 0
  for (let i = completions.length - 1; i >= 0; i--) {
    const c = completions[i]!
    g = (c.reward ?? 0) + gamma * g
    out.set(c.id, g)
  }
  return out
}

function single(c: CompletionRecord, session: number, reward: number): Sample {
  const p = c.promptIds.length
  const n = p + c.outputIds.length
  const ids = new Int32Array(n)
  ids.set(c.promptIds)
  ids.set(c.outputIds, p)
  const mask = new Uint8Array(n).fill(1, p)
  const lps = new Float32Array(n)
  lps.set(c.logprobs, p)
  const vers = new Int32Array(n).fill(-1)
  vers.set(c.versions, p)
  return { session, ids, mask, lps, vers, reward, completions: [c.id] }
}

function startsWith(a: Int32Array, b: Int32Array, at = 0): boolean {
  if (at + b.length > a.length) return false
  for (let i = 0; i < b.length; i++) if (a[at + i] !== b[i]) return false
  return true
}

/** Samples of one session in the given style. */
export function sessionSamples(
  s: Session,
  sessionIndex: number,
  style: ExportStyle,
  gamma: number,
): Sample[] {
  const g = discountedRewards(s.completions, gamma)
  if (style === 'individual') return s.completions.map((c) => single(c, sessionIndex, g.get(c.id)!))
  const hasChild = new Set<string>()
  for (const c of s.completions) if (c.parent) hasChild.add(c.parent.id)
  const out: Sample[] = []
  const covered = new Set<string>()
  // Leaves first, newest last; then any ancestor the exact-prefix check cut loose becomes its own leaf.
  const leaves = s.completions.filter((c) => !hasChild.has(c.id))
  for (let k = 0; k < leaves.length; k++) {
    const leaf = leaves[k]!
    const sample = single(leaf, sessionIndex, g.get(leaf.id)!)
    covered.add(leaf.id)
    for (let a = leaf.parent; a; a = a.parent) {
      const at = a.promptIds.length
      if (!startsWith(sample.ids, a.promptIds) || !startsWith(sample.ids, a.outputIds, at)) {
        if (!covered.has(a.id)) leaves.push(a)
        break
      }
      sample.mask.fill(1, at, at + a.outputIds.length)
      sample.lps.set(a.logprobs, at)
      sample.vers.set(a.versions, at)
      sample.completions.unshift(a.id)
      covered.add(a.id)
    }
    out.push(sample)
  }
  return out
}

export function pack(
  ref: string,
  style: ExportStyle,
  sessions: Session[],
  gamma: number,
): PackedTrajectories {
  const samples = sessions.flatMap((s, i) => sessionSamples(s, i, style, gamma))
  const offsets = new Int32Array(samples.length + 1)
  for (let k = 0; k < samples.length; k++) offsets[k + 1] = offsets[k]! + samples[k]!.ids.length
  const total = offsets[samples.length]!
  const inputIds = new Int32Array(total)
  const lossMask = new Uint8Array(total)
  const logprobs = new Float32Array(total)
  const versions = new Int32Array(total)
  samples.forEach((x, k) => {
    const o = offsets[k]!
    inputIds.set(x.ids, o)
    lossMask.set(x.mask, o)
    logprobs.set(x.lps, o)
    versions.set(x.vers, o)
  })
  return {
    ref,
    style,
    sessionIds: sessions.map((s) => s.id),
    offsets,
    inputIds,
    lossMask,
    logprobs,
    versions,
    rewards: Float32Array.from(samples.map((x) => x.reward)),
    sampleSession: Int32Array.from(samples.map((x) => x.session)),
    completionIds: samples.map((x) => x.completions),
  }
}

export function describe(p: PackedTrajectories): TrajectoryMeta {
  let trainable = 0
  let minV = Number.POSITIVE_INFINITY
  let maxV = Number.NEGATIVE_INFINITY
  for (let i = 0; i < p.lossMask.length; i++) {
    if (p.lossMask[i]) {
      trainable++
      const v = p.versions[i]!
      if (v < minV) minV = v
      if (v > maxV) maxV = v
    }
  }
  return {
    ref: p.ref,
    style: p.style,
    sessionIds: p.sessionIds,
    samples: p.offsets.length - 1,
    tokens: p.inputIds.length,
    trainableTokens: trainable,
    rewards: Array.from(p.rewards),
    minVersion: trainable ? minV : -1,
    maxVersion: trainable ? maxV : -1,
    bytes:
      p.offsets.byteLength +
      p.inputIds.byteLength +
      p.lossMask.byteLength +
      p.logprobs.byteLength +
      p.versions.byteLength +
      p.rewards.byteLength +
      p.sampleSession.byteLength,
  }
}

/** Unpack sample k (views, no copy) — for tests and consumers. */
export function sampleAt(p: PackedTrajectories, k: number) {
  const a = p.offsets[k]!
  const b = p.offsets[k + 1]!
  return {
    inputIds: p.inputIds.subarray(a, b),
    lossMask: p.lossMask.subarray(a, b),
    logprobs: p.logprobs.subarray(a, b),
    versions: p.versions.subarray(a, b),
    reward: p.rewards[k]!,
    completionIds: p.completionIds[k]!,
  }
}
