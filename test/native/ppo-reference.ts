/**
 * A plain TypeScript reference of the decoupled PPO loss (DESIGN §5), written from the formulas, with
 * its gradient w.r.t. the current log-probs derived by hand (no autograd). The native loss is tested
 * against it.
 *
 * Per loss token t (mask m_t = 1), ρ_t = exp(logπθ_t − logπprox_t); with the sequence-level option,
 * log ρ_t = (1/n_s) Σ_{u ∈ s, m_u = 1} (logπθ_u − logπprox_u) for every token of sequence s (n_s its loss
 * tokens). L_t = max(−A_t·ρ_t, −A_t·clip(ρ_t, 1−ε, 1+ε_high)), the unclipped branch on ties; dual clip
 * c: L_t = min(L_t, c·|A_t|); decoupled weight w_t = exp(logπprox_t − logπbehave_t), with a cap either
 * dropping (w_t = 0 when w_t > cap) or clamping (min(w_t, cap)). loss = Σ_t m_t·w_t·L_t / denom.
 */
import type { PpoLossConfig } from '../../native/index.ts'

export interface RefInputs {
  logprobs: Float64Array
  proxLogprobs: ArrayLike<number>
  behaveLogprobs?: ArrayLike<number>
  advantages: ArrayLike<number>
  lossMask: Uint8Array
  cuSeqlens: Int32Array
}

export interface RefResult {
  loss: number
  grad: Float64Array
  clipFraction: number
  dualClipFraction: number
  behavCappedFraction: number
  ratioMean: number
  ratioMax: number
  approxKl: number
}

export function ppoLossReference(x: RefInputs, cfg: PpoLossConfig, denomIn?: number): RefResult {
  const T = x.logprobs.length
  const eps = cfg.epsClip ?? 0.2
  const epsHi = cfg.epsClipHigher ?? eps
  const c = cfg.dualClip ?? 0
  const cap = cfg.behavImpWeightCap ?? 0
  const mode = cfg.behavImpWeightMode ?? 'mask'
  let tokens = 0
  for (let t = 0; t < T; t++) tokens += x.lossMask[t]!
  const denom = denomIn ?? tokens

  // log ρ per token (token- or sequence-level)
  const logRatio = new Float64Array(T)
  const seqOf = new Int32Array(T)
  const seqCount: number[] = []
  for (let s = 0; s + 1 < x.cuSeqlens.length; s++) {
    let sum = 0
    let n = 0
    for (let t = x.cuSeqlens[s]!; t < x.cuSeqlens[s + 1]!; t++) {
      seqOf[t] = s
      if (x.lossMask[t]) {
        sum += x.logprobs[t]! - x.proxLogprobs[t]!
        n++
      }
    }
    seqCount.push(Math.max(1, n))
    for (let t = x.cuSeqlens[s]!; t < x.cuSeqlens[s + 1]!; t++) {
      logRatio[t] = cfg.sequenceLevel ? sum / Math.max(1, n) : x.logprobs[t]! - x.proxLogprobs[t]!
    }
  }

  let loss = 0
  let clipped = 0
  let dual = 0
  let capped = 0
  let ratioSum = 0
  let ratioMax = 0
  let kl = 0
  const dLogRatio = new Float64Array(T) // d loss / d log ρ_t
  for (let t = 0; t < T; t++) {
    const m = x.lossMask[t]!
    const A = x.advantages[t]!
    const r = Math.exp(logRatio[t]!)
    const rc = Math.min(Math.max(r, 1 - eps), 1 + epsHi)
    const l1 = -A * r
    const l2 = -A * rc
    let L: number
    let dLdr: number
    if (l2 > l1) {
      L = l2
      dLdr = r >= 1 - eps && r <= 1 + epsHi ? -A : 0
      if (m) clipped++
    } else {
      L = l1
      dLdr = -A
    }
    if (c > 0 && c * Math.abs(A) < L) {
      L = c * Math.abs(A)
      dLdr = 0
      if (m) dual++
    }
    let w = 1
    if (x.behaveLogprobs) {
      w = Math.exp(x.proxLogprobs[t]! - x.behaveLogprobs[t]!)
      if (cap > 0 && w > cap) {
        w = mode === 'mask' ? 0 : cap
        if (m) capped++
      }
    }
    loss += (m * w * L) / denom
    dLogRatio[t] = (m * w * dLdr * r) / denom
    if (m) {
      ratioSum += r
      ratioMax = Math.max(ratioMax, r)
      const tr = x.logprobs[t]! - x.proxLogprobs[t]!
      kl += Math.exp(tr) - 1 - tr
    }
  }

  const grad = new Float64Array(T)
  if (!cfg.sequenceLevel) {
    grad.set(dLogRatio)
  } else {
    const perSeq = new Float64Array(seqCount.length)
    for (let t = 0; t < T; t++) perSeq[seqOf[t]!] += dLogRatio[t]!
    for (let t = 0; t < T; t++) grad[t] = x.lossMask[t] ? perSeq[seqOf[t]!]! / seqCount[seqOf[t]!]! : 0
  }
  const n = Math.max(1, tokens)
  return {
    loss,
    grad,
    clipFraction: clipped / n,
    dualClipFraction: dual / n,
    behavCappedFraction: capped / n,
    ratioMean: ratioSum / n,
    ratioMax,
    approxKl: kl / n,
  }
}
