/**
 * RunOptions on the CPU (what CI can run): activation checkpointing gives the same gradients, bf16
 * compute over float32 master weights stays close to float32, the logits chunk size changes nothing,
 * and devices/backends this build or machine lacks fail with coded errors. test/native/cuda.test.ts runs
 * the GPU side where there is one.
 */
import { expect } from 'chai'
import {
  buildInfo,
  createModel,
  cudaDeviceCount,
  cudaMemory,
  initProcessGroup,
  type Model,
} from '../../native/index.ts'
import { cosine, debugConfig, maxAbsDiff, microBatch, packed, relErr } from './helpers.ts'

const V = 256
const config = debugConfig({ vocab_size: V, tie_word_embeddings: true, eos_token_id: V - 1 })
const loss = { epsClip: 0.2, behavImpWeightCap: 4 }
const optim = { lr: 1e-2, weightDecay: 0.1, maxGradNorm: 1 }

async function rejection(p: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await p
  } catch (e) {
    return e as Error & { code?: string }
  }
  throw new Error('expected a rejection')
}

describe('a CPU model with run options', () => {
  const mbs = [microBatch([9, 14], V, 5), microBatch([21], V, 6)]

  /** Both models' PPO-loss gradients on `mbs` agree to 1e-12 (float64 models). */
  async function expectSameGradients(a: Model, b: Model): Promise<void> {
    const ga = await a.gradients(mbs, loss)
    const gb = await b.gradients(mbs, loss)
    for (const [name, g] of Object.entries(ga.grads))
      expect(maxAbsDiff(gb.grads[name]!, g), name).to.be.at.most(1e-12)
  }

  it('should compute the same gradients with activation checkpointing as without', async function () {
    this.timeout(60_000)
    const plain = await createModel({ config, seed: 3, dtype: 'float64' })
    const ckpt = await createModel({ config, seed: 3, dtype: 'float64', activationCheckpointing: true })
    const a = await plain.gradients(mbs, loss)
    const b = await ckpt.gradients(mbs, loss)
    expect(b.stats.loss).to.be.closeTo(a.stats.loss, 1e-12)
    for (const [name, g] of Object.entries(a.grads)) {
      expect(maxAbsDiff(b.grads[name]!, g), name).to.be.at.most(1e-12)
      // and the gradient is not trivially zero (the check would pass on an untrained path)
      if (name.includes('layers.0.mlp.down_proj'))
        expect(maxAbsDiff(g, new Float64Array(g.length))).to.be.above(0)
    }
    plain.dispose()
    ckpt.dispose()
  })

  it('should compute the same gradients recomputing only the first layer (checkpointLayers: 1)', async function () {
    this.timeout(60_000)
    const plain = await createModel({ config, seed: 3, dtype: 'float64' })
    const part = await createModel({
      config,
      seed: 3,
      dtype: 'float64',
      activationCheckpointing: true,
      checkpointLayers: 1,
    })
    expect([part.activationCheckpointing, part.checkpointLayers]).to.deep.equal([true, 1])
    await expectSameGradients(plain, part)
    plain.dispose()
    part.dispose()
  })

  it('should refuse checkpointLayers below -1, or without checkpointing, with TRN_ERR_ARG', async () => {
    const e = await rejection(
      createModel({ config, seed: 3, activationCheckpointing: true, checkpointLayers: -2 }),
    )
    expect(e.code).to.equal('TRN_ERR_ARG')
    const off = await rejection(createModel({ config, seed: 3, checkpointLayers: 1 }))
    expect(off.code).to.equal('TRN_ERR_ARG')
    expect(off.message).to.match(/needs activationCheckpointing/)
  })

  it('should give the same log-probs whatever the logits chunk size', async () => {
    const batch = packed([5, 17, 3], V, 8)
    const a = await createModel({ config, seed: 4, dtype: 'float64' })
    const b = await createModel({ config, seed: 4, dtype: 'float64', logitsChunk: 1 })
    const la = await a.logprobs(batch)
    const lb = await b.logprobs(batch)
    expect(maxAbsDiff(la.logprobs, lb.logprobs)).to.be.at.most(1e-6)
    await expectSameGradients(a, b)
    a.dispose()
    b.dispose()
  })

  it('should keep float32 master weights and stay near float32 results when computing in bf16', async function () {
    this.timeout(60_000)
    const f32 = await createModel({ config, seed: 9 })
    const bf = await createModel({ config, seed: 9, computeDtype: 'bfloat16' })
    expect(bf.dtype).to.equal('float32')
    expect(bf.computeDtype).to.equal('bfloat16')
    expect(bf.device).to.equal('cpu')
    const batch = packed([12, 30], V, 2)
    const la = await f32.logprobs(batch)
    const lb = await bf.logprobs(batch)
    expect(relErr(lb.logprobs, la.logprobs)).to.be.below(2e-2).and.above(0)
    // gradients accumulate in float32 over micro-batches
    const ga = await f32.gradients(mbs, loss)
    const gb = await bf.gradients(mbs, loss)
    for (const [name, g] of Object.entries(ga.grads)) {
      expect(gb.grads[name]).to.be.instanceOf(Float32Array)
      expect(relErr(gb.grads[name]!, g), name).to.be.below(0.1)
    }
    // One step moves the master weights as float32 would, within bf16 error. Adam's first update is
    // nearly lr·sign(g), so elements whose gradient is at bf16 noise level may flip: compare the whole
    // update's direction (cosine) rather than element-wise.
    const before = await f32.parameters()
    await f32.ppoStep(mbs, loss, optim)
    await bf.ppoStep(mbs, loss, optim)
    const pa = await f32.parameters()
    const pb = await bf.parameters()
    const da: number[] = []
    const db: number[] = []
    for (const [name, p0] of Object.entries(before)) {
      expect(pb[name]).to.be.instanceOf(Float32Array)
      p0.forEach((x, i) => {
        da.push(pa[name]![i]! - x)
        db.push(pb[name]![i]! - x)
      })
    }
    expect(cosine(db, da)).to.be.above(0.95)
    // parameters() reports the float32 masters, not their bf16 copies: after a step of lr 1e-3 every
    // tensor moved, norms included (a bf16 readout rounds 1 ± 1e-3 back to 1)
    await bf.ppoStep(mbs, loss, { ...optim, lr: 1e-3 })
    const pc = await bf.parameters()
    for (const [name, p1] of Object.entries(pb)) expect(maxAbsDiff(pc[name]!, p1), name).to.be.above(0)
    f32.dispose()
    bf.dispose()
  })

  it('should refuse bad run options with coded errors', async () => {
    expect((await rejection(createModel({ config, device: 'gpu' as 'cpu' }))).code).to.equal('TRN_ERR_ARG')
    expect(
      (await rejection(createModel({ config, dtype: 'float64', computeDtype: 'bfloat16' }))).code,
    ).to.equal('TRN_ERR_ARG')
    expect((await rejection(createModel({ config, logitsChunk: -1 }))).code).to.equal('TRN_ERR_ARG')
    expect(
      (
        await rejection(
          initProcessGroup({ rank: 0, worldSize: 1, storePath: '/nonexistent/x', backend: 'mpi' as 'gloo' }),
        )
      ).code,
    ).to.equal('TRN_ERR_ARG')
  })

  it('should report per-phase step timings only when TRN_STEP_TIMINGS=1', async () => {
    const m = await createModel({ config, seed: 9 })
    const mbs = [microBatch([20, 31], V, 2)]
    expect((await m.ppoStep(mbs, loss, optim)).timingsMs).to.equal(undefined)
    process.env.TRN_STEP_TIMINGS = '1'
    try {
      const t0 = performance.now()
      const st = await m.ppoStep(mbs, loss, optim)
      const wall = performance.now() - t0
      expect(st.timingsMs).to.have.all.keys('gather', 'forwardBackward', 'reduce', 'optimizer')
      const phases = Object.values(st.timingsMs!)
      for (const ms of phases) expect(ms).to.be.at.least(0)
      // the phases are consecutive parts of the call
      expect(phases.reduce((a, b) => a + b, 0)).to.be.at.most(wall)
      expect(st.timingsMs!.forwardBackward).to.be.above(0)
    } finally {
      delete process.env.TRN_STEP_TIMINGS
    }
    m.dispose()
  })

  it('should name the missing device when CUDA is not there', async function () {
    if (cudaDeviceCount() > 0) this.skip()
    const e = await rejection(createModel({ config, device: 'cuda' }))
    expect(e.code).to.equal('TRN_ERR_DEVICE')
    expect(e.message).to.match(/sees 0 CUDA device/)
    expect(() => cudaMemory('cuda'))
      .to.throw(/sees 0 CUDA device/)
      .with.property('code', 'TRN_ERR_DEVICE')
    expect(() => cudaMemory('cpu'))
      .to.throw()
      .with.property('code', 'TRN_ERR_ARG')
    if (!buildInfo().nccl) {
      const g = await rejection(
        initProcessGroup({ rank: 0, worldSize: 1, storePath: '/tmp/x', backend: 'nccl' }),
      )
      expect(g.code).to.equal('TRN_ERR_DEVICE')
    }
  })
})
