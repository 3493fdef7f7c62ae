/**
 * A model source's run options reach the native model: checkpointing of the first N layers from
 * `model.checkpoint_layers`, and the key's bounds checked when the config loads.
 */
import { expect } from 'chai'
import { modelSourceSchema, openModel } from '../../actors/trainer/model-source.ts'
import { loadConfig } from '../../runtime/config.ts'
import { debugConfigPath } from '../native/helpers.ts'

const dir = debugConfigPath.replace(/\/config\.json$/, '')

describe('a model source', () => {
  it('should recompute only the first model.checkpoint_layers layers', async () => {
    const src = loadConfig(modelSourceSchema, {
      raw: { path: dir, activation_checkpointing: true },
      overrides: ['checkpoint_layers=1'],
    })
    const m = await openModel(src)
    expect([m.activationCheckpointing, m.checkpointLayers]).to.deep.equal([true, 1])
    m.dispose()
  })

  it('should default to every layer, and refuse a count below -1 or without checkpointing with CFG_ERR_VALUE', async () => {
    const m = await openModel(loadConfig(modelSourceSchema, { raw: { path: dir } }))
    expect([m.activationCheckpointing, m.checkpointLayers]).to.deep.equal([false, -1])
    m.dispose()
    expect(() => loadConfig(modelSourceSchema, { raw: { path: dir, checkpoint_layers: -2 } }))
      .to.throw(/checkpoint_layers/)
      .with.property('code', 'CFG_ERR_VALUE')
    // a layer count without checkpointing on would be ignored: refused instead
    const off = loadConfig(modelSourceSchema, { raw: { path: dir, checkpoint_layers: 2 } })
    const e = await openModel(off).catch((x: Error & { code?: string }) => x)
    expect(e).to.have.property('code', 'CFG_ERR_VALUE')
    expect((e as Error).message).to.match(/needs model.activation_checkpointing/)
  })
})
