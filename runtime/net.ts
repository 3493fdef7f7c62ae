/**
 * Small network helpers shared by actors, tests and benchmarks.
 */
import { createServer } from 'node:net'

/** A TCP port free on `host` a moment ago (the OS picks it; the caller binds it right after). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, host, () => {
      const port = (s.address() as { port: number }).port
      s.close(() => resolve(port))
    })
  })
}
