/**
 * Waiting for started processes to register with the controller's directory, whatever scheduler started
 * them: resolves once every id is alive, rejects with RT_ERR_SPAWN when one exits (abnormally) first or
 * the time runs out.
 */
import type { Directory } from '../directory.ts'
import { fail } from '../errors.ts'
import type { ChildExit, Supervisor } from '../supervisor.ts'

export function waitRegistered(
  dir: Directory,
  sup: Supervisor,
  ids: string[],
  timeoutMs: number,
  logsDir: string,
): Promise<void> {
  return new Promise<void>((res, rej) => {
    const want = new Set(ids.filter((id) => dir.get(id)?.state !== 'alive'))
    if (want.size === 0) return res()
    const done = (err?: Error) => {
      clearTimeout(timer)
      dir.off('up', onUp)
      sup.off('exit', onExit)
      if (err) rej(err)
      else res()
    }
    const onUp = (e: { id: string }) => {
      want.delete(e.id)
      if (want.size === 0) done()
    }
    const onExit = (e: ChildExit) => {
      if (want.has(e.id) && e.abnormal)
        done(
          fail('RT_ERR_SPAWN', `${e.id} exited (${e.signal ?? e.code}) before registering; see ${logsDir}`),
        )
    }
    const timer = setTimeout(
      () => done(fail('RT_ERR_SPAWN', `${[...want].join(', ')} did not register within ${timeoutMs} ms`)),
      timeoutMs,
    )
    dir.on('up', onUp)
    sup.on('exit', onExit)
  })
}
