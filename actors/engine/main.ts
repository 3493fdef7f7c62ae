/**
 * The engine role's process side. `startEngineRole(runConfig, ctx)` is what the launcher's actors/main.ts
 * calls (it takes the `engine` and `bus` sections of the resolved run config); run directly
 * (`node --import tsx actors/engine/main.ts`) this file is a process entry on its own, configured the way
 * the supervisor configures children:
 *   AREAL_CONFIG      path of the resolved run config (JSON)
 *   AREAL_CONTROLLER  controller inbox address
 *   AREAL_ACTOR_ID    this actor's id (e.g. 'engine/0')
 */
import { pathToFileURL } from 'node:url'
import { type BusConfig, toBusConfig } from '../../runtime/bus-config.ts'
import { createLogger, type Logger } from '../../runtime/log.ts'
import { readSection, runEntry } from '../trainer/entry.ts'
import { type EngineConfig, engineSchema, startEngine } from './actor.ts'

export interface RoleContext {
  id: string
  controller: string
  log: Logger
}

/** Start the engine of a run config; `stop` closes it (in-flight requests are answered 'abort'). */
export async function startEngineRole(
  cfg: { engine: EngineConfig; bus?: Parameters<typeof toBusConfig>[0] },
  ctx: RoleContext,
): Promise<{ stop(reason: string): Promise<void> }> {
  const bus: Partial<BusConfig> | undefined = cfg.bus ? toBusConfig(cfg.bus) : undefined
  const engine = await startEngine(cfg.engine, {
    id: ctx.id,
    log: ctx.log,
    controller: ctx.controller || undefined,
    bus,
  })
  return { stop: (reason) => engine.close(reason) }
}

export { startEngineRole as startEngine }

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const id = process.env.AREAL_ACTOR_ID ?? `engine/${process.pid}`
  const log = createLogger({ name: id })
  await runEntry(log, async () => {
    const { section, bus } = readSection('engine', engineSchema)
    const ctx = { id, log, controller: process.env.AREAL_CONTROLLER ?? '' }
    return startEngineRole({ engine: section, bus }, ctx)
  })
}
