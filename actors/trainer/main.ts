/**
 * The trainer role's process side. `startTrainerRole(runConfig, ctx)` is what the launcher's
 * actors/main.ts calls (it takes the `actor`, `bus` and `gconfig` sections of the resolved run config);
 * run directly (`node --import tsx actors/trainer/main.ts`) this file is a process entry on its own.
 * Environment, as the supervisor sets it:
 *   AREAL_CONFIG        path of the resolved run config (JSON)
 *   AREAL_CONTROLLER    controller inbox address
 *   AREAL_ACTOR_ID      this actor's id ('trainer/<rank>')
 *   AREAL_RANK, AREAL_WORLD_SIZE   this rank and the number of ranks (default 0 and actor.world_size)
 *   AREAL_TP_SIZE                  tensor-parallel ranks per data-parallel replica (default actor.tp_size)
 *   AREAL_PUBLISH_ENGINES          JSON [{url, tpSize}]: the SGLang servers of publish_mode broadcast
 *   AREAL_RDZV          FileStore path of the ranks' process group (default actor.rendezvous)
 *   AREAL_RESUME_FROM   a trainer checkpoint directory to continue from
 */
import { pathToFileURL } from 'node:url'
import { toBusConfig } from '../../runtime/bus-config.ts'
import { fail } from '../../runtime/errors.ts'
import { createLogger, type Logger } from '../../runtime/log.ts'
import { startTrainer, type TrainerConfig, trainerSchema } from './actor.ts'
import { readSection, runEntry } from './entry.ts'

export interface RoleContext {
  id: string
  controller: string
  log: Logger
}

function publishEngines(): { url: string; tpSize: number }[] | undefined {
  const raw = process.env.AREAL_PUBLISH_ENGINES
  if (!raw) return undefined
  try {
    const list = JSON.parse(raw) as { url?: unknown; tpSize?: unknown }[]
    return list.map((e) => {
      if (typeof e.url !== 'string') throw new Error('an entry has no url')
      return { url: e.url, tpSize: typeof e.tpSize === 'number' ? e.tpSize : 1 }
    })
  } catch (e) {
    throw fail('CFG_ERR_VALUE', `AREAL_PUBLISH_ENGINES: ${(e as Error).message}`, {
      key: 'AREAL_PUBLISH_ENGINES',
    })
  }
}

function envInt(name: string): number | undefined {
  const v = process.env[name]
  if (v === undefined || v === '') return undefined
  if (!/^\d+$/.test(v))
    throw fail('CFG_ERR_VALUE', `${name}=${JSON.stringify(v)}: expected a non-negative integer`)
  return Number(v)
}

/** Start this process's trainer rank; `stop` unregisters and frees the model. */
export async function startTrainerRole(
  cfg: { actor: TrainerConfig; bus?: Parameters<typeof toBusConfig>[0]; gconfig?: { temperature: number } },
  ctx: RoleContext,
): Promise<{ stop(reason: string): Promise<void> }> {
  let actorCfg = cfg.actor
  // the trainer's log-probs must be taken at the sampling temperature
  if (cfg.gconfig && cfg.gconfig.temperature !== actorCfg.ppo.temperature) {
    ctx.log.info(
      { temperature: cfg.gconfig.temperature },
      'actor.ppo.temperature follows gconfig.temperature',
    )
    actorCfg = { ...actorCfg, ppo: { ...actorCfg.ppo, temperature: cfg.gconfig.temperature } }
  }
  const t = await startTrainer(actorCfg, {
    id: ctx.id,
    log: ctx.log,
    controller: ctx.controller || undefined,
    bus: cfg.bus ? toBusConfig(cfg.bus) : undefined,
    rank: envInt('AREAL_RANK'),
    worldSize: envInt('AREAL_WORLD_SIZE'),
    tpSize: envInt('AREAL_TP_SIZE'),
    publishEngines: publishEngines(),
    rendezvous: process.env.AREAL_RDZV || undefined,
    resumeFrom: process.env.AREAL_RESUME_FROM || undefined,
  })
  return { stop: (reason) => t.close(reason) }
}

export { startTrainerRole as startTrainer }

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const id = process.env.AREAL_ACTOR_ID ?? `trainer/${process.pid}`
  const log = createLogger({ name: id })
  await runEntry(log, async () => {
    const { section, bus, raw } = readSection('actor', trainerSchema)
    const gconfig = raw.gconfig as { temperature?: number } | undefined
    const ctx = { id, log, controller: process.env.AREAL_CONTROLLER ?? '' }
    return startTrainerRole(
      {
        actor: section,
        bus,
        gconfig: typeof gconfig?.temperature === 'number' ? { temperature: gconfig.temperature } : undefined,
      },
      ctx,
    )
  })
}
