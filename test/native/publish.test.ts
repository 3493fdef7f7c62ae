/**
 * Weight publishing by broadcast (Model.publishParameters / receiveParameters) over a real Gloo group of
 * two ranks: the trainer-side model is rank 0, an engine-side model (other seed) rank 1. The same code
 * runs over NCCL on GPUs (the group's backend is the only difference).
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import { createModel, initProcessGroup, type Model, type ProcessGroup } from '../../native/index.ts'
import { debugConfig, maxAbsDiff } from './helpers.ts'

const config = debugConfig({ vocab_size: 128, tie_word_embeddings: false, eos_token_id: 127 })

/** float32 → bf16 → float32, round to nearest even (what the wire dtype does to a value). */
function bf16(x: Float32Array): Float32Array {
  const u = new Uint32Array(x.buffer.slice(0))
  for (let i = 0; i < u.length; i++) {
    const lsb = (u[i]! >>> 16) & 1
    u[i] = ((u[i]! + 0x7fff + lsb) >>> 16) << 16
  }
  return new Float32Array(u.buffer)
}

describe('weight publishing over an update group', () => {
  let dir: string
  let groups: ProcessGroup[]
  let trainer: Model
  let engine: Model
  let n = 0

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'trn-publish-'))
    const storePath = join(dir, `store${n++}`)
    groups = await Promise.all(
      [0, 1].map((rank) =>
        initProcessGroup({ rank, worldSize: 2, storePath, timeoutMs: 30_000, storePrefix: 'weights' }),
      ),
    )
    trainer = await createModel({ config, seed: 1 })
    engine = await createModel({ config, seed: 2 })
  })
  afterEach(() => {
    trainer.dispose()
    engine.dispose()
    rmSync(dir, { recursive: true, force: true })
  })

  it('should give the receiver every parameter of the sender, exactly in float32', async () => {
    const before = await engine.parameters()
    const want = await trainer.parameters()
    expect(maxAbsDiff(before['lm_head.weight']!, want['lm_head.weight']!)).to.be.above(0)
    await Promise.all([
      trainer.publishParameters({ group: groups[0]!, dtype: 'float32' }),
      engine.receiveParameters({ group: groups[1]!, dtype: 'float32' }),
    ])
    const got = await engine.parameters()
    for (const [name, w] of Object.entries(want)) expect(maxAbsDiff(got[name]!, w), name).to.equal(0)
  })

  it('should move only the named parameters, rounded to the wire dtype', async () => {
    const names = ['model.layers.1.mlp.down_proj.weight', 'model.norm.weight']
    const before = await engine.parameters()
    const want = await trainer.parameters()
    await Promise.all([
      trainer.publishParameters({ group: groups[0]!, names, dtype: 'bfloat16' }),
      engine.receiveParameters({ group: groups[1]!, names, dtype: 'bfloat16' }),
    ])
    const got = await engine.parameters()
    for (const [name, w] of Object.entries(before)) {
      if (names.includes(name))
        expect(maxAbsDiff(got[name]!, bf16(want[name] as Float32Array)), name).to.equal(0)
      else expect(maxAbsDiff(got[name]!, w), name).to.equal(0)
    }
  })

  it('should refuse an eagerConnect that is not a boolean, with TRN_ERR_ARG', async () => {
    const bad = initProcessGroup({
      rank: 0,
      worldSize: 1,
      storePath: join(dir, 'bad-store'),
      eagerConnect: 'yes' as unknown as boolean,
    })
    let code: string | undefined
    await bad.catch((e: { code?: string }) => {
      code = e.code
    })
    expect(code).to.equal('TRN_ERR_ARG')
  })

  it('should refuse unknown names and a publisher that is not the root, with TRN_ERR_ARG', async () => {
    const codeOf = async (p: Promise<unknown>) => {
      try {
        await p
      } catch (e) {
        return (e as { code?: string }).code
      }
      return 'resolved'
    }
    expect(await codeOf(trainer.publishParameters({ group: groups[0]!, names: ['nope'] }))).to.equal(
      'TRN_ERR_ARG',
    )
    expect(await codeOf(trainer.publishParameters({ group: groups[1]!, root: 0 }))).to.equal('TRN_ERR_ARG')
    expect(await codeOf(engine.receiveParameters({ group: groups[0]!, root: 0 }))).to.equal('TRN_ERR_ARG')
    // the group is still usable afterwards
    await Promise.all([
      trainer.publishParameters({ group: groups[0]!, names: ['model.norm.weight'], dtype: 'float32' }),
      engine.receiveParameters({ group: groups[1]!, names: ['model.norm.weight'], dtype: 'float32' }),
    ])
  })
})
