/**
 * The trainer actor: one per rank, driving the native addon (DESIGN §1, §5, §6). Rank 0 is the head
 * that talks to the controller; ranks > 0 take their share of each step from the head.
 *
 *   controller ──trainer:step / publish / checkpoint──▶ rank 0 (TrainerHead)
 *                                                          │ proxy:fetch ──▶ proxies (trajectories by reference)
 *                                                          │ trainer:shard / trainer:save ──▶ ranks 1..W-1
 *   ranks 0..W-1 ── Gloo process group (FileStore rendezvous) ── sharded parameters, grads, AdamW state
 *
 * Sockets: one inbox (Router, bus.bind); Dealers to the controller, the proxies and the other ranks.
 * Config: the `actor:` section (actors/trainer/config.ts). Start order: join the process group (blocks
 * until every rank joined), build or load the model (collective), then bind and register — so a
 * registered head always has its whole group behind it.
 */
import { dirname, join } from 'node:path'
import { type DeviceName, initProcessGroup, lrAt, setNumThreads } from '../../native/index.ts'
import { Actor, type BusConfig } from '../../runtime/actor.ts'
import { fail } from '../../runtime/errors.ts'
import type { Logger } from '../../runtime/log.ts'
import { optimizerConfig, type TrainerConfig } from './config.ts'
import { readTrainerState, TrainerHead } from './head.ts'
import { openModel, rankDevice } from './model-source.ts'
import { DistributedPublisher, followPublish, type PublishEngine } from './publish-distributed.ts'
import { RankWorker } from './rank.ts'

export { type TrainerConfig, trainerSchema } from './config.ts'

export interface TrainerDeps {
  id: string
  log: Logger
  controller?: string
  bus?: Partial<BusConfig>
  /** this process's rank (default 0) */
  rank?: number
  /** ranks in the group (default cfg.world_size) */
  worldSize?: number
  /** tensor-parallel ranks per data-parallel replica (default cfg.tp_size); ranks are laid out tp-fastest */
  tpSize?: number
  /** FileStore path of the group (default cfg.rendezvous) */
  rendezvous?: string
  /** a checkpoint directory (trainer:checkpoint's dir) to continue from */
  resumeFrom?: string
  /** actor ids (or addresses) of ranks 1..W-1, for the head; default: its own id with the rank swapped */
  peers?: string[]
  /** publish_mode broadcast: the SGLang servers to publish to (the launcher sets AREAL_PUBLISH_ENGINES) */
  publishEngines?: PublishEngine[]
}

export interface TrainerHandle {
  actor: Actor
  worker: RankWorker
  /** the head's step logic (rank 0 only) */
  head: TrainerHead | undefined
  rank: number
  worldSize: number
  close(reason?: string): Promise<void>
}

