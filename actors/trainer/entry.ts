/**
 * What the engine and trainer process entries share: reading their section of the resolved run config the
 * way the launcher gives it (env AREAL_CONFIG = path of a JSON file holding the whole config), and the
 * start / stop-on-signal frame of a process.
 */
import { readFileSync } from 'node:fs'
import { busSchema } from '../../runtime/bus-config.ts'
import { type ConfigOf, c, loadConfig, type ObjNode } from '../../runtime/config.ts'
import { fail } from '../../runtime/errors.ts'
import type { Logger } from '../../runtime/log.ts'

/** The validated `name` section (and the bus section, when present) of $AREAL_CONFIG. */
export function readSection<N extends ObjNode>(
  name: string,
  schema: N,
  file = process.env.AREAL_CONFIG,
): { section: ConfigOf<N>; bus: ConfigOf<typeof busSchema> | undefined; raw: Record<string, unknown> } {
  if (!file) throw fail('CFG_ERR_MISSING', 'AREAL_CONFIG (path of the resolved run config JSON) is not set')
  let raw: Record<string, unknown>
  try {
    raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>
  } catch (e) {
    throw fail('CFG_ERR_FILE', `${file}: ${(e as Error).message}`, { file })
  }
  const cfg = loadConfig(c.obj({ [name]: schema }), { raw: { [name]: raw[name] } }) as Record<string, unknown>
  const bus = raw.bus ? loadConfig(c.obj({ bus: busSchema }), { raw: { bus: raw.bus } }).bus : undefined
  return { section: cfg[name] as ConfigOf<N>, bus, raw }
}

/** Start a role; exit 0 after a clean stop on SIGTERM/SIGINT, exit 1 with a logged code if starting fails. */
export async function runEntry(
  log: Logger,
  start: () => Promise<{ stop(reason: string): Promise<void> }>,
): Promise<void> {
  try {
    const started = await start()
    const stop = (sig: string) =>
      started.stop(sig).then(
        () => process.exit(0),
        (e: Error) => {
          log.error({ err: e.message }, 'stop failed')
          process.exit(1)
        },
      )
    process.once('SIGTERM', () => stop('SIGTERM'))
    process.once('SIGINT', () => stop('SIGINT'))
  } catch (e) {
    const err = e as { code?: string; message: string }
    log.fatal({ code: err.code, err: err.message }, 'actor failed to start')
    process.exit(1)
  }
}
