/**
 * Entry point of every actor process the launcher starts: `actors/main.ts <role>`.
 *
 * Environment (set by the supervisor / Slurm step):
 *   AREAL_CONFIG      path of the resolved run config (JSON, written by bin/launch)
 *   AREAL_CONTROLLER  controller inbox address
 *   AREAL_ACTOR_ID    this actor's id (e.g. rollout/0)
 *   AREAL_RANK, AREAL_WORLD_SIZE   trainer ranks
 * Logs (pino, JSON lines) go to stderr, which the launcher sends to <run dir>/logs/<role>-<i>.log.
 * SIGTERM stops the actor cleanly (drain, unregister, exit 0).
 */
import { readFileSync } from 'node:fs'
import { fail } from '../runtime/errors.ts'
import { createLogger } from '../runtime/log.ts'
import type { RunConfig } from './config.ts'

export interface RoleContext {
  id: string
  controller: string
  log: ReturnType<typeof createLogger>
}

/** What a role module's start function returns: something that can be stopped. */
export interface Started {
  stop(reason: string): Promise<void>
}

const role = process.argv[2]
const id = process.env.AREAL_ACTOR_ID ?? `${role}/${process.pid}`
const controller = process.env.AREAL_CONTROLLER ?? ''
const cfgPath = process.env.AREAL_CONFIG ?? ''
const cfg = JSON.parse(readFileSync(cfgPath, 'utf8')) as RunConfig
const log = createLogger({ level: cfg.log_level, name: id })

async function start(): Promise<Started> {
  const ctx: RoleContext = { id, controller, log }
  switch (role) {
    case 'rollout':
      return (await import('./rollout/main.ts')).startRollout(cfg, ctx)
    case 'proxy':
      return (await import('./proxy/main.ts')).startProxy(cfg, ctx)
    case 'engine':
      return (await import('./engine/main.ts')).startEngine(cfg, ctx)
    case 'trainer':
      return (await import('./trainer/main.ts')).startTrainer(cfg, ctx)
    default:
      throw fail(
        'CFG_ERR_VALUE',
        `unknown role ${JSON.stringify(role)}; expected rollout, proxy, engine or trainer`,
      )
  }
}

try {
  const started = await start()
  log.info({ role }, 'actor process ready')
  const stop = (sig: string) => {
    started
      .stop(sig)
      .then(() => process.exit(0))
      .catch((e: Error) => {
        log.error({ err: e.message }, 'stop failed')
        process.exit(1)
      })
  }
  process.once('SIGTERM', () => stop('SIGTERM'))
  process.once('SIGINT', () => stop('SIGINT'))
} catch (e) {
  const err = e as { code?: string; message: string }
  log.fatal({ code: err.code, err: err.message }, 'actor failed to start')
  process.stderr.write(`${id}: ${err.code ?? 'error'}: ${err.message}\n`)
  process.exit(1)
}