export async function startTrainer(cfg: TrainerConfig, deps: TrainerDeps): Promise<TrainerHandle> {
  const rank = deps.rank ?? 0
  const worldSize = deps.worldSize ?? cfg.world_size
  const log = deps.log.child({ rank })
  if (rank < 0 || rank >= worldSize)
    throw fail('CFG_ERR_VALUE', `trainer rank ${rank} outside [0, ${worldSize})`)
  try {
    lrAt(optimizerConfig(cfg), 0)
  } catch (e) {
    throw fail('CFG_ERR_VALUE', `actor.optimizer: ${(e as Error).message}`, { path: 'actor.optimizer' }, e)
  }
  if (cfg.threads > 0) setNumThreads(cfg.threads)
  const state = deps.resumeFrom ? readTrainerState(deps.resumeFrom) : undefined
  const tp = deps.tpSize ?? cfg.tp_size
  if (tp < 1 || worldSize % tp !== 0)
    throw fail('CFG_ERR_VALUE', `actor.tp_size ${tp} does not divide the ${worldSize} trainer ranks`, {
      path: 'actor.tp_size',
    })
  // rank = dpRank·tp + tpRank: a tensor-parallel group per data-parallel replica (a row), a data-parallel
  // group per tensor-parallel position (a column), each over its own FileStore
  const dpSize = worldSize / tp
  const dpRank = Math.floor(rank / tp)
  const tpRank = rank % tp
  let group: Awaited<ReturnType<typeof initProcessGroup>> | undefined
  let tpGroup: Awaited<ReturnType<typeof initProcessGroup>> | undefined
  if (worldSize > 1) {
    const storePath = deps.rendezvous ?? cfg.rendezvous
    if (!storePath)
      throw fail('CFG_ERR_MISSING', 'actor.rendezvous (a fresh FileStore path) for world_size > 1')
    const device = rankDevice(cfg.model.device, rank)
    const backend = device === 'cpu' ? 'gloo' : 'nccl'
    const common = {
      timeoutMs: cfg.collective_timeout_ms,
      backend,
      ...(device === 'cpu' ? {} : { device }),
    } as const
    log.info({ worldSize, dpSize, tp, storePath, backend, device }, 'joining the process groups')
    ;[group, tpGroup] = await Promise.all([
      dpSize > 1
        ? initProcessGroup({
            rank: dpRank,
            worldSize: dpSize,
            storePath: tp > 1 ? `${storePath}-dp${tpRank}` : storePath,
            ...common,
          })
        : Promise.resolve(undefined),
      tp > 1
        ? initProcessGroup({ rank: tpRank, worldSize: tp, storePath: `${storePath}-tp${dpRank}`, ...common })
        : Promise.resolve(undefined),
    ])
  }
  const src = deps.resumeFrom ? { ...cfg.model, path: join(deps.resumeFrom, 'weights') } : cfg.model
  const model = await openModel(src, group, rank, tpGroup)
  // AdamW moments, master shard and step: exact resume (checkpoints written before they were saved have none)
  if (deps.resumeFrom && state?.optimizerState)
    await model.loadOptimizerState(join(deps.resumeFrom, 'optimizer'))
  const worker = new RankWorker(model, cfg, log, state?.optimizerSteps ?? 0)
  const actor = new Actor({
    id: deps.id,
    role: 'trainer',
    log: deps.log,
    controller: deps.controller,
    bus: deps.bus,
    meta: { rank, worldSize },
  })
  let publisher: DistributedPublisher | undefined
  if (cfg.publish_mode === 'broadcast' && rank === 0) {
    if (!deps.publishEngines?.length)
      throw fail(
        'CFG_ERR_VALUE',
        'actor.publish_mode broadcast needs SGLang servers (allocation_mode sglang:…; AREAL_PUBLISH_ENGINES)',
        { path: 'actor.publish_mode' },
      )
    const dev = model.device
    publisher = new DistributedPublisher(
      {
        engines: deps.publishEngines,
        masterAddress: cfg.broadcast.master_address,
        groupName: cfg.broadcast.group_name,
        backend: dev === 'cpu' ? 'gloo' : 'nccl',
        ...(dev === 'cpu' ? {} : { device: dev as DeviceName }),
        dtype: cfg.publish_dtype,
        bucketBytes: cfg.broadcast.bucket_mb * 1024 * 1024,
        groupTimeoutMs: cfg.broadcast.timeout_ms,
      },
      { log },
    )
  }
  let head: TrainerHead | undefined
  if (rank === 0) {
    const peers =
      deps.peers ?? Array.from({ length: worldSize - 1 }, (_, i) => deps.id.replace(/\d+$/, String(i + 1)))
    head = new TrainerHead(actor, worker, cfg, peers, state?.step ?? 0, tp, publisher)
    const h = head
    actor.handle({
      'trainer:step': (b) => h.step(b),
      'trainer:publish': (b) => h.publish(b),
      'trainer:checkpoint': (b) => h.checkpoint(b),
    })
  } else {
    actor.handle({
      'trainer:shard': async (b) => {
        const { step, minibatches, ...arrays } = b
        const r = await worker.train({ ...arrays, minibatches }, step)
        return { step, samples: r.local.samples, tokens: r.local.tokens, ms: r.ms, stats: r.local }
      },
      'trainer:save': async (b) => {
        const t0 = Date.now()
        if (b.purpose === 'broadcast') {
          // rank 0 broadcasts to the engines; this rank takes part in gathering each bucket
          await followPublish(model, {
            dtype: cfg.publish_dtype,
            bucketBytes: cfg.broadcast.bucket_mb * 1024 * 1024,
          })
          return { files: [], ms: Date.now() - t0 }
        }
        const files = await worker.save(
          b.dir,
          b.purpose === 'publish' ? cfg.publish_dtype : 'float32',
          b.purpose === 'checkpoint' ? join(dirname(b.dir), 'optimizer') : undefined,
        )
        return { files, ms: Date.now() - t0 }
      },
    })
  }
  try {
    await actor.start()
  } catch (e) {
    model.dispose()
    throw e
  }
  log.info(
    { addr: actor.addr, params: model.numParams, resumed: !!state, step: state?.step ?? 0 },
    'trainer ready',
  )
  let closing: Promise<void> | undefined
  return {
    actor,
    worker,
    head,
    rank,
    worldSize,
    close(reason = 'stopped') {
      closing ??= (async () => {
        await actor.stop(reason, 1000)
        if (publisher?.connected) await publisher.close().catch(() => undefined)
        await worker.exclusive(async () => model.dispose())
      })()
      return closing
    },
  }
}
