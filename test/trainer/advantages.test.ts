import { expect } from 'chai'
import {
  ADV_EPS,
  type AdvantageConfig,
  computeAdvantages,
  shapeReward,
} from '../../actors/trainer/advantages.ts'

/**
 * Plain reference: per sample, per output token, written the obvious way (lists of numbers, no shared
 * helpers with the module under test).
 */
function reference(
  samples: { group: number; reward: number; mask: number[] }[],
  cfg: AdvantageConfig,
): number[][] {
  const out = samples.map((s) => {
    let r = (s.reward + cfg.bias) * cfg.scale
    if (cfg.clip > 0) r = Math.max(-cfg.clip, Math.min(cfg.clip, r))
    const lossIdx = s.mask.map((m, i) => (m ? i : -1)).filter((i) => i >= 0)
    const a = s.mask.map(() => 0)
    lossIdx.forEach((i, j) => {
      a[i] = r * (cfg.gamma * cfg.lam) ** (lossIdx.length - 1 - j)
    })
    return a
  })
  if (cfg.norm === 'none') return out
  const units =
    cfg.norm === 'batch'
      ? [samples.map((_, k) => k)]
      : [...new Set(samples.map((s) => s.group))].map((g) =>
          samples.map((s, k) => (s.group === g ? k : -1)).filter((k) => k >= 0),
        )
  for (const ks of units) {
    const xs = ks.flatMap((k) => out[k]!.filter((_, i) => samples[k]!.mask[i]))
    const mean = xs.reduce((a, b) => a + b, 0) / xs.length
    const std = Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / xs.length)
    for (const k of ks)
      out[k] = out[k]!.map((x, i) => (samples[k]!.mask[i] ? (x - mean) / (std + ADV_EPS) : 0))
  }
  return out
}

function pack(samples: { group: number; reward: number; mask: number[] }[]) {
  const offsets = new Int32Array(samples.length + 1)
  samples.forEach((s, k) => {
    offsets[k + 1] = offsets[k]! + s.mask.length
  })
  return {
    offsets,
    lossMask: Uint8Array.from(samples.flatMap((s) => s.mask)),
    rewards: samples.map((s) => s.reward),
    groups: samples.map((s) => s.group),
  }
}

const base: AdvantageConfig = { bias: 0, scale: 1, clip: 0, norm: 'batch', gamma: 1, lam: 1 }

describe('advantages', () => {
  describe('with a hand-computed batch of two groups', () => {
    // group 0: rewards 1 and 0 (2 and 1 loss tokens); group 1: reward 0.5 (3 loss tokens)
    const samples = [
      { group: 0, reward: 1, mask: [0, 0, 1, 1] },
      { group: 0, reward: 0, mask: [0, 1] },
      { group: 1, reward: 0.5, mask: [0, 1, 1, 1] },
    ]

    it('should give every output token its sample reward and prompt tokens zero without normalisation', () => {
      const { advantages } = computeAdvantages(pack(samples), { ...base, norm: 'none' })
      expect(Array.from(advantages)).to.deep.equal([0, 0, 1, 1, 0, 0, 0, 0.5, 0.5, 0.5])
    })

    it('should normalise over all loss tokens at batch level', () => {
      // loss-token values 1,1,0,.5,.5,.5: mean 3.5/6, population std sqrt(Σ(x−m)²/6)
      const m = 3.5 / 6
      const sd = Math.sqrt((2 * (1 - m) ** 2 + m ** 2 + 3 * (0.5 - m) ** 2) / 6)
      const { advantages, rawMean, rawStd } = computeAdvantages(pack(samples), base)
      expect(rawMean).to.be.closeTo(m, 1e-12)
      expect(rawStd).to.be.closeTo(sd, 1e-12)
      expect(advantages[2]).to.be.closeTo((1 - m) / (sd + 1e-5), 1e-6)
      expect(advantages[5]).to.be.closeTo((0 - m) / (sd + 1e-5), 1e-6)
      expect(advantages[0]).to.equal(0)
    })

    it('should normalise within each group at group level (a constant group becomes zero)', () => {
      const { advantages } = computeAdvantages(pack(samples), { ...base, norm: 'group' })
      // group 0: values 1,1,0 → mean 2/3, std sqrt(2/9)
      const sd = Math.sqrt(2 / 9)
      expect(advantages[2]).to.be.closeTo((1 - 2 / 3) / (sd + 1e-5), 1e-6)
      expect(advantages[5]).to.be.closeTo((0 - 2 / 3) / (sd + 1e-5), 1e-6)
      expect(Array.from(advantages.subarray(7))).to.deep.equal([0, 0, 0])
    })
  })

  describe('with random batches', () => {
    function random(seed: number) {
      let s = seed
      const rnd = () => {
        s = (s * 1103515245 + 12345) % 2147483648
        return s / 2147483648
      }
      return Array.from({ length: 12 }, (_, k) => {
        const n = 2 + Math.floor(rnd() * 9)
        const p = 1 + Math.floor(rnd() * (n - 1))
        return {
          group: k % 3,
          reward: rnd() * 4 - 2,
          mask: Array.from({ length: n }, (_, i) => (i >= p && rnd() > 0.1 ? 1 : 0)),
        }
      })
    }
    const cases: [string, Partial<AdvantageConfig>][] = [
      ['batch', { norm: 'batch' }],
      ['group', { norm: 'group' }],
      ['none with shaping and clipping', { norm: 'none', bias: -0.5, scale: 2, clip: 1.5 }],
      ['group with discount', { norm: 'group', gamma: 0.9, lam: 0.95, scale: 3 }],
    ]
    for (const [name, o] of cases) {
      it(`should match the plain reference (${name})`, () => {
        for (const seed of [1, 2, 3]) {
          const samples = random(seed)
          const cfg = { ...base, ...o }
          const got = Array.from(computeAdvantages(pack(samples), cfg).advantages)
          const want = reference(samples, cfg).flat()
          expect(got).to.have.length(want.length)
          for (const [i, g] of got.entries()) expect(g, `token ${i}`).to.be.closeTo(want[i]!, 1e-5)
        }
      })
    }
  })

  it('should shape rewards as clip((r + bias)·scale, ±clip)', () => {
    expect(shapeReward(1, { bias: 1, scale: 2, clip: 3 })).to.equal(3)
    expect(shapeReward(-5, { bias: 1, scale: 2, clip: 3 })).to.equal(-3)
    expect(shapeReward(0.25, { bias: -0.5, scale: 2, clip: 0 })).to.equal(-0.5)
  })
})
