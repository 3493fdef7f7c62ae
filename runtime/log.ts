/**
 * Logging. One root pino logger per process, made in `bin/` (or by a test); actors take
 * `log.child({ actor, id })`. Records: object first, then a constant message.
 */
import { type Logger, pino } from 'pino'

export type { Logger }

export interface LogOptions {
  level?: string
  /** file path for JSON lines; default stderr */
  file?: string
  name?: string
}

export function createLogger(opts: LogOptions = {}): Logger {
  const level = opts.level ?? process.env.LOG_LEVEL ?? 'info'
  const base = { name: opts.name, pid: process.pid }
  if (opts.file) return pino({ level, base }, pino.destination({ dest: opts.file, mkdir: true, sync: false }))
  return pino({ level, base }, pino.destination(2))
}

/** A logger that drops everything (tests and benches that assert on other things). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' })
}
