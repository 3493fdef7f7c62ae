/**
 * bin/tap [JOB] [--type T]… [--actor A]… [--session S] [--json] [--raw] [--count N] [--heartbeats]
 *         [--record FILE]
 * bin/tap --replay FILE [same filters and output options]
 *
 * Attach to a running job and print every envelope its actors receive, decoded, live; or print a recorded
 * file offline, through the same filter and formatting code, so a replay prints what the live tap printed.
 *   --type     only these types (a trailing * matches a prefix: 'dir:*')
 *   --actor    only traffic received by or sent from these actor ids
 *   --session  only envelopes whose body names this proxy session (sessionId / sessionIds, any depth ≤ 4)
 *   --json     one JSON object per line (typed arrays as {dtype, length, head})
 *   --raw      also print the raw frames as hex
 *   --count    stop after N printed envelopes
 *   --record   also write every mirrored frame, raw, with its time, actor and direction, to FILE
 * Heartbeats are left out of the output unless --heartbeats (they are recorded). Ctrl-C detaches.
 *
 * Record file (little-endian; frames stay the bytes the actor received, re-decoded on replay):
 *   header  'ATAP' u8 version=1 u8[3] 0
 *   record  u32 metaLen · meta (UTF-8 JSON {at, actor, dir}) · u32 nFrames · (u32 len · bytes) × nFrames
 */
import { closeSync, existsSync, openSync, readFileSync, writeSync } from 'node:fs'
import { hostname } from 'node:os'
import { parseArgs } from 'node:util'
import { Actor } from '../runtime/actor.ts'
import { decode } from '../runtime/codec.ts'
import { fail } from '../runtime/errors.ts'
import { resolveJob } from '../runtime/job.ts'
import { createLogger } from '../runtime/log.ts'

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    type: { type: 'string', multiple: true },
    actor: { type: 'string', multiple: true },
    session: { type: 'string' },
    json: { type: 'boolean' },
    raw: { type: 'boolean' },
    count: { type: 'string' },
    heartbeats: { type: 'boolean' },
    record: { type: 'string' },
    replay: { type: 'string' },
  },
})
const id = `tap/${hostname()}/${process.pid}`
const kinds = ['tell', 'ask', 'reply', 'error']
let ctlAddr = ''
let tap: Actor | undefined
let seen = 0
const limit = values.count ? Number(values.count) : Number.POSITIVE_INFINITY
let finished = false
let finish: () => void = () => {}
const done = new Promise<void>((r) => {
  finish = () => {
    finished = true
    r()
  }
})

/** One mirrored envelope as the tap receives it (live) or reads it back (replay). */
interface Mirrored {
  actor: string
  dir: 'in' | 'reply'
  at: number
  frames: Uint8Array[]
}

function brief(v: unknown): unknown {
  if (ArrayBuffer.isView(v) && !(v instanceof DataView)) {
    const a = v as unknown as ArrayLike<number | bigint>
    return { dtype: v.constructor.name, length: a.length, head: Array.from(a).slice(0, 8).map(String) }
  }
  if (Array.isArray(v)) return v.map(brief)
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, brief(x)]))
  return v
}

function typeMatches(type: string): boolean {
  const t = values.type
  return !t?.length || t.some((p) => type === p || (p.endsWith('*') && type.startsWith(p.slice(0, -1))))
}

function namesSession(v: unknown, s: string, depth = 0): boolean {
  if (depth > 4 || !v || typeof v !== 'object' || ArrayBuffer.isView(v)) return false
  if (Array.isArray(v)) return v.some((x) => namesSession(x, s, depth + 1))
  for (const [k, x] of Object.entries(v)) {
    if (k === 'sessionId' && x === s) return true
    if (k === 'sessionIds' && Array.isArray(x) && x.includes(s)) return true
    if (namesSession(x, s, depth + 1)) return true
  }
  return false
}

/** Filter and print one mirrored envelope: the one code path of live tapping and replay. */
function show(b: Mirrored): void {
  if (seen >= limit) return
  let env: ReturnType<typeof decode>
  try {
    env = decode(b.frames, 1 << 30)
  } catch (e) {
    process.stdout.write(`${b.actor} ← undecodable: ${(e as Error).message}\n`)
    return
  }
  if (env.type === 'dir:heartbeat' && !values.heartbeats) return
  // live, the actors apply --type/--actor before mirroring; a replay applies them here
  if (!typeMatches(env.type)) return
  if (values.actor?.length && !values.actor.includes(b.actor) && !values.actor.includes(env.from)) return
  if (values.session && !namesSession(env.body, values.session)) return
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
  if (values.raw) for (const f of b.frames) process.stdout.write(`  ${Buffer.from(f).toString('hex')}\n`)
  if (seen >= limit) finish()
}

