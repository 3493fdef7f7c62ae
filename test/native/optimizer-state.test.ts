import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import {
  createModel,
  loadModel,
  type Model,
  type OptimizerConfig,
  type PpoLossConfig,
} from '../../native/index.ts'
import { debugConfig, maxAbsDiff, microBatch } from './helpers.ts'

const config = debugConfig({ vocab_size: 128 })
const loss: PpoLossConfig = { epsClip: 0.2 }
const optim: OptimizerConfig = {
  lr: 5e-3,
  weightDecay: 0.1,
  schedule: { kind: 'cosine', warmupSteps: 1, totalSteps: 6 },
}
const batches = [1, 2, 3, 4].map((s) => [microBatch([9, 6], 128, s)])

async function steps(m: Model, from: number, to: number): Promise<void> {
  for (let s = from; s < to; s++) await m.ppoStep(batches[s]!, loss, optim)
}

describe('a model checkpointed with its optimizer state', () => {
  let dir: string
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'trn-optstate-'))
  })
  afterEach(() => rmSync(dir, { recursive: true, force: true }))

  it('should continue training exactly as if it had never stopped', async () => {
    const a = await createModel({ config, seed: 4 })
    await steps(a, 0, 2)
    await a.save(dir, { dtype: 'float32' })
    expect(await a.saveOptimizerState(dir)).to.equal('optimizer-rank0-of-1.safetensors')
    await steps(a, 2, 4)

    const b = await loadModel(dir)
    await b.loadOptimizerState(dir)
    expect(b.step).to.equal(2)
    await steps(b, 2, 4)
    expect(b.step).to.equal(4)
    const [pa, pb] = [await a.parameters(), await b.parameters()]
    for (const name of Object.keys(pa)) expect(maxAbsDiff(pa[name]!, pb[name]!), name).to.equal(0)
    a.dispose()
    b.dispose()
  })

  it('should differ from a restart without the optimizer state (the test can tell)', async () => {
    const a = await createModel({ config, seed: 4 })
    await steps(a, 0, 2)
    await a.save(dir, { dtype: 'float32' })
    await steps(a, 2, 4)
    const b = await loadModel(dir)
    await steps(b, 2, 4)
    const [pa, pb] = [await a.parameters(), await b.parameters()]
    const n = 'model.layers.0.mlp.up_proj.weight'
    expect(maxAbsDiff(pa[n]!, pb[n]!)).to.be.greaterThan(0)
    a.dispose()
    b.dispose()
  })

  it('should refuse the state of another model with TRN_ERR_CHECKPOINT', async () => {
    const a = await createModel({ config, seed: 4 })
    await a.saveOptimizerState(dir)
    const other = await createModel({ config: debugConfig({ vocab_size: 130 }), seed: 4 })
    const err = await other.loadOptimizerState(dir).catch((e) => e)
    expect(err.code).to.equal('TRN_ERR_CHECKPOINT')
    const missing = await a.loadOptimizerState(join(dir, 'nowhere')).catch((e) => e)
    expect(missing.code).to.equal('TRN_ERR_CHECKPOINT')
    a.dispose()
    other.dispose()
  })
})
