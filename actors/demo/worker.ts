/**
 * Demo worker actor (the multi-actor demo run by `bin/demo` until the training loop is the main job).
 * Registers with the controller (AREAL_CONTROLLER), answers `demo:work` by counting primes in a range.
 * Sockets: one inbox (Router, ephemeral port); Dealer to the controller for registration/heartbeats.
 */
import { Actor } from '../../runtime/actor.ts'
import { createLogger } from '../../runtime/log.ts'

function countPrimes(lo: number, hi: number): number {
  let n = 0
  for (let x = Math.max(2, lo); x < hi; x++) {
    let prime = true
    for (let d = 2; d * d <= x; d++)
      if (x % d === 0) {
        prime = false
        break
      }
    if (prime) n++
  }
  return n
}

const id = process.env.AREAL_ACTOR_ID ?? `worker/${process.pid}`
const log = createLogger({ level: process.env.LOG_LEVEL ?? 'info', name: id })
const actor = new Actor({ id, role: 'worker', log, controller: process.env.AREAL_CONTROLLER })
const delayMs = Number(process.env.DEMO_DELAY_MS ?? 0)
actor.handle({
  'demo:work': async (b) => {
    if (delayMs) await new Promise((r) => setTimeout(r, delayMs))
    return { primes: countPrimes(b.lo, b.hi), worker: id }
  },
  'sys:stop': (b) => {
    setImmediate(() => actor.stop(b.reason).then(() => process.exit(0)))
  },
})
process.once('SIGTERM', () => actor.stop('SIGTERM').then(() => process.exit(0)))
await actor.start()
log.info({ addr: actor.addr }, 'worker ready')
