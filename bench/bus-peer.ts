/**
 * The far side of bench/bus: one process holding (1) a runtime Actor answering test:echo and (2) a raw
 * zeromq.js Router that echoes frames back with no codec and no envelope. Prints both addresses as JSON.
 */
import { Router } from 'zeromq'
import { Actor } from '../runtime/actor.ts'
import { silentLogger } from '../runtime/log.ts'

const actor = new Actor({
  id: 'bench/echo',
  role: 'bench',
  log: silentLogger(),
  bus: { sendHighWaterMark: 100000, receiveHighWaterMark: 100000 },
})
actor.handle({
  'test:echo': (b) => ({ data: ArrayBuffer.isView(b.data) ? (b.data as Float32Array).length : b.data }),
})
await actor.start()

const raw = new Router({ linger: 0, sendHighWaterMark: 100000, receiveHighWaterMark: 100000 })
await raw.bind('tcp://127.0.0.1:*')
process.stdout.write(`${JSON.stringify({ actor: actor.addr, raw: raw.lastEndpoint })}\n`)
process.once('SIGTERM', () => process.exit(0))
for await (const [rid, ...frames] of raw) {
  // a bulk message is acknowledged with its size, like the actor's echo of a typed array
  if (frames.length === 1 && frames[0].length > 1 << 20)
    await raw.send([rid, Buffer.from(String(frames[0].length))])
  else await raw.send([rid, ...frames])
}