const MAGIC = Buffer.from([0x41, 0x54, 0x41, 0x50, 1, 0, 0, 0]) // 'ATAP' v1

function u32(n: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32LE(n)
  return b
}

/** Appends mirrored envelopes to a record file. */
class Recorder {
  private readonly fd: number
  records = 0
  constructor(readonly file: string) {
    try {
      this.fd = openSync(file, 'w')
    } catch (e) {
      throw fail('CFG_ERR_FILE', `--record ${file}: ${(e as Error).message}`, { file })
    }
    writeSync(this.fd, MAGIC)
  }
  write(b: Mirrored): void {
    const meta = Buffer.from(JSON.stringify({ at: b.at, actor: b.actor, dir: b.dir }))
    const parts = [u32(meta.length), meta, u32(b.frames.length)]
    for (const f of b.frames) parts.push(u32(f.byteLength), Buffer.from(f.buffer, f.byteOffset, f.byteLength))
    writeSync(this.fd, Buffer.concat(parts))
    this.records++
  }
  close(): void {
    closeSync(this.fd)
  }
}

/** Read a record file back (whole file; a truncated last record is an error naming its offset). */
function* readRecords(file: string): Generator<Mirrored> {
  if (!existsSync(file)) throw fail('CFG_ERR_FILE', `--replay ${file}: no such file`, { file })
  const buf = readFileSync(file)
  if (buf.length < 8 || !buf.subarray(0, 4).equals(MAGIC.subarray(0, 4)))
    throw fail('CFG_ERR_FILE', `--replay ${file}: not a bin/tap record file (no ATAP header)`, { file })
  if (buf[4] !== 1)
    throw fail('CFG_ERR_FILE', `--replay ${file}: record format v${buf[4]}, this bin/tap reads v1`, { file })
  let off = 8
  const need = (n: number, start: number) => {
    if (off + n > buf.length)
      throw fail('RT_ERR_DECODE', `--replay ${file}: record at byte ${start} is truncated`, {
        file,
        offset: start,
      })
  }
  while (off < buf.length) {
    const start = off
    need(4, start)
    const metaLen = buf.readUInt32LE(off)
    off += 4
    need(metaLen + 4, start)
    let meta: { at: number; actor: string; dir: 'in' | 'reply' }
    try {
      meta = JSON.parse(buf.subarray(off, off + metaLen).toString('utf8'))
    } catch (e) {
      throw fail('RT_ERR_DECODE', `--replay ${file}: record at byte ${start}: ${(e as Error).message}`, {
        file,
        offset: start,
      })
    }
    off += metaLen
    const n = buf.readUInt32LE(off)
    off += 4
    const frames: Uint8Array[] = []
    for (let i = 0; i < n; i++) {
      need(4, start)
      const len = buf.readUInt32LE(off)
      off += 4
      need(len, start)
      // a copy: decode may keep views of bulk frames
      frames.push(new Uint8Array(buf.subarray(off, off + len)))
      off += len
    }
    yield { ...meta, frames }
  }
}

async function live(): Promise<void> {
  ctlAddr = resolveJob(positionals[0])
  const rec = values.record ? new Recorder(values.record) : undefined
  try {
    tap = new Actor({ id, role: 'tap', log: createLogger({ level: 'error' }), controller: ctlAddr })
    tap.handle({
      'tap:frame': (b) => {
        if (finished) return
        const m: Mirrored = { actor: b.actor, dir: b.dir, at: b.at, frames: b.frames as Uint8Array[] }
        rec?.write(m)
        show(m)
      },
    })
    await tap.start()
    const { actors } = await tap.ask(ctlAddr, 'tap:attach', {
      id,
      addr: tap.addr,
      filter: { types: values.type, actors: values.actor },
    })
    process.stderr.write(
      `tap: attached to ${ctlAddr} (${actors} actors)${rec ? `; recording to ${rec.file}` : ''}\n`,
    )
    process.once('SIGINT', finish)
    process.once('SIGTERM', finish)
    await done
  } finally {
    rec?.close()
    if (rec) process.stderr.write(`tap: recorded ${rec.records} envelopes to ${rec.file}\n`)
  }
}

function replay(file: string): void {
  for (const m of readRecords(file)) {
    if (finished) break
    show(m)
  }
}

try {
  if (values.replay) replay(values.replay)
  else await live()
} catch (e) {
  const err = e as { code?: string; message: string; hint?: string }
  process.stderr.write(`tap: ${err.code ?? 'error'}: ${err.message}${err.hint ? ` → ${err.hint}` : ''}\n`)
  process.exitCode = 1
} finally {
  if (tap?.running) await tap.ask(ctlAddr, 'tap:detach', { id }, { timeoutMs: 2000 }).catch(() => {})
  await tap?.stop('detached', 0)
}
