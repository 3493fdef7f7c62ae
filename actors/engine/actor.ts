/**
 * The embedded engine actor: generation for the proxy from the native addon (DESIGN §1, "embedded
 * default"), with continuous batching across sessions (actors/engine/batcher.ts).
 *
 *   proxy (EmbeddedEngine) ──engine:generate / pause / resume / abort / update_weights / info──▶ inbox
 *                                                        │
 *                                   Batcher: queue ─▶ chunks of Model.generate ─▶ replies
 *
 * Sockets: one inbox (Router, bus.bind); Dealers to the controller (registration, heartbeats).
 * Config: the `engine:` section (actors/engine/config.ts). The weights start from `engine.model` (the same
 * source as the trainer's, so version 0 is the same policy on both sides) and change with
 * engine:update_weights (HF safetensors directories the trainer publishes).
 */
import { loadModel, setNumThreads } from '../../native/index.ts'
import { Actor, type BusConfig } from '../../runtime/actor.ts'
import type { Logger } from '../../runtime/log.ts'
import { hasWeights, openModel } from '../trainer/model-source.ts'
import { Batcher } from './batcher.ts'
import type { EngineConfig } from './config.ts'

export { type EngineConfig, engineSchema } from './config.ts'

export interface EngineDeps {
  id: string
  log: Logger
  /** controller inbox address (registration, heartbeats); none in unit tests */
  controller?: string
  bus?: Partial<BusConfig>
}

export interface EngineHandle {
  actor: Actor
  batcher: Batcher
  /** the inbox address */
  addr: string
  close(reason?: string): Promise<void>
}

/** Load the model, bind the inbox, register; resolves once the engine serves requests. */
export async function startEngine(cfg: EngineConfig, deps: EngineDeps): Promise<EngineHandle> {
  if (cfg.threads > 0) setNumThreads(cfg.threads)
  const model = await openModel(cfg.model)
  const actor = new Actor({
    id: deps.id,
    role: 'engine',
    log: deps.log,
    controller: deps.controller,
    bus: deps.bus,
    meta: { maxBatch: cfg.max_batch, model: cfg.model.path },
  })
  const log = actor.log
  const batcher = new Batcher(model, {
    maxBatch: cfg.max_batch,
    chunkTokens: cfg.chunk_tokens,
    seed: cfg.seed,
    kvCache: cfg.kv_cache,
    log,
    load: (path) => loadModel(path, { dtype: cfg.model.dtype }),
    weightsPath: hasWeights(cfg.model.path) ? cfg.model.path : '',
  })
  actor.handle({
    'engine:generate': (b) => batcher.submit(b),
    'engine:pause': async () => ({ aborted: await batcher.pause() }),
    'engine:resume': () => ({ version: batcher.resume() }),
    'engine:abort': (b) => ({ aborted: batcher.abort(b.rids) }),
    'engine:update_weights': (b) => batcher.updateWeights(b.path, b.version),
    'engine:info': () => batcher.info(),
  })
  try {
    await actor.start()
  } catch (e) {
    await batcher.close()
    throw e
  }
  log.info({ addr: actor.addr, params: model.numParams, maxBatch: cfg.max_batch }, 'engine ready')
  let closing: Promise<void> | undefined
  return {
    actor,
    batcher,
    addr: actor.addr,
    close(reason = 'stopped') {
      closing ??= (async () => {
        await batcher.close()
        await actor.stop(reason, 1000)
      })()
      return closing
    },
  }
}
