/**
 * Reward shaping and critic-free advantages (DESIGN §5), per token of a batch of packed samples.
 *
 *   r' = clip((r + bias)·scale, ±clip)                     (clip 0 = off)
 *   A_t = r' · (γλ)^(loss tokens after t in its sample)    (γ = λ = 1: every output token gets r')
 *   normalisation over loss tokens — of the whole batch, or of each group (samples of one groupId):
 *   A ← (A − mean) / (std + 1e-5), std the population standard deviation (as AReaL's masked
 *   normalisation: token-weighted, so long samples weigh more)
 * Tokens outside the loss mask get 0. Sums run in float64.
 */

export const ADV_EPS = 1e-5

export interface AdvantageConfig {
  bias: number
  scale: number
  /** 0 = no clipping */
  clip: number
  norm: 'batch' | 'group' | 'none'
  gamma: number
  lam: number
}

export interface AdvantageInput {
  /** sample k spans [offsets[k], offsets[k+1]) */
  offsets: Int32Array
  lossMask: Uint8Array
  /** raw reward per sample */
  rewards: Float32Array | Float64Array | number[]
  /** group index per sample (normalisation unit for norm = 'group') */
  groups: Int32Array | number[]
}

export function shapeReward(r: number, cfg: Pick<AdvantageConfig, 'bias' | 'scale' | 'clip'>): number {
  const x = (r + cfg.bias) * cfg.scale
  return cfg.clip > 0 ? Math.min(cfg.clip, Math.max(-cfg.clip, x)) : x
}

/** Per-token advantages (Float32Array aligned with the tokens) and the pre-normalisation moments. */
export function computeAdvantages(
  inp: AdvantageInput,
  cfg: AdvantageConfig,
): { advantages: Float32Array; rawMean: number; rawStd: number } {
  const nSamples = inp.offsets.length - 1
  const T = inp.offsets[nSamples] ?? 0
  const adv = new Float64Array(T)
  const decay = cfg.gamma * cfg.lam
  for (let k = 0; k < nSamples; k++) {
    const r = shapeReward(Number(inp.rewards[k]), cfg)
    let after = 0
    for (let t = inp.offsets[k + 1]! - 1; t >= inp.offsets[k]!; t--) {
      if (!inp.lossMask[t]) continue
      adv[t] = decay === 1 ? r : r * decay ** after
      after++
    }
  }
  const all = moments(adv, inp, () => true)
  if (cfg.norm === 'batch') normalise(adv, inp, all, () => true)
  else if (cfg.norm === 'group') {
    for (const g of new Set(Array.from(inp.groups))) {
      const inGroup = (k: number) => inp.groups[k] === g
      normalise(adv, inp, moments(adv, inp, inGroup), inGroup)
    }
  }
  return { advantages: Float32Array.from(adv), rawMean: all.mean, rawStd: all.std }
}

function moments(adv: Float64Array, inp: AdvantageInput, take: (k: number) => boolean) {
  // two passes (mean, then squared deviations): no cancellation when |mean| >> std
  const each = (fn: (x: number) => void) => {
    for (let k = 0; k + 1 < inp.offsets.length; k++) {
      if (!take(k)) continue
      for (let t = inp.offsets[k]!; t < inp.offsets[k + 1]!; t++) if (inp.lossMask[t]) fn(adv[t]!)
    }
  }
  let n = 0
  let sum = 0
  each((x) => {
    n++
    sum += x
  })
  const mean = n ? sum / n : 0
  let sq = 0
  each((x) => {
    sq += (x - mean) * (x - mean)
  })
  return { mean, std: n ? Math.sqrt(sq / n) : 0 }
}

function normalise(
  adv: Float64Array,
  inp: AdvantageInput,
  m: { mean: number; std: number },
  take: (k: number) => boolean,
): void {
  for (let k = 0; k + 1 < inp.offsets.length; k++) {
    if (!take(k)) continue
    for (let t = inp.offsets[k]!; t < inp.offsets[k + 1]!; t++)
      if (inp.lossMask[t]) adv[t] = (adv[t]! - m.mean) / (m.std + ADV_EPS)
  }
}
