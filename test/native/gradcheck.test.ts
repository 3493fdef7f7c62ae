import { expect } from 'chai'
import {
  createModel,
  type HfQwen3Config,
  type Model,
  type PpoLossConfig,
  type PpoMicroBatch,
} from '../../native/index.ts'
import { debugConfig, microBatch, rng } from './helpers.ts'

// Central differences in float64: truncation error ~h²·f''' ≈ 1e-12 and rounding ≈ 1e-16/h ≈ 1e-10 for
// h = 1e-6, so analytic and numeric gradients agree to ~1e-9 absolute; 1e-6 relative + 1e-8 absolute
// leaves margin and still catches any wrong backward (those are off by O(1) relative).
const H = 1e-6
const REL = 1e-6
const ABS = 1e-8

const variants: { name: string; over: Partial<HfQwen3Config>; loss?: PpoLossConfig }[] = [
  {
    name: 'untied head and attention biases',
    over: { vocab_size: 64, tie_word_embeddings: false, attention_bias: true },
  },
  { name: 'tied embeddings', over: { vocab_size: 64 } },
  { name: 'tied embeddings, sequence-level ratio', over: { vocab_size: 64 }, loss: { sequenceLevel: true } },
  {
    name: 'untied head, entropy bonus',
    over: { vocab_size: 64, tie_word_embeddings: false },
    loss: { entropyCoef: 0.3 },
  },
]

async function lossAt(model: Model, mbs: PpoMicroBatch[], cfg: PpoLossConfig): Promise<number> {
  return (await model.gradients(mbs, cfg)).stats.loss
}

describe('a float64 debug model under finite differences', () => {
  for (const v of variants) {
    it(`should match the analytic gradient of every parameter tensor (${v.name})`, async function () {
      this.timeout(120_000)
      const config = debugConfig(v.over)
      const model = await createModel({ config, seed: 5, dtype: 'float64' })
      const cfg: PpoLossConfig = { epsClip: 0.2, temperature: 0.8, behavImpWeightCap: 5, ...v.loss }
      const base = microBatch([6, 5], 64, 9, { behaveNoise: 0.4 })
      const lp = await model.logprobs(base, { temperature: 0.8 })
      // prox within ±0.05 of the current policy: ρ stays inside the clip range, where the loss is smooth
      const r = rng(17)
      // and behave within ±0.2 of prox (weights 0.8–1.2, under the cap)
      const prox = new Float64Array(lp.logprobs.length)
      const behave = new Float64Array(lp.logprobs.length)
      for (let i = 0; i < prox.length; i++) {
        prox[i] = lp.logprobs[i]! + (r() - 0.5) * 0.1
        behave[i] = prox[i]! + (r() - 0.5) * 0.4
      }
      const mbs = [{ ...base, proxLogprobs: prox, behaveLogprobs: behave }]
      const { grads } = await model.gradients(mbs, cfg)
      const params = await model.parameters()
      const names = Object.keys(params)
      expect(names.length).to.equal(model.params.length)
      if (v.over.attention_bias) expect(names).to.include('model.layers.0.self_attn.o_proj.bias')
      if (v.over.tie_word_embeddings === false) expect(names).to.include('lm_head.weight')
      for (const name of names) {
        const p = params[name]! as Float64Array
        const g = grads[name]! as Float64Array
        expect(g).to.be.instanceOf(Float64Array)
        // the largest gradient entry and two random ones
        let top = 0
        for (let i = 1; i < g.length; i++) if (Math.abs(g[i]!) > Math.abs(g[top]!)) top = i
        const picks = [top, Math.floor(r() * p.length), Math.floor(r() * p.length)]
        for (const i of picks) {
          const orig = p[i]!
          const q = Float64Array.from(p)
          q[i] = orig + H
          model.setParameter(name, q)
          const up = await lossAt(model, mbs, cfg)
          q[i] = orig - H
          model.setParameter(name, q)
          const down = await lossAt(model, mbs, cfg)
          q[i] = orig
          model.setParameter(name, q)
          const num = (up - down) / (2 * H)
          const ana = g[i]!
          expect(Math.abs(num - ana), `${name}[${i}]: numeric ${num} vs analytic ${ana}`).to.be.at.most(
            REL * Math.abs(ana) + ABS,
          )
        }
        expect(Math.abs(g[top]!), `${name} has an all-zero gradient`).to.be.greaterThan(0)
      }
      model.dispose()
    })
  }
})
