import { expect } from 'chai'
import { createModel, type PpoLossConfig, type PpoLossInputs, ppoLoss } from '../../native/index.ts'
import { debugConfig, microBatch, rng } from './helpers.ts'
import { ppoLossReference, type RefInputs } from './ppo-reference.ts'

function randomInputs(seed: number, lengths: number[]): RefInputs & PpoLossInputs {
  const r = rng(seed)
  const T = lengths.reduce((a, b) => a + b, 0)
  const cuSeqlens = new Int32Array(lengths.length + 1)
  lengths.forEach((l, i) => {
    cuSeqlens[i + 1] = cuSeqlens[i]! + l
  })
  const logprobs = new Float64Array(T)
  const proxLogprobs = new Float64Array(T)
  const behaveLogprobs = new Float64Array(T)
  const advantages = new Float64Array(T)
  const lossMask = new Uint8Array(T)
  for (let s = 0; s < lengths.length; s++) {
    const a = r() * 4 - 2
    for (let t = cuSeqlens[s]!; t < cuSeqlens[s + 1]!; t++) {
      proxLogprobs[t] = -Math.abs(r() * 5)
      // log-ratios spread over ±0.6, a tenth of them +1.5 (ρ > 3), so every branch (inside, clipped
      // low/high, dual) is taken
      logprobs[t] = proxLogprobs[t]! + (r() - 0.5) * 1.2 + (r() < 0.1 ? 1.5 : 0)
      behaveLogprobs[t] = proxLogprobs[t]! + (r() - 0.5) * 2.4
      advantages[t] = a + (r() - 0.5)
      lossMask[t] = t > cuSeqlens[s]! && r() < 0.85 ? 1 : 0
    }
  }
  return { logprobs, proxLogprobs, behaveLogprobs, advantages, lossMask, cuSeqlens }
}

function relClose(a: number, b: number, rel: number): boolean {
  return Math.abs(a - b) <= rel * Math.max(1, Math.abs(b))
}

const combos: PpoLossConfig[] = []
for (const epsClipHigher of [undefined, 0.28])
  for (const dualClip of [0, 3])
    for (const cap of [
      { behavImpWeightCap: 0 },
      { behavImpWeightCap: 1.5, behavImpWeightMode: 'mask' as const },
      { behavImpWeightCap: 1.5, behavImpWeightMode: 'clamp' as const },
    ])
      for (const sequenceLevel of [false, true])
        combos.push({ epsClip: 0.2, epsClipHigher, dualClip, ...cap, sequenceLevel })

describe('the PPO loss on random float64 inputs', () => {
  for (const cfg of combos) {
    it(`should equal the TypeScript reference and its gradient for ${JSON.stringify(cfg)}`, () => {
      for (const seed of [1, 2, 3]) {
        const x = randomInputs(seed * 7919, [9, 1 + seed, 14, 6])
        const got = ppoLoss(x, cfg)
        const ref = ppoLossReference(x, cfg)
        // float64 on both sides; only summation order differs: 1e-6 relative is the bound
        expect(relClose(got.loss, ref.loss, 1e-6), `loss ${got.loss} vs ${ref.loss}`).to.equal(true)
        expect(got.grad).to.be.instanceOf(Float64Array)
        for (let t = 0; t < ref.grad.length; t++) {
          const ok = Math.abs(got.grad[t]! - ref.grad[t]!) <= 1e-6 * Math.max(Math.abs(ref.grad[t]!), 1e-9)
          expect(ok, `grad[${t}] ${got.grad[t]} vs ${ref.grad[t]}`).to.equal(true)
        }
        expect(got.stats.clipFraction).to.be.closeTo(ref.clipFraction, 1e-12)
        expect(got.stats.dualClipFraction).to.be.closeTo(ref.dualClipFraction, 1e-12)
        expect(got.stats.behavCappedFraction).to.be.closeTo(ref.behavCappedFraction, 1e-12)
        expect(got.stats.ratioMax).to.be.closeTo(ref.ratioMax, 1e-12)
        expect(got.stats.ratioMean).to.be.closeTo(ref.ratioMean, 1e-12)
        expect(got.stats.approxKl).to.be.closeTo(ref.approxKl, 1e-12)
      }
    })
  }

  it('should take every branch somewhere in the random inputs', () => {
    const x = randomInputs(5, [40, 40])
    const r = ppoLossReference(x, { epsClip: 0.2, dualClip: 3, behavImpWeightCap: 1.5 })
    expect(r.clipFraction).to.be.greaterThan(0)
    expect(r.dualClipFraction).to.be.greaterThan(0)
    expect(r.behavCappedFraction).to.be.greaterThan(0)
  })

  it('should divide by a given global token count', () => {
    const x = randomInputs(11, [8, 8])
    const a = ppoLoss(x, {})
    const b = ppoLoss(x, {}, 1000)
    const n = x.lossMask.reduce((s, v) => s + v, 0)
    expect(b.loss).to.be.closeTo((a.loss * n) / 1000, 1e-12)
  })

  it('should reject a dual clip of at most 1 with TRN_ERR_ARG', () => {
    const x = randomInputs(1, [4])
    expect(() => ppoLoss(x, { dualClip: 0.5 }))
      .to.throw()
      .with.property('code', 'TRN_ERR_ARG')
  })
})

describe('a model computing the PPO loss', () => {
  it('should report the loss the reference gives on its own log-probs', async () => {
    const config = debugConfig({ vocab_size: 128 })
    const model = await createModel({ config, seed: 3, dtype: 'float64' })
    const mb = microBatch([7, 9, 5], 128, 4, { behaveNoise: 1 })
    const cfg: PpoLossConfig = { epsClip: 0.2, dualClip: 3, behavImpWeightCap: 1.5, temperature: 0.9 }
    const { stats } = await model.gradients([mb], cfg)
    const lp = await model.logprobs(mb, { temperature: 0.9 })
    const ref = ppoLossReference(
      {
        logprobs: Float64Array.from(lp.logprobs),
        proxLogprobs: mb.proxLogprobs,
        behaveLogprobs: mb.behaveLogprobs,
        advantages: mb.advantages,
        lossMask: mb.lossMask,
        cuSeqlens: mb.cuSeqlens,
      },
      cfg,
    )
    // the model side scores in float64; logprobs() hands back float32 (≈1e-7 relative on ~5)
    expect(stats.loss).to.be.closeTo(ref.loss, 1e-5)
    expect(stats.tokens).to.equal(mb.lossMask.reduce((s, v) => s + v, 0))
    model.dispose()
  })
})
