/**
 * Where a policy's weights come from, shared by the trainer and the embedded engine so that both start
 * from the same weights: an HF model directory (config.json, plus *.safetensors to load them), or, when
 * the directory has config.json only, a random init from `seed` (the same seed gives the same weights in
 * every process and on every rank).
 */
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import {
  type ComputeDtype,
  createModel,
  cudaDeviceCount,
  type DeviceName,
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
  dtype: c.enum(['float32', 'float64'] as const, 'float32', {
    doc: 'master dtype: weights, gradient accumulator and AdamW state',
  }),
  device: c.str('cpu', {
    doc: "'cpu', 'cuda' (rank r of a node on GPU r mod its GPU count; NCCL between ranks) or 'cuda:N'",
  }),
  compute_dtype: c.enum(['auto', 'float32', 'float64', 'bfloat16', 'float16'] as const, 'auto', {
    doc: 'forward/backward dtype; auto = bfloat16 on cuda (float32 masters), the master dtype on cpu',
  }),
  activation_checkpointing: c.bool(false, {
    doc: 'recompute each decoder layer in the backward pass (less memory, ~1/3 more compute)',
  }),
  checkpoint_layers: c.int(-1, {
    min: -1,
    doc: 'with activation_checkpointing: recompute only the first N decoder layers (-1: all)',
  }),
  keep_softmax: c.bool(false, {
    doc: "cuda bf16: keep the head's softmax (tokens × vocab) for its backward; off: logits one chunk at a time",
  }),
})

export interface ModelSource {
  path: string
  seed: number
  dtype: ModelDtype
  device?: string
  compute_dtype?: ComputeDtype | 'auto'
  activation_checkpointing?: boolean
  checkpoint_layers?: number
  keep_softmax?: boolean
}

/** The device a rank's model uses: 'cuda' spreads ranks over this node's GPUs (rank mod count). */
export function rankDevice(device: string | undefined, rank: number): DeviceName {
  const d = device ?? 'cpu'
  if (d === 'cpu') return 'cpu'
  if (d === 'cuda') {
    const n = cudaDeviceCount()
    if (n === 0) throw fail('TRN_ERR_DEVICE', `device 'cuda' asked for, but this process sees no CUDA device`)
    return `cuda:${rank % n}`
  }
  if (/^cuda:\d+$/.test(d)) return d as DeviceName
  throw fail('CFG_ERR_VALUE', `model.device ${JSON.stringify(d)}: expected cpu, cuda or cuda:N`, {
    path: 'model.device',
  })
}

function runOptionsOf(src: ModelSource, device: DeviceName) {
  if ((src.checkpoint_layers ?? -1) !== -1 && !src.activation_checkpointing)
    throw fail('CFG_ERR_VALUE', 'model.checkpoint_layers needs model.activation_checkpointing: true', {
      path: 'model.checkpoint_layers',
    })
  const compute =
    src.compute_dtype === undefined || src.compute_dtype === 'auto'
      ? device === 'cpu'
        ? src.dtype
        : 'bfloat16'
      : src.compute_dtype
  return {
    device,
    computeDtype: compute,
    activationCheckpointing: src.activation_checkpointing ?? false,
    checkpointLayers: src.checkpoint_layers ?? -1,
    keepSoftmax: src.keep_softmax ?? false,
  }
}

/** True when `dir` holds safetensors weights (single file or sharded with an index). */
export function hasWeights(dir: string): boolean {
  return existsSync(join(dir, 'model.safetensors')) || existsSync(join(dir, 'model.safetensors.index.json'))
}

/**
 * Load or create the model of a source (collective across the group's ranks when `processGroup` is set),
 * on `rankDevice(src.device, rank)`.
 */
export async function openModel(
  src: ModelSource,
  processGroup?: ProcessGroup,
  rank = 0,
  tensorParallel?: ProcessGroup,
): Promise<Model> {
  if (!existsSync(join(src.path, 'config.json')))
    throw fail('TRN_ERR_CHECKPOINT', `${src.path} has no config.json`, { path: src.path })
  const run = {
    ...runOptionsOf(src, rankDevice(src.device, rank)),
    ...(tensorParallel ? { tensorParallel } : {}),
  }
  if (hasWeights(src.path)) return loadModel(src.path, { dtype: src.dtype, processGroup, ...run })
  return createModel({
    config: readHfConfig(src.path),
    seed: src.seed,
    dtype: src.dtype,
    processGroup,
    ...run,
  })
}
