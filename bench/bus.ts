/**
 * bench/bus — the bus between two processes on loopback, our runtime vs raw zeromq.js, same run:
 *   rtt     sequential ask/reply round trips (p50, p99), vs a raw Dealer↔Router echo of the same bytes
 *   thru    pipelined small asks (window W) per second, vs raw pipelined echoes
 *   bulk    a 64 MB Float32Array sent by ask (acknowledged), GB/s
 * Rounds alternate runtime and raw so machine noise hits both alike.
 * Last line: RESULT bus rtt_p50_us=… rtt_p99_us=… rtt_ratio_vs_raw=… msgs_per_s=… ratio_vs_raw=… bulk_gbps=…
 */
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { Dealer } from 'zeromq'
import { Actor } from '../runtime/actor.ts'
import { encode } from '../runtime/codec.ts'
import { silentLogger } from '../runtime/log.ts'
import { Kind, PROTOCOL_VERSION } from '../runtime/messages.ts'

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5)
const RTT_N = 2000
const THRU_N = 20000
const BULK_MB = 64

const peer = spawn(
  process.execPath,
  [...process.execArgv, new URL('./bus-peer.ts', import.meta.url).pathname],
  {
    stdio: ['ignore', 'pipe', 'inherit'],
  },
)
const addrs = await new Promise<{ actor: string; raw: string }>((resolve) =>
  createInterface({ input: peer.stdout! }).once('line', (l) => resolve(JSON.parse(l))),
)

const client = new Actor({
  id: 'bench/client',
  role: 'bench',
  inbox: false,
  log: silentLogger(),
  bus: { sendHighWaterMark: 100000, receiveHighWaterMark: 100000 },
})
await client.start()
const raw = new Dealer({ linger: 0, sendHighWaterMark: 100000, receiveHighWaterMark: 100000 })
raw.connect(addrs.raw)
const payload = { n: 1, text: 'ping' }
// the raw side sends the same bytes our envelope would be, so only codec + envelope + dispatch differ
const rawMsg = encode({
  v: PROTOCOL_VERSION,
  kind: Kind.Ask,
  type: 'test:echo',
  id: 1,
  re: 0,
  from: 'bench/client',
  time: 0,
  body: { data: payload },
})[0]

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]
}
const median = (xs: number[]) => pct(xs, 50)

async function rttOurs(n: number): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint()
    await client.ask(addrs.actor, 'test:echo', { data: payload })
    out.push(Number(process.hrtime.bigint() - t) / 1000)
  }
  return out
}
async function rttRaw(n: number): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint()
    await raw.send(rawMsg)
    await raw.receive()
    out.push(Number(process.hrtime.bigint() - t) / 1000)
  }
  return out
}
async function thruOurs(n: number): Promise<number> {
  // fully pipelined, like the raw side: issue every ask, then await the replies
  const t = performance.now()
  const all: Promise<unknown>[] = []
  for (let i = 0; i < n; i++) all.push(client.ask(addrs.actor, 'test:echo', { data: payload }))
  await Promise.all(all)
  return n / ((performance.now() - t) / 1000)
}
async function thruRaw(n: number): Promise<number> {
  const t = performance.now()
  const recv = (async () => {
    for (let i = 0; i < n; i++) await raw.receive()
  })()
  let got = 0
  const counting = (async () => {
    await recv
    got = n
  })()
  for (let i = 0; i < n; i++) await raw.send(rawMsg)
  await counting
  return got / ((performance.now() - t) / 1000)
}
async function bulkOurs(): Promise<number> {
  const big = new Float32Array((BULK_MB << 20) / 4).fill(1)
  const t = performance.now()
  const r = await client.ask(addrs.actor, 'test:echo', { data: big }, { timeoutMs: 120000 })
  if (r.data !== big.length) throw new Error('bulk echo mismatch')
  return big.byteLength / 1e9 / ((performance.now() - t) / 1000)
}
async function bulkRaw(): Promise<number> {
  const big = Buffer.alloc(BULK_MB << 20, 1)
  const t = performance.now()
  await raw.send(big)
  await raw.receive()
  return big.byteLength / 1e9 / ((performance.now() - t) / 1000)
}

// warm-up (JIT, connections)
await rttOurs(500)
await rttRaw(500)
await thruOurs(2000)
await thruRaw(2000)

const res = {
  oursRtt: [] as number[],
  rawRtt: [] as number[],
  oursThru: [] as number[],
  rawThru: [] as number[],
  oursBulk: [] as number[],
  rawBulk: [] as number[],
}
for (let r = 0; r < ROUNDS; r++) {
  res.oursRtt.push(...(await rttOurs(RTT_N)))
  res.rawRtt.push(...(await rttRaw(RTT_N)))
  res.oursThru.push(await thruOurs(THRU_N))
  res.rawThru.push(await thruRaw(THRU_N))
  res.oursBulk.push(await bulkOurs())
  res.rawBulk.push(await bulkRaw())
  process.stderr.write(
    `round ${r + 1}/${ROUNDS}: rtt p50 ${median(res.oursRtt).toFixed(0)}/${median(res.rawRtt).toFixed(0)} us · ${res.oursThru.at(-1)!.toFixed(0)}/${res.rawThru.at(-1)!.toFixed(0)} msg/s · bulk ${res.oursBulk.at(-1)!.toFixed(2)}/${res.rawBulk.at(-1)!.toFixed(2)} GB/s (ours/raw)\n`,
  )
}

const p50 = pct(res.oursRtt, 50)
const p99 = pct(res.oursRtt, 99)
const rawP50 = pct(res.rawRtt, 50)
const thru = median(res.oursThru)
const rawThru = median(res.rawThru)
const bulk = median(res.oursBulk)
console.log(
  `raw: rtt p50 ${rawP50.toFixed(0)} us p99 ${pct(res.rawRtt, 99).toFixed(0)} us · ${rawThru.toFixed(0)} msg/s · bulk ${median(res.rawBulk).toFixed(2)} GB/s`,
)
console.log(
  `RESULT bus rtt_p50_us=${p50.toFixed(0)} rtt_p99_us=${p99.toFixed(0)} rtt_ratio_vs_raw=${(p50 / rawP50).toFixed(2)} msgs_per_s=${thru.toFixed(0)} ratio_vs_raw=${(thru / rawThru).toFixed(2)} bulk_gbps=${bulk.toFixed(2)}`,
)
raw.close()
await client.stop('done', 0)
peer.kill('SIGTERM')
