import type { ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import { createModel, initProcessGroup, loadModel } from '../../native/index.ts'
import { runShare, type ShareResult } from '../fixtures/native/dist-shared.ts'
import { freePort, maxAbsDiff, runRanks } from './helpers.ts'

const worker = new URL('../fixtures/native/dist-worker.ts', import.meta.url).pathname

describe('two Gloo ranks against one rank', () => {
  let dir: string
  let children: ChildProcess[] = []
  let single: ShareResult

  before(async function () {
    this.timeout(60_000)
    single = await runShare(0, 1, (config, seed) => createModel({ config, seed, dtype: 'float64' }))
  })
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'trn-dist-'))
    children = []
  })
  afterEach(() => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  })

  async function twoRanks(rdv: string, env: Record<string, string> = {}): Promise<ShareResult[]> {
    await runRanks(
      worker,
      2,
      (r) => [String(r), '2', rdv, join(dir, `rank${r}.json`), join(dir, 'ckpt')],
      children,
      env,
    )
    return [0, 1].map((r) => JSON.parse(readFileSync(join(dir, `rank${r}.json`), 'utf8')) as ShareResult)
  }

  function expectSameAsSingle(got: ShareResult): void {
    // float64 everywhere; the only difference is summation order across ranks (~1e-16 relative per op,
    // through 3 AdamW steps): 1e-9 absolute on weights of size ~0.02–1 is far above that and far below
    // any sharding bug (a missing or doubled shard moves weights by ~lr = 1e-2).
    for (let s = 0; s < 3; s++) {
      expect(got.stats[s]!.tokens).to.equal(single.stats[s]!.tokens)
      expect(got.stats[s]!.loss).to.be.closeTo(single.stats[s]!.loss, 1e-10)
      expect(got.stats[s]!.gradNorm).to.be.closeTo(single.stats[s]!.gradNorm, 1e-10)
    }
    expect(Object.keys(got.params).sort()).to.deep.equal(Object.keys(single.params).sort())
    for (const [name, w] of Object.entries(single.params)) {
      expect(maxAbsDiff(got.params[name]!, w), name).to.be.at.most(1e-9)
    }
    expect(maxAbsDiff(got.logprobs, single.logprobs)).to.be.at.most(1e-9)
  }

  it('should end with the same weights after 3 steps over a FileStore rendezvous', async function () {
    this.timeout(120_000)
    const [r0, r1] = await twoRanks(`file:${join(dir, 'store')}`)
    // each rank holds about half of the parameters (padding adds < 1 element per tensor)
    expect(single.shardNumel).to.equal(single.numParams)
    for (const r of [r0!, r1!]) {
      expect(r.shardNumel).to.be.at.least(r.numParams / 2)
      expect(r.shardNumel).to.be.below(r.numParams / 2 + Object.keys(r.params).length)
    }
    expectSameAsSingle(r0!)
    expectSameAsSingle(r1!)
    // streamed: 4 layers keeping their activations stay gathered until their backward — all 6 units
    expect(r0!.stats.map((s) => s.gatheredUnitsPeak)).to.deep.equal([6, 6, 6])
    expect(single.stats[0]!.gatheredUnitsPeak).to.equal(undefined) // one rank: nothing to gather
    // the checkpoint rank 0 wrote from the shards loads into a model equal to the single-rank one
    const back = await loadModel(join(dir, 'ckpt'), { dtype: 'float64' })
    const p = await back.parameters()
    for (const [name, w] of Object.entries(single.params)) {
      // saved as float32: 2^-24 relative rounding
      expect(maxAbsDiff(p[name]!, w), name).to.be.at.most(1e-6)
    }
    back.dispose()
  })

  it('should end with the same weights over a TCPStore rendezvous', async function () {
    this.timeout(120_000)
    const [r0] = await twoRanks(`tcp:127.0.0.1:${await freePort()}`)
    expectSameAsSingle(r0!)
  })

  // The runs above stream ZeRO-3 a unit at a time (the default for W > 1) without checkpointing: each
  // layer's gradients are reduced from LayerEnter's backward. These take the other paths.
  it('should end with the same weights streaming with the first layer checkpointed, the second not', async function () {
    this.timeout(120_000)
    const [r0, r1] = await twoRanks(`file:${join(dir, 'store')}`, { TRN_TEST_CKPT: '1' })
    expectSameAsSingle(r0!)
    expectSameAsSingle(r1!)
    // embedding + head + the 3 layers kept after the checkpointed one (dropped after its forward)
    expect(r0!.stats[2]!.gatheredUnitsPeak).to.equal(5)
  })

  it('should end with the same weights with every layer checkpointed', async function () {
    this.timeout(120_000)
    const [r0] = await twoRanks(`file:${join(dir, 'store')}`, { TRN_TEST_CKPT: '-1' })
    expectSameAsSingle(r0!)
    // embedding + head + the layer running + the next one's gather in flight, whatever the depth
    expect(r0!.stats[2]!.gatheredUnitsPeak).to.equal(4)
  })

  it('should end with the same weights gathering the whole model per step (TRN_ZERO3=whole)', async function () {
    this.timeout(120_000)
    const [r0] = await twoRanks(`file:${join(dir, 'store')}`, { TRN_ZERO3: 'whole' })
    expectSameAsSingle(r0!)
    expect(r0!.stats[0]!.gatheredUnitsPeak).to.equal(undefined)
  })

  it('should refuse an unknown TRN_ZERO3 with TRN_ERR_ARG', async function () {
    this.timeout(120_000)
    const e = await twoRanks(`file:${join(dir, 'store')}`, { TRN_ZERO3: 'bogus' }).catch((x: Error) => x)
    expect(String(e)).to.match(/TRN_ZERO3 must be stream or whole/)
  })
})

describe('a process group', () => {
  it('should reject a rank outside the world with TRN_ERR_ARG', async () => {
    const err = await initProcessGroup({ rank: 2, worldSize: 2, storePath: '/tmp/x' }).catch((e) => e)
    expect(err.code).to.equal('TRN_ERR_ARG')
  })

  it('should fail the rendezvous with TRN_ERR_DIST when the other rank never comes', async function () {
    this.timeout(30_000)
    const dir = mkdtempSync(join(tmpdir(), 'trn-dist-lone-'))
    try {
      const err = await initProcessGroup({
        rank: 0,
        worldSize: 2,
        storePath: join(dir, 's'),
        timeoutMs: 1500,
      }).catch((e) => e)
      expect(err.code).to.equal('TRN_ERR_DIST')
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('should act as a group of one for allreduce and barrier', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trn-dist-one-'))
    try {
      const pg = await initProcessGroup({ rank: 0, worldSize: 1, storePath: join(dir, 's') })
      expect(pg.worldSize).to.equal(1)
      const out = await pg.allreduceSum(new Float64Array([1, 2, 3]))
      expect(Array.from(out)).to.deep.equal([1, 2, 3])
      await pg.barrier()
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
