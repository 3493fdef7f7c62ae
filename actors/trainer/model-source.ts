/**
 * Where a policy's weights come from, shared by the trainer and the embedded engine so that both start
 * from the same weights: an HF model directory (config.json, plus *.safetensors to load them), or, when
 * the directory has config.json only, a random init from `seed` (the same seed gives the same weights in
 * every process and on every rank).
 */
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import {
  createModel,
  loadModel,
  type Model,
  type ModelDtype,
  type ProcessGroup,
  readHfConfig,
} from '../../native/index.ts'
import { c } from '../../runtime/config.ts'
import { fail } from '../../runtime/errors.ts'

/** Config of a model source (`trainer.model`, `engine.model`). */
export const modelSourceSchema = c.obj({
  path: c.str(undefined, {
    doc: 'HF model directory: config.json, plus *.safetensors to load (none: random init from seed)',
  }),
  seed: c.int(0, { doc: 'seed of the random init when the directory holds no weights' }),
  dtype: c.enum(['float32', 'float64'] as const, 'float32', { doc: 'parameter dtype on the CPU path' }),
})

export interface ModelSource {
  path: string
  seed: number
  dtype: ModelDtype
}

/** True when `dir` holds safetensors weights (single file or sharded with an index). */
export function hasWeights(dir: string): boolean {
  return existsSync(join(dir, 'model.safetensors')) || existsSync(join(dir, 'model.safetensors.index.json'))
}

/** Load or create the model of a source (collective across the group's ranks when `processGroup` is set). */
export async function openModel(src: ModelSource, processGroup?: ProcessGroup): Promise<Model> {
  if (!existsSync(join(src.path, 'config.json')))
    throw fail('TRN_ERR_CHECKPOINT', `${src.path} has no config.json`, { path: src.path })
  if (hasWeights(src.path)) return loadModel(src.path, { dtype: src.dtype, processGroup })
  return createModel({ config: readHfConfig(src.path), seed: src.seed, dtype: src.dtype, processGroup })
}
