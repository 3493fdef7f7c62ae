/**
 * Every message of the bus, and nothing else: the only home of message shapes (STYLE §4).
 *
 * An envelope is `{v, kind, type, id, re, from, time, body}`:
 *   v     protocol version (PROTOCOL_VERSION)      kind  Tell | Ask | Reply | Error
 *   type  namespaced name, e.g. 'dir:register'      id    sender-local sequence number
 *   re    for Reply/Error: the id of the ask        from  sender actor id ('rollout/3')
 *   time  sender's clock, ms since epoch            body  typed by (kind, type) below
 *
 * `tells` maps a one-way message type to its body shape; `asks` maps a request type to
 * [request body, reply body]. A Reply carries the type of its ask; an Error carries a WireError.
 * Adding a message = adding one line here (and a sample in test/fixtures/messages.ts).
 */
import { any, arr, bool, type Infer, int, lit, num, obj, opt, rec, type Shape, str } from './shape.ts'

export const PROTOCOL_VERSION = 1

export const Kind = { Tell: 0, Ask: 1, Reply: 2, Error: 3 } as const
export type Kind = (typeof Kind)[keyof typeof Kind]

// --- shared shapes --------------------------------------------------------------------------------------
export const dirEntry = obj({
  id: str,
  role: str,
  addr: str,
  pid: int,
  host: str,
  state: lit('alive', 'dead', 'draining'),
  /** ms since the last heartbeat, as seen by the controller when the entry was read */
  heartbeatAgeMs: num,
  startedAt: num,
  meta: opt(rec(any)),
})
export type DirEntry = Infer<typeof dirEntry>

export const tapFilter = obj({ types: opt(arr(str)), actors: opt(arr(str)) })
export type TapFilter = Infer<typeof tapFilter>
export const tapInfo = obj({ id: str, addr: str, filter: tapFilter })
export type TapInfo = Infer<typeof tapInfo>

export const wireError = obj({ code: str, message: str, details: opt(rec(any)) })

// --- one-way messages -------------------------------------------------------------------------------------
export const tells = {
  /** actor → controller, every heartbeat interval */
  'dir:heartbeat': obj({ id: str }),
  /** controller → watchers: an actor registered (or came back) */
  'dir:up': obj({ entry: dirEntry }),
  /** controller → watchers: an actor missed its deadline, exited, or unregistered */
  'dir:down': obj({ id: str, role: str, reason: str }),
  /** actor → controller, on clean stop */
  'dir:unregister': obj({ id: str, reason: str }),
  /** controller → every actor: the set of attached taps changed */
  'tap:set': obj({ taps: arr(tapInfo) }),
  /** actor → tap: a mirrored envelope (`frames` are the raw frames the actor received) */
  'tap:frame': obj({ actor: str, dir: lit('in', 'reply'), at: num, frames: arr(any) }),
  /** test and demo traffic */
  'test:note': obj({ text: str, seq: opt(int) }),
  /** ask any actor to stop (clean drain) */
  'sys:stop': obj({ reason: str }),
} as const satisfies Record<string, Shape<unknown>>

// --- request/reply --------------------------------------------------------------------------------------
export const asks = {
  'dir:register': [
    obj({ id: str, role: str, addr: str, pid: int, host: str, meta: opt(rec(any)) }),
    obj({ heartbeatMs: int, deadlineMs: int, taps: arr(tapInfo) }),
  ],
  'dir:lookup': [obj({ id: opt(str), role: opt(str) }), obj({ entries: arr(dirEntry) })],
  'dir:list': [obj({}), obj({ entries: arr(dirEntry), controller: str, startedAt: num })],
  /** subscribe the caller to dir:up / dir:down for these ids or roles (none = everything) */
  'dir:watch': [obj({ ids: opt(arr(str)), roles: opt(arr(str)) }), obj({ entries: arr(dirEntry) })],
  'tap:attach': [obj({ id: str, addr: str, filter: tapFilter }), obj({ actors: int })],
  'tap:detach': [obj({ id: str }), obj({ ok: bool })],
  /** liveness and counters of one actor */
  'sys:stats': [
    obj({}),
    obj({
      id: str,
      role: str,
      pid: int,
      uptimeMs: num,
      received: int,
      rejected: rec(int),
      handled: int,
      inflight: int,
    }),
  ],
  /** echo back the body (tests, benchmarks, `bin/send`) */
  'test:echo': [obj({ data: any }), obj({ data: any })],
  /** ask another actor test:echo and return its reply (tests of peer-to-peer traffic) */
  'test:relay': [obj({ to: str, data: any }), obj({ data: any })],
  /** the test:note texts this actor received, in order */
  'test:notes': [obj({}), obj({ notes: arr(str) })],
  /** demo job (bin/demo): count the primes in [lo, hi) */
  'demo:work': [obj({ lo: int, hi: int }), obj({ primes: int, worker: str })],
  /** sleep then reply (tests of timeouts and cancellation) */
  'test:sleep': [obj({ ms: int }), obj({ slept: int })],
} as const satisfies Record<string, readonly [Shape<unknown>, Shape<unknown>]>

export type TellType = keyof typeof tells
export type AskType = keyof typeof asks
export type MsgType = TellType | AskType
export type TellBody<T extends TellType> = Infer<(typeof tells)[T]>
export type AskReq<T extends AskType> = Infer<(typeof asks)[T][0]>
export type AskRes<T extends AskType> = Infer<(typeof asks)[T][1]>
export type WireError = Infer<typeof wireError>

interface EnvelopeBase {
  v: number
  id: number
  re: number
  from: string
  time: number
}
export type TellEnvelope<T extends TellType = TellType> = EnvelopeBase & {
  kind: 0
  type: T
  body: TellBody<T>
}
export type AskEnvelope<T extends AskType = AskType> = EnvelopeBase & { kind: 1; type: T; body: AskReq<T> }
export type ReplyEnvelope<T extends AskType = AskType> = EnvelopeBase & { kind: 2; type: T; body: AskRes<T> }
export type ErrorEnvelope = EnvelopeBase & { kind: 3; type: string; body: WireError }
export type Envelope = TellEnvelope | AskEnvelope | ReplyEnvelope | ErrorEnvelope

export function isTell(type: string): type is TellType {
  return Object.hasOwn(tells, type)
}
export function isAsk(type: string): type is AskType {
  return Object.hasOwn(asks, type)
}

/** null when the body fits its (kind, type); else what is wrong. Unknown types are reported too. */
export function checkBody(env: { kind: number; type: string; body: unknown }): string | null {
  switch (env.kind) {
    case Kind.Tell:
      return isTell(env.type) ? tells[env.type](env.body, 'body') : `unknown tell type "${env.type}"`
    case Kind.Ask:
      return isAsk(env.type) ? asks[env.type][0](env.body, 'body') : `unknown ask type "${env.type}"`
    case Kind.Reply:
      return isAsk(env.type) ? asks[env.type][1](env.body, 'body') : `unknown reply type "${env.type}"`
    case Kind.Error:
      return wireError(env.body, 'body')
    default:
      return `unknown kind ${env.kind}`
  }
}
