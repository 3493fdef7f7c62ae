/**
 * Start a proxy actor process: the HTTP server agents talk to, and the bus inbox the controller, rollout
 * and trainer talk to, both over one ProxyService.
 *
 * Engines: `proxy.engines` from the config, or, when the launcher sets AREAL_ENGINES (a JSON list of
 * engine configs, e.g. `[{"kind": "embedded", "actor": "engine/0"}]`), that list. The tokenizer comes
 * from `proxy.model_dir`, or the engine's model directory (`engine.model.path`) when that is empty.
 */
import { Actor } from '../../runtime/actor.ts'
import { toBusConfig } from '../../runtime/bus-config.ts'
import { fail } from '../../runtime/errors.ts'
import type { RunConfig } from '../config.ts'
import type { RoleContext, Started } from '../main.ts'
import { attachProxy } from './actor.ts'
import { buildApp } from './app.ts'
import { type EngineConfig, validate } from './config.ts'
import { EmbeddedEngine } from './engines/embedded.ts'
import { makeEngine } from './engines/factory.ts'
import type { Engine } from './engines/types.ts'
import { ProxyService } from './service.ts'

export interface ProxyProcess extends Started {
  actor: Actor
  service: ProxyService
  /** where agents reach the HTTP server */
  url: string
}

export async function startProxy(cfg: RunConfig, ctx: RoleContext): Promise<ProxyProcess> {
  const engineList = process.env.AREAL_ENGINES
    ? (parseEngines(process.env.AREAL_ENGINES) as unknown[])
    : (cfg.proxy.engines as unknown[])
  const config = validate({
    ...cfg.proxy,
    model_dir: cfg.proxy.model_dir || (cfg.engine as { model?: { path?: string } }).model?.path || '',
    engines: engineList,
  })
  const actor = new Actor({
    id: ctx.id,
    role: 'proxy',
    log: ctx.log,
    controller: ctx.controller,
    bus: toBusConfig(cfg.bus),
  })
  const engines: Engine[] = config.engines.map((e: EngineConfig) =>
    e.kind === 'embedded'
      ? new EmbeddedEngine(actor, e.actor!, e.timeout_ms ?? config.request_timeout_ms)
      : makeEngine(e, config),
  )
  const service = new ProxyService(config, { log: ctx.log, engines })
  const app = buildApp(service)
  await app.listen({ host: config.host, port: config.port })
  attachProxy(actor, service)
  try {
    await actor.start()
  } catch (e) {
    await app.close()
    await service.close()
    throw e
  }
  const url = service.url
  ctx.log.info({ url, bus: actor.addr, engines: engines.map((e) => e.name) }, 'proxy ready')
  return {
    actor,
    service,
    url,
    async stop(reason) {
      await app.close()
      await actor.stop(reason)
      await service.close()
    },
  }
}

function parseEngines(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch (e) {
    throw fail('CFG_ERR_VALUE', `AREAL_ENGINES is not JSON: ${(e as Error).message}`, {
      key: 'AREAL_ENGINES',
    })
  }
}
