import { expect } from 'chai'
import {
  createModel,
  lrAt,
  type Model,
  type OptimizerConfig,
  type PpoLossConfig,
  type PpoMicroBatch,
} from '../../native/index.ts'
import { debugConfig, microBatch } from './helpers.ts'

/** torch.optim.AdamW semantics, with decay on matrices only and global-norm clipping first. */
class AdamWReference {
  m = new Map<string, Float64Array>()
  v = new Map<string, Float64Array>()
  t = 0
  constructor(
    readonly cfg: OptimizerConfig,
    readonly shapes: Map<string, number[]>,
  ) {}
  step(params: Record<string, Float64Array>, grads: Record<string, Float64Array>, lr: number): void {
    const [b1, b2] = this.cfg.betas ?? [0.9, 0.999]
    const eps = this.cfg.eps ?? 1e-8
    const wd = this.cfg.weightDecay ?? 0
    let sq = 0
    for (const g of Object.values(grads)) for (const x of g) sq += x * x
    const norm = Math.sqrt(sq)
    const max = this.cfg.maxGradNorm ?? 1
    const coef = max > 0 ? Math.min(1, max / (norm + 1e-6)) : 1
    this.t++
    for (const [name, p] of Object.entries(params)) {
      const g = grads[name]!
      const m = this.m.get(name) ?? new Float64Array(p.length)
      const v = this.v.get(name) ?? new Float64Array(p.length)
      const decay = this.shapes.get(name)!.length >= 2 ? wd : 0
      for (let i = 0; i < p.length; i++) {
        const gi = g[i]! * coef
        m[i] = b1 * m[i]! + (1 - b1) * gi
        v[i] = b2 * v[i]! + (1 - b2) * gi * gi
        p[i] = p[i]! - lr * decay * p[i]!
        const denom = Math.sqrt(v[i]!) / Math.sqrt(1 - b2 ** this.t) + eps
        p[i] = p[i]! - (lr / (1 - b1 ** this.t)) * (m[i]! / denom)
      }
      this.m.set(name, m)
      this.v.set(name, v)
    }
  }
}

function lrReference(cfg: OptimizerConfig, step: number): number {
  const s = cfg.schedule ?? { kind: 'constant' }
  const warm = s.warmupSteps ?? 0
  if (warm > 0 && step < warm) return (cfg.lr * (step + 1)) / warm
  if (s.kind === 'constant') return cfg.lr
  const min = s.minLrRatio ?? 0
  const p = Math.min(1, Math.max(0, (step - warm) / (s.totalSteps! - warm)))
  const f = s.kind === 'linear' ? 1 - (1 - min) * p : min + (1 - min) * 0.5 * (1 + Math.cos(Math.PI * p))
  return cfg.lr * f
}

function merge(a: PpoMicroBatch, b: PpoMicroBatch): PpoMicroBatch {
  const cat = <T extends Float32Array | Float64Array | Uint8Array | Int32Array>(x: T, y: T): T => {
    const out = new (x.constructor as new (n: number) => T)(x.length + y.length)
    out.set(x)
    out.set(y, x.length)
    return out
  }
  const cu = new Int32Array(a.cuSeqlens.length + b.cuSeqlens.length - 1)
  cu.set(a.cuSeqlens)
  const T = a.inputIds.length
  for (let i = 1; i < b.cuSeqlens.length; i++) cu[a.cuSeqlens.length - 1 + i] = T + b.cuSeqlens[i]!
  return {
    inputIds: cat(a.inputIds, b.inputIds),
    cuSeqlens: cu,
    lossMask: cat(a.lossMask, b.lossMask),
    advantages: cat(a.advantages as Float32Array, b.advantages as Float32Array),
    proxLogprobs: cat(a.proxLogprobs as Float32Array, b.proxLogprobs as Float32Array),
    behaveLogprobs: cat(a.behaveLogprobs as Float32Array, b.behaveLogprobs as Float32Array),
  }
}

const config = debugConfig({ vocab_size: 96, tie_word_embeddings: false })
const loss: PpoLossConfig = { epsClip: 0.2, behavImpWeightCap: 5 }

