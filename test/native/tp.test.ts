/**
 * Tensor parallelism (Megatron-style column/row split) against one rank, in float64 over real Gloo groups
 * of child processes: tp = 2, and dp = 2 × tp = 2 (4 processes). Same weights after 3 PPO steps (AdamW,
 * clipping, schedule), same stats and log-probs, up to summation order.
 */
import type { ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import { createModel, initProcessGroup } from '../../native/index.ts'
import { config, runShare, type ShareResult } from '../fixtures/native/dist-shared.ts'
import { maxAbsDiff, runRanks } from './helpers.ts'

const worker = new URL('../fixtures/native/tp-worker.ts', import.meta.url).pathname

describe('tensor-parallel ranks against one rank', function () {
  this.timeout(180_000)
  let dir: string
  let children: ChildProcess[] = []
  let single: ShareResult

  before(async () => {
    single = await runShare(0, 1, (c, seed) => createModel({ config: c, seed, dtype: 'float64' }))
  })
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'trn-tp-'))
    children = []
  })
  afterEach(() => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  })

  async function ranks(world: number, tp: number): Promise<ShareResult[]> {
    await runRanks(
      worker,
      world,
      (r) => [String(r), String(world), String(tp), dir, join(dir, `rank${r}.json`)],
      children,
    )
    return Array.from(
      { length: world },
      (_, r) => JSON.parse(readFileSync(join(dir, `rank${r}.json`), 'utf8')) as ShareResult,
    )
  }

  function expectSame(got: ShareResult): void {
    for (let s = 0; s < 3; s++) {
      expect(got.stats[s]!.tokens).to.equal(single.stats[s]!.tokens)
      expect(got.stats[s]!.loss).to.be.closeTo(single.stats[s]!.loss, 1e-10)
      expect(got.stats[s]!.gradNorm).to.be.closeTo(single.stats[s]!.gradNorm, 1e-10)
    }
    for (const [name, w] of Object.entries(single.params))
      expect(maxAbsDiff(got.params[name]!, w), name).to.be.at.most(1e-9)
    expect(maxAbsDiff(got.logprobs, single.logprobs)).to.be.at.most(1e-9)
  }

  it('should train to the same weights with tp = 2, each rank holding half of the heads and MLP', async () => {
    const rs = await ranks(2, 2)
    for (const r of rs) {
      expect(r.numParams).to.equal(single.numParams)
      expect(r.shardNumel).to.be.below(single.shardNumel)
      expectSame(r)
    }
  })

  it('should train to the same weights with dp = 2 × tp = 2', async () => {
    const rs = await ranks(4, 2)
    for (const r of rs) expectSame(r)
  })

  it('should refuse a split the config does not divide, with TRN_ERR_CONFIG', async () => {
    const groups = await Promise.all(
      [0, 1, 2].map((rank) =>
        initProcessGroup({ rank, worldSize: 3, storePath: join(dir, 'three'), timeoutMs: 20_000 }),
      ),
    )
    try {
      await createModel({ config, tensorParallel: groups[0]! })
      expect.fail('expected a rejection')
    } catch (e) {
      expect((e as { code?: string }).code).to.equal('TRN_ERR_CONFIG')
    }
  })
})
