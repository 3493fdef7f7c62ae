/**
 * The embedded engine's config (`engine:` in configs/*.yaml), as a schema of runtime/config.ts: defaults,
 * validation with coded errors naming the key, and the TypeScript type.
 */
import { type ConfigOf, c } from '../../runtime/config.ts'
import { modelSourceSchema } from '../trainer/model-source.ts'

export const engineSchema = c.obj({
  model: modelSourceSchema,
  max_batch: c.int(8, { min: 1, doc: 'requests decoded together in one chunk' }),
  chunk_tokens: c.int(64, {
    min: 1,
    doc: 'new tokens per request per chunk; requests join and leave the batch between chunks',
  }),
  threads: c.int(0, { min: 0, doc: 'libtorch intra-op threads for this process (0 = libtorch default)' }),
  seed: c.int(0, { doc: 'base sampling seed for requests that bring none (request k gets seed + k)' }),
  kv_cache: c.bool(true, { doc: 'false recomputes every step from scratch (reference path, slow)' }),
})

export type EngineConfig = ConfigOf<typeof engineSchema>