describe('a float64 model taking optimizer steps', () => {
  let model: Model
  beforeEach(async () => {
    model = await createModel({ config, seed: 11, dtype: 'float64' })
  })
  afterEach(() => model.dispose())

  it('should update weights exactly as a reference AdamW with clipping, decay and warm-up', async () => {
    const opt: OptimizerConfig = {
      lr: 0.01,
      betas: [0.8, 0.95],
      eps: 1e-6,
      weightDecay: 0.1,
      maxGradNorm: 0.05,
      schedule: { kind: 'cosine', warmupSteps: 2, totalSteps: 6, minLrRatio: 0.1 },
    }
    const shapes = new Map(model.params.map((p) => [p.name, p.shape]))
    const ref = new AdamWReference(opt, shapes)
    const params = (await model.parameters()) as Record<string, Float64Array>
    const mb = microBatch([8, 6], 96, 2)
    let clippedOnce = false
    for (let s = 0; s < 3; s++) {
      const { grads } = await model.gradients([mb], loss)
      const stats = await model.ppoStep([mb], loss, opt)
      expect(stats.step).to.equal(s + 1)
      expect(stats.lr).to.be.closeTo(lrReference(opt, s), 1e-15)
      if (stats.gradNorm > 0.05) clippedOnce = true
      ref.step(params, grads as Record<string, Float64Array>, stats.lr)
      const got = (await model.parameters()) as Record<string, Float64Array>
      for (const [name, p] of Object.entries(params)) {
        let worst = 0
        for (let i = 0; i < p.length; i++) worst = Math.max(worst, Math.abs(got[name]![i]! - p[i]!))
        // same float64 arithmetic, different operation order: ~1e-16 per op
        expect(worst, `${name} after step ${s + 1}`).to.be.at.most(1e-12)
      }
    }
    expect(clippedOnce, 'the test should exercise clipping').to.equal(true)
    expect(model.step).to.equal(3)
  })

  it('should weight micro-batches by token count, like one packed batch', async () => {
    const a = microBatch([9, 4], 96, 3)
    const b = microBatch([5], 96, 4)
    const split = await model.gradients([a, b], loss)
    const whole = await model.gradients([merge(a, b)], loss)
    expect(split.stats.tokens).to.equal(whole.stats.tokens)
    expect(split.stats.loss).to.be.closeTo(whole.stats.loss, 1e-12)
    for (const name of Object.keys(whole.grads)) {
      const x = split.grads[name]!
      const y = whole.grads[name]!
      let worst = 0
      for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i]! - y[i]!))
      expect(worst, name).to.be.at.most(1e-12)
    }
  })

  it('should give the same gradients whether the logits are split in chunks or not', async () => {
    // the real vocabulary: 2^22 / 151936 = 27 logits rows per chunk, so 3 sequences of 20 tokens in one
    // micro-batch cross chunk boundaries, while one sequence per micro-batch fits in one chunk
    const big = await createModel({ config: debugConfig(), seed: 3, dtype: 'float64' })
    const V = 151936
    const parts = [microBatch([20], V, 31), microBatch([20], V, 32), microBatch([20], V, 33)]
    const joined = merge(merge(parts[0]!, parts[1]!), parts[2]!)
    const a = await big.gradients(parts, loss)
    const b = await big.gradients([joined], loss)
    expect(a.stats.loss).to.be.closeTo(b.stats.loss, 1e-12)
    for (const name of Object.keys(a.grads)) {
      const x = a.grads[name]!
      const y = b.grads[name]!
      let worst = 0
      let scale = 0
      for (let i = 0; i < x.length; i++) {
        worst = Math.max(worst, Math.abs(x[i]! - y[i]!))
        scale = Math.max(scale, Math.abs(y[i]!))
      }
      expect(scale, `${name} gradient is zero`).to.be.greaterThan(0)
      expect(worst, name).to.be.at.most(1e-12 * Math.max(1, scale))
    }
    big.dispose()
  })

  it('should skip the update and keep the weights when the gradient is not finite', async () => {
    const before = await model.parameters()
    const mb = microBatch([6], 96, 5)
    mb.advantages[3] = Number.NaN
    const stats = await model.ppoStep([mb], loss, { lr: 0.1 })
    expect(stats.skipped).to.equal(true)
    expect(stats.step).to.equal(0)
    const after = await model.parameters()
    const n = 'model.layers.0.mlp.up_proj.weight'
    expect(Array.from(after[n]!)).to.deep.equal(Array.from(before[n]!))
  })

  it('should reject a batch without loss tokens and a mask on a first token with TRN_ERR_ARG', async () => {
    const mb = microBatch([6], 96, 6)
    mb.lossMask.fill(0)
    const e1 = await model.ppoStep([mb], loss, { lr: 0.1 }).catch((e) => e)
    expect(e1.code).to.equal('TRN_ERR_ARG')
    mb.lossMask[0] = 1
    const e2 = await model.ppoStep([mb], loss, { lr: 0.1 }).catch((e) => e)
    expect(e2.code).to.equal('TRN_ERR_ARG')
    expect(e2.message).to.match(/first token/)
  })
})

describe('the learning-rate schedule', () => {
  const cases: OptimizerConfig[] = [
    { lr: 1e-3 },
    { lr: 1e-3, schedule: { kind: 'constant', warmupSteps: 4 } },
    { lr: 2e-4, schedule: { kind: 'linear', warmupSteps: 3, totalSteps: 20, minLrRatio: 0.05 } },
    { lr: 5e-4, schedule: { kind: 'cosine', totalSteps: 15 } },
    { lr: 5e-4, schedule: { kind: 'cosine', warmupSteps: 5, totalSteps: 15, minLrRatio: 0.2 } },
  ]
  for (const c of cases) {
    it(`should follow the formula for ${JSON.stringify(c.schedule ?? 'none')}`, () => {
      for (let s = 0; s < 25; s++) expect(lrAt(c, s)).to.be.closeTo(lrReference(c, s), 1e-18)
    })
  }

  it('should reject a decaying schedule without totalSteps with TRN_ERR_ARG', () => {
    expect(() => lrAt({ lr: 1, schedule: { kind: 'linear', warmupSteps: 2 } }, 0))
      .to.throw()
      .with.property('code', 'TRN_ERR_ARG')
  })
})
