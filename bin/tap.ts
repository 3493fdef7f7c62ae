/**
 * bin/tap [JOB] [--type T]… [--actor A]… [--json] [--raw] [--count N] [--heartbeats]
 * Attach to a running job and print every envelope its actors receive, decoded, live.
 *   --type    only these types (a trailing * matches a prefix: 'dir:*')
 *   --actor   only traffic received by or sent from these actor ids
 *   --json    one JSON object per line (typed arrays as {dtype, length, head})
 *   --raw     also print the raw frames as hex
 *   --count   exit after N envelopes
 * Heartbeats are left out unless --heartbeats. Ctrl-C detaches.
 */
import { hostname } from 'node:os'
import { parseArgs } from 'node:util'
import { Actor } from '../runtime/actor.ts'
import { decode } from '../runtime/codec.ts'
import { resolveJob } from '../runtime/job.ts'
import { createLogger } from '../runtime/log.ts'

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    type: { type: 'string', multiple: true },
    actor: { type: 'string', multiple: true },
    json: { type: 'boolean' },
    raw: { type: 'boolean' },
    count: { type: 'string' },
    heartbeats: { type: 'boolean' },
  },
})
const id = `tap/${hostname()}/${process.pid}`
const kinds = ['tell', 'ask', 'reply', 'error']
let ctlAddr = ''
let tap: Actor | undefined
let seen = 0
const limit = values.count ? Number(values.count) : Number.POSITIVE_INFINITY
let finish: () => void = () => {}
const finished = new Promise<void>((r) => {
  finish = r
})

function brief(v: unknown): unknown {
  if (ArrayBuffer.isView(v) && !(v instanceof DataView)) {
    const a = v as unknown as ArrayLike<number | bigint>
    return { dtype: v.constructor.name, length: a.length, head: Array.from(a).slice(0, 8).map(String) }
  }
  if (Array.isArray(v)) return v.map(brief)
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, brief(x)]))
  return v
}

async function run(): Promise<void> {
  ctlAddr = resolveJob(positionals[0])
  tap = new Actor({ id, role: 'tap', log: createLogger({ level: 'error' }), controller: ctlAddr })
  tap.handle({
    'tap:frame': (b) => {
      if (seen >= limit) return
      let env: ReturnType<typeof decode>
      try {
        env = decode(b.frames as Uint8Array[], 1 << 30)
      } catch (e) {
        process.stdout.write(`${b.actor} ← undecodable: ${(e as Error).message}\n`)
        return
      }
      if (env.type === 'dir:heartbeat' && !values.heartbeats) return
      seen++
      const at = new Date(b.at).toISOString().slice(11, 23)
      if (values.json) {
        process.stdout.write(
          `${JSON.stringify({ at: b.at, to: b.actor, dir: b.dir, kind: kinds[env.kind], type: env.type, id: env.id, re: env.re, from: env.from, time: env.time, body: brief(env.body) })}\n`,
        )
      } else {
        const body = JSON.stringify(brief(env.body))
        process.stdout.write(
          `${at} ${env.from} → ${b.actor} ${kinds[env.kind]} ${env.type} #${env.id}${env.re ? ` re #${env.re}` : ''} ${body.length > 300 ? `${body.slice(0, 300)}…` : body}\n`,
        )
      }
      if (values.raw)
        for (const f of b.frames as Uint8Array[])
          process.stdout.write(`  ${Buffer.from(f).toString('hex')}\n`)
      if (seen >= limit) finish()
    },
  })
  await tap.start()
  const { actors } = await tap.ask(ctlAddr, 'tap:attach', {
    id,
    addr: tap.addr,
    filter: { types: values.type, actors: values.actor },
  })
  process.stderr.write(`tap: attached to ${ctlAddr} (${actors} actors)\n`)
  process.once('SIGINT', finish)
  process.once('SIGTERM', finish)
  await finished
}

try {
  await run()
} catch (e) {
  const err = e as { code?: string; message: string; hint?: string }
  process.stderr.write(`tap: ${err.code ?? 'error'}: ${err.message}${err.hint ? ` → ${err.hint}` : ''}\n`)
  process.exitCode = 1
} finally {
  if (tap?.running) await tap.ask(ctlAddr, 'tap:detach', { id }, { timeoutMs: 2000 }).catch(() => {})
  await tap?.stop('detached', 0)
}
