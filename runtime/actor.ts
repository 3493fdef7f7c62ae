/**
 * The actor base: one inbox, peer-to-peer sends, typed handlers, registration and heartbeats.
 *
 *            peers' Dealers ───────▶ ┌──────────────────────┐
 *   (tell / ask from anyone)         │ inbox: Router (bind) │──▶ handlers[type](body, env)
 *                                    └──────────────────────┘        │ ask → reply on the same Router
 *   tell / ask / broadcast ─▶ one Dealer per peer address (connect) ─┘
 *                                    replies come back on that Dealer (its own receive loop)
 *
 * - Requests arrive on the inbox; replies to our own asks arrive on the Dealer we sent them on, so a
 *   handler that awaits an ask never blocks the inbox loop from seeing the reply (no deadlock), and a
 *   full inbox (maxInflight handlers running) simply stops reading: ZeroMQ's high-water marks then
 *   push back on senders, whose awaited sends time out with RT_ERR_SEND.
 * - Every frame is decoded by runtime/codec.ts; a bad one is logged, counted by code in `stats`, and, if
 *   it was an ask we could read an id from, answered with an Error reply. The actor never crashes on input.
 * - With `controller` set, start() registers with the controller's directory and heartbeats; the actor
 *   learns where peers are from it (cached, updated by dir:up/dir:down when watching) and fails asks
 *   fast when a peer is known dead or its connection drops.
 * - Taps (bin/tap) get a copy of every received frame when attached; with none attached this costs one
 *   length check per message.
 */
import { hostname } from 'node:os'
import { Dealer, Router } from 'zeromq'
import { type BusConfig, busDefaults } from './bus-config.ts'
import { decode, encode, type RejectInfo } from './codec.ts'
import { type CodedError, fail, fromWire, toWire } from './errors.ts'
import type { Logger } from './log.ts'
import {
  type AskEnvelope,
  type AskReq,
  type AskRes,
  type AskType,
  type DirEntry,
  type Envelope,
  Kind,
  PROTOCOL_VERSION,
  type TapInfo,
  type TellBody,
  type TellEnvelope,
  type TellType,
} from './messages.ts'
import { Sender, unbatch } from './sender.ts'

export type { BusConfig }

export type Handlers = {
  [T in TellType]?: (body: TellBody<T>, env: TellEnvelope<T>) => void | Promise<void>
} & {
  [T in AskType]?: (body: AskReq<T>, env: AskEnvelope<T>) => AskRes<T> | Promise<AskRes<T>>
}

export interface ActorOptions {
  /** unique id, e.g. 'rollout/3' */
  id: string
  /** role, e.g. 'rollout' */
  role: string
  log: Logger
  bus?: Partial<BusConfig>
  /** controller inbox address; when set, start() registers and heartbeats */
  controller?: string
  /** bind an inbox (default true). Clients (bin/ps, bin/send) only ask, and need none. */
  inbox?: boolean
  meta?: Record<string, unknown>
}

export interface AskOptions {
  timeoutMs?: number
  signal?: AbortSignal
}

interface Pending {
  resolve: (v: unknown) => void
  reject: (e: Error) => void
  /** when it times out (ms since epoch) */
  deadline: number
  target: string
  timeoutMs: number
  peer: Peer
  type: string
  onAbort?: () => void
  signal?: AbortSignal
}

interface Peer {
  addr: string
  sock: Dealer
  sender: Sender
  /** asks in flight on this peer's connection */
  pending: Set<number>
  connected: boolean
}

const ADDR_RE = /^(tcp|ipc|inproc):\/\//

export class Actor {
  readonly id: string
  readonly role: string
  readonly log: Logger
  readonly bus: BusConfig
  readonly startedAt = Date.now()
  /** bound inbox address (after start) */
  addr = ''
  private readonly controllerAddr: string | undefined
  private readonly wantInbox: boolean
  private readonly meta: Record<string, unknown> | undefined
  private inbox: Router | undefined
  private inboxSender: Sender | undefined
  private readonly handlers: Handlers = {}
  private readonly peers = new Map<string, Peer>()
  private readonly pending = new Map<number, Pending>()
  private readonly directory = new Map<string, DirEntry>()
  private readonly downListeners = new Set<(id: string, reason: string) => void>()
  private taps: { info: TapInfo; sock: Dealer }[] = []
  /** local directory (the controller's own): consulted instead of asking a controller */
  private resolver: ((sel: { id?: string; role?: string }) => DirEntry[]) | undefined
  private seq = 0
  private timeoutTimer: NodeJS.Timeout | undefined
  private timeoutAt = Number.POSITIVE_INFINITY
  private readonly rejectLog = new Map<string, { since: number; n: number; suppressed: number }>()
  private inflight = 0
  private inflightWaiters: (() => void)[] = []
  private heartbeat: NodeJS.Timeout | undefined
  private state: 'new' | 'running' | 'draining' | 'closed' = 'new'
  private loops: Promise<void>[] = []
  readonly stats = { received: 0, handled: 0, rejected: {} as Record<string, number>, tapDropped: 0 }

  constructor(opts: ActorOptions) {
    this.id = opts.id
    this.role = opts.role
    this.log = opts.log.child({ actor: opts.role, id: opts.id })
    this.bus = { ...busDefaults, ...opts.bus }
    this.controllerAddr = opts.controller
    this.wantInbox = opts.inbox ?? true
    this.meta = opts.meta
    this.handle({
      'sys:stats': () => ({
        id: this.id,
        role: this.role,
        pid: process.pid,
        uptimeMs: Date.now() - this.startedAt,
        received: this.stats.received,
        rejected: { ...this.stats.rejected },
        handled: this.stats.handled,
        inflight: this.inflight,
      }),
      'test:echo': (b) => ({ data: b.data }),
      'test:sleep': async (b) => {
        await new Promise((r) => setTimeout(r, b.ms))
        return { slept: b.ms }
      },
      'tap:set': (b) => this.setTaps(b.taps),
      'dir:up': (b) => {
        this.directory.set(b.entry.id, b.entry)
      },
      'dir:down': (b) => this.peerDown(b.id, b.reason),
    })
  }

  /** Add or replace handlers (later calls win). */
  handle(h: Handlers): this {
    Object.assign(this.handlers, h)
    return this
  }

  /** Resolve ids and roles locally (the controller hosts the directory itself). */
  setResolver(fn: (sel: { id?: string; role?: string }) => DirEntry[]): void {
    this.resolver = fn
  }

  /** Called with (id, reason) whenever a peer is declared dead (dir:down) while watching. */
  onPeerDown(fn: (id: string, reason: string) => void): () => void {
    this.downListeners.add(fn)
    return () => this.downListeners.delete(fn)
  }

  get running(): boolean {
    return this.state === 'running'
  }

  // --- lifecycle ----------------------------------------------------------------------------------------

  async start(): Promise<this> {
    if (this.state !== 'new') throw fail('RT_ERR_CLOSED', `${this.id} cannot start twice`)
    this.state = 'running'
    if (this.wantInbox) {
      const sock = new Router({
        mandatory: true,
        sendHighWaterMark: this.bus.sendHighWaterMark,
        receiveHighWaterMark: this.bus.receiveHighWaterMark,
        sendTimeout: this.bus.sendTimeoutMs,
        linger: 0,
      })
      try {
        await sock.bind(this.bus.bind)
      } catch (e) {
        sock.close()
        this.state = 'closed'
        throw fail('RT_ERR_BIND', `${this.bus.bind}: ${(e as Error).message}`)
      }
      this.inbox = sock
      this.inboxSender = new Sender(sock, `${this.id} inbox`, 1)
      this.addr = this.advertised(sock.lastEndpoint ?? this.bus.bind)
      this.loops.push(this.inboxLoop(sock))
    }
    if (this.controllerAddr) await this.register()
    this.log.debug({ addr: this.addr }, 'actor started')
    return this
  }

  /**
   * Stop: no new messages are read; in-flight handlers finish (up to drainMs); pending asks are
   * rejected with RT_ERR_CLOSED; the controller is told; sockets close and their loops end.
   */
  async stop(reason = 'stopped', drainMs = 5000): Promise<void> {
    if (this.state === 'closed' || this.state === 'new') {
      this.state = 'closed'
      return
    }
    this.state = 'draining'
    if (this.heartbeat) clearInterval(this.heartbeat)
    const deadline = Date.now() + drainMs
    while (this.inflight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5))
    if (this.controllerAddr) {
      await this.tell(this.controllerAddr, 'dir:unregister', { id: this.id, reason }).catch(() => {})
    }
    this.state = 'closed'
    for (const [id, p] of this.pending)
      this.settle(id, p, fail('RT_ERR_CLOSED', `${this.id} stopped (${reason})`))
    this.inbox?.close()
    for (const peer of this.peers.values()) peer.sock.close()
    for (const t of this.taps) t.sock.close()
    this.peers.clear()
    this.taps = []
    await Promise.allSettled(this.loops)
    this.log.debug({ reason }, 'actor stopped')
  }

  // --- sending ------------------------------------------------------------------------------------------

  /** One-way message to an actor id or an address. Resolves when queued (backpressure). */
  async tell<T extends TellType>(target: string, type: T, body: TellBody<T>): Promise<void> {
    const peer = this.cachedPeer(target) ?? (await this.peerFor(target))
    await peer.sender.send(encode(this.envelope(Kind.Tell, type, body, 0)))
  }

  /** Request/reply. Rejects with RT_ERR_TIMEOUT, RT_ERR_CANCELLED, RT_ERR_PEER_DEAD or the peer's coded error. */
  async ask<T extends AskType>(
    target: string,
    type: T,
    body: AskReq<T>,
    opts: AskOptions = {},
  ): Promise<AskRes<T>> {
    if (opts.signal?.aborted) throw fail('RT_ERR_CANCELLED', `${type} to ${target}`)
    const peer = this.cachedPeer(target) ?? (await this.peerFor(target))
    if (opts.signal?.aborted) throw fail('RT_ERR_CANCELLED', `${type} to ${target}`)
    const env = this.envelope(Kind.Ask, type, body, 0)
    const timeoutMs = opts.timeoutMs ?? this.bus.askTimeoutMs
    const result = new Promise<AskRes<T>>((resolve, reject) => {
      const p: Pending = {
        resolve: resolve as (v: unknown) => void,
        reject,
        peer,
        type,
        deadline: Date.now() + timeoutMs,
        target,
        timeoutMs,
      }
      this.armTimeouts(p.deadline)
      if (opts.signal) {
        p.signal = opts.signal
        p.onAbort = () => this.settle(env.id, p, fail('RT_ERR_CANCELLED', `${type} to ${target}`))
        opts.signal.addEventListener('abort', p.onAbort, { once: true })
      }
      this.pending.set(env.id, p)
      peer.pending.add(env.id)
    })
    try {
      await peer.sender.send(encode(env))
    } catch (e) {
      const p = this.pending.get(env.id)
      if (p) this.settle(env.id, p, e as Error)
    }
    return result
  }

  /** Tell every live actor of a role (or the given ids). Resolves with the ids reached. */
  async broadcast<T extends TellType>(to: string | string[], type: T, body: TellBody<T>): Promise<string[]> {
    const ids = Array.isArray(to) ? to : await this.idsOfRole(to)
    const res = await Promise.allSettled(ids.map((id) => this.tell(id, type, body)))
    const reached: string[] = []
    res.forEach((r, i) => {
      if (r.status === 'fulfilled') reached.push(ids[i])
      else this.log.warn({ to: ids[i], type, err: (r.reason as Error).message }, 'broadcast send failed')
    })
    return reached
  }

  /** Live actor ids of a role, from the controller's directory. */
  async idsOfRole(role: string): Promise<string[]> {
    if (this.resolver)
      return this.resolver({ role })
        .filter((e) => e.state === 'alive')
        .map((e) => e.id)
    if (!this.controllerAddr) throw fail('RT_ERR_NO_ACTOR', `no controller to look up role ${role}`)
    const { entries } = await this.ask(this.controllerAddr, 'dir:lookup', { role })
    for (const e of entries) this.directory.set(e.id, e)
    return entries.filter((e) => e.state === 'alive').map((e) => e.id)
  }

  /** Subscribe to dir:up/dir:down for these roles or ids; returns the current entries. */
  async watch(sel: { roles?: string[]; ids?: string[] }): Promise<DirEntry[]> {
    if (!this.controllerAddr) throw fail('RT_ERR_NO_ACTOR', 'no controller to watch')
    const { entries } = await this.ask(this.controllerAddr, 'dir:watch', sel)
    for (const e of entries) this.directory.set(e.id, e)
    return entries
  }

  // --- internals ----------------------------------------------------------------------------------------

  private envelope(kind: Kind, type: string, body: unknown, re: number): Envelope {
    return {
      v: PROTOCOL_VERSION,
      kind,
      type,
      id: ++this.seq,
      re,
      from: this.id,
      time: Date.now(),
      body,
    } as Envelope
  }

  private advertised(endpoint: string): string {
    // a wildcard bind (tcp://0.0.0.0:port) is advertised under this host's name so peers can reach it
    return endpoint.replace('//0.0.0.0:', `//${hostname()}:`).replace('//*:', `//${hostname()}:`)
  }

  private async register(): Promise<void> {
    const ctl = this.controllerAddr!
    const res = await this.ask(ctl, 'dir:register', {
      id: this.id,
      role: this.role,
      addr: this.addr,
      pid: process.pid,
      host: hostname(),
      meta: this.meta,
    })
    this.setTaps(res.taps)
    this.heartbeat = setInterval(() => {
      this.tell(ctl, 'dir:heartbeat', { id: this.id }).catch((e) =>
        this.log.warn({ err: (e as Error).message }, 'heartbeat send failed'),
      )
    }, res.heartbeatMs)
    this.heartbeat.unref()
  }

  /** The connected peer for a target without any lookup (the hot path of tell/ask), if there is one. */
  private cachedPeer(target: string): Peer | undefined {
    if (this.state === 'closed') return undefined
    if (ADDR_RE.test(target)) return this.peers.get(target)
    if (this.resolver) return undefined
    const e = this.directory.get(target)
    return e?.state === 'alive' ? this.peers.get(e.addr) : undefined
  }

  private async peerFor(target: string): Promise<Peer> {
    if (this.state === 'closed') throw fail('RT_ERR_CLOSED', `${this.id} is closed`)
    let addr = target
    if (!ADDR_RE.test(target)) {
      let entry = this.resolver ? this.resolver({ id: target })[0] : this.directory.get(target)
      if (!this.resolver && entry?.state !== 'alive') {
        if (!this.controllerAddr) throw fail('RT_ERR_NO_ACTOR', target)
        const { entries } = await this.ask(this.controllerAddr, 'dir:lookup', { id: target })
        entry = entries[0]
        if (entry) this.directory.set(target, entry)
      }
      if (!entry) throw fail('RT_ERR_NO_ACTOR', target)
      if (entry.state === 'dead') throw fail('RT_ERR_PEER_DEAD', `${target} is dead`)
      addr = entry.addr
    }
    let peer = this.peers.get(addr)
    if (!peer) {
      const sock = new Dealer({
        sendHighWaterMark: this.bus.sendHighWaterMark,
        receiveHighWaterMark: this.bus.receiveHighWaterMark,
        sendTimeout: this.bus.sendTimeoutMs,
        linger: 0,
        immediate: false,
      })
      sock.connect(addr)
      peer = {
        addr,
        sock,
        sender: new Sender(sock, `${this.id} → ${addr}`),
        pending: new Set(),
        connected: false,
      }
      this.peers.set(addr, peer)
      this.loops.push(this.replyLoop(peer), this.eventLoop(peer))
    }
    return peer
  }

  /**
   * One timer for all pending asks (a timer per ask costs more than the ask itself at 30k asks/s): it
   * fires at the earliest deadline and rejects every ask whose deadline has passed.
   */
  private armTimeouts(deadline: number): void {
    if (this.timeoutAt <= deadline && this.timeoutTimer) return
    if (this.timeoutTimer) clearTimeout(this.timeoutTimer)
    this.timeoutAt = deadline
    this.timeoutTimer = setTimeout(() => this.sweepTimeouts(), Math.max(0, deadline - Date.now()))
    this.timeoutTimer.unref()
  }

  private sweepTimeouts(): void {
    this.timeoutTimer = undefined
    this.timeoutAt = Number.POSITIVE_INFINITY
    const now = Date.now()
    let next = Number.POSITIVE_INFINITY
    for (const [id, p] of this.pending) {
      if (p.deadline <= now)
        this.settle(id, p, fail('RT_ERR_TIMEOUT', `${p.type} to ${p.target} after ${p.timeoutMs} ms`))
      else if (p.deadline < next) next = p.deadline
    }
    if (next !== Number.POSITIVE_INFINITY) this.armTimeouts(next)
  }

  private settle(id: number, p: Pending, err: Error | null, value?: unknown): void {
    this.pending.delete(id)
    p.peer.pending.delete(id)
    if (p.onAbort) p.signal?.removeEventListener('abort', p.onAbort)
    if (err) p.reject(err)
    else p.resolve(value)
  }

  private peerDown(id: string, reason: string): void {
    const entry = this.directory.get(id)
    if (entry) {
      this.directory.set(id, { ...entry, state: 'dead' })
      const peer = this.peers.get(entry.addr)
      if (peer) this.failPeer(peer, `${id} is dead: ${reason}`)
    }
    for (const fn of this.downListeners) fn(id, reason)
  }

  private failPeer(peer: Peer, why: string): void {
    for (const id of [...peer.pending]) {
      const p = this.pending.get(id)
      if (p) this.settle(id, p, fail('RT_ERR_PEER_DEAD', `${p.type}: ${why}`))
    }
  }

  private count(code: string): void {
    this.stats.rejected[code] = (this.stats.rejected[code] ?? 0) + 1
  }

  /** Log a rejected frame, at most 10 per code per 10 s (a flood of garbage must not flood the log). */
  private logReject(code: string, fields: Record<string, unknown>, msg: string): void {
    const now = Date.now()
    let w = this.rejectLog.get(code)
    if (!w || now - w.since > 10000) {
      if (w?.suppressed) this.log.warn({ code, suppressed: w.suppressed }, 'rejected frames not logged')
      w = { since: now, n: 0, suppressed: 0 }
      this.rejectLog.set(code, w)
    }
    if (++w.n <= 10) this.log.warn({ code, ...fields }, msg)
    else w.suppressed++
  }

  private async inboxLoop(sock: Router): Promise<void> {
    try {
      for await (const [rid, ...parts] of sock) {
        for (const frames of unbatch(parts)) {
          this.stats.received++
          let env: Envelope
          try {
            env = decode(frames, this.bus.maxFrameBytes)
          } catch (e) {
            this.reject(rid, e as CodedError)
            continue
          }
          if (this.taps.length) this.mirror(env, frames, 'in')
          if (env.kind !== Kind.Tell && env.kind !== Kind.Ask) {
            this.count('RT_ERR_SHAPE')
            this.log.warn(
              { type: env.type, from: env.from, kind: env.kind },
              'reply arrived on inbox; dropped',
            )
            continue
          }
          const h = (this.handlers as Record<string, (b: unknown, e: Envelope) => unknown>)[env.type]
          if (!h) {
            this.count('RT_ERR_UNKNOWN_TYPE')
            this.log.warn({ type: env.type, from: env.from }, 'no handler')
            if (env.kind === Kind.Ask)
              this.replyError(rid, env.id, env.type, fail('RT_ERR_UNKNOWN_TYPE', env.type))
            continue
          }
          if (this.inflight >= this.bus.maxInflight)
            await new Promise<void>((r) => this.inflightWaiters.push(r))
          this.run(rid, env, h)
        }
      }
    } catch (e) {
      if (this.state !== 'closed') this.log.error({ err: (e as Error).message }, 'inbox loop failed')
    }
  }

  private run(rid: Buffer, env: Envelope, h: (b: unknown, e: Envelope) => unknown): void {
    this.inflight++
    let out: unknown
    try {
      out = h(env.body, env)
    } catch (e) {
      out = Promise.reject(e)
    }
    const done = (value: unknown, err?: unknown) => {
      this.inflight--
      this.stats.handled++
      const w = this.inflightWaiters.shift()
      if (w) w()
      if (err !== undefined) {
        const wire = toWire(err)
        this.log.error(
          { type: env.type, from: env.from, code: wire.code, err: wire.message },
          'handler failed',
        )
        if (env.kind === Kind.Ask) this.replyError(rid, env.id, env.type, err)
        return
      }
      if (env.kind === Kind.Ask && this.state !== 'closed') {
        this.inboxSender!.send([rid, ...encode(this.envelope(Kind.Reply, env.type, value, env.id))]).catch(
          (e) =>
            this.log.warn({ type: env.type, to: env.from, err: (e as Error).message }, 'reply not delivered'),
        )
      }
    }
    if (out instanceof Promise)
      out.then(
        (v) => done(v),
        (e) => done(undefined, e ?? new Error('rejected')),
      )
    else done(out)
  }

  private reject(rid: Buffer, e: CodedError): void {
    const code = typeof e?.code === 'string' ? e.code : 'RT_ERR_DECODE'
    this.count(code)
    const info = (e.details ?? {}) as RejectInfo
    this.logReject(code, { err: e.message, from: info.from, type: info.type }, 'frame rejected')
    if (info.kind === Kind.Ask && typeof info.id === 'number')
      this.replyError(rid, info.id, info.type ?? '?', e)
  }

  private replyError(rid: Buffer, re: number, type: string, err: unknown): void {
    if (this.state === 'closed') return
    const env = this.envelope(Kind.Error, type, toWire(err), re)
    this.inboxSender!.send([rid, ...encode(env)]).catch(() => {})
  }

  private async replyLoop(peer: Peer): Promise<void> {
    try {
      for await (const parts of peer.sock) {
        for (const frames of unbatch(parts)) {
          let env: Envelope
          try {
            env = decode(frames, this.bus.maxFrameBytes)
          } catch (e) {
            const code = (e as CodedError).code ?? 'RT_ERR_DECODE'
            this.count(code)
            this.logReject(code, { err: (e as Error).message, peer: peer.addr }, 'reply rejected')
            continue
          }
          if (this.taps.length) this.mirror(env, frames, 'reply')
          const p = this.pending.get(env.re)
          if (!p) continue // late reply after timeout/cancel
          if (env.kind === Kind.Reply) this.settle(env.re, p, null, env.body)
          else if (env.kind === Kind.Error) this.settle(env.re, p, fromWire(env.body))
        }
      }
    } catch (e) {
      if (this.state !== 'closed') this.log.error({ err: (e as Error).message }, 'reply loop failed')
    }
  }

  private async eventLoop(peer: Peer): Promise<void> {
    try {
      for await (const ev of peer.sock.events) {
        if (ev.type === 'connect') peer.connected = true
        else if (ev.type === 'disconnect') {
          peer.connected = false
          // forget cached entries at this address: the next send looks the actor up again (it may have
          // been restarted elsewhere)
          for (const [id, e] of this.directory) if (e.addr === peer.addr) this.directory.delete(id)
          // the process behind this connection is gone: its in-flight asks will never be answered
          if (peer.pending.size) this.failPeer(peer, `connection to ${peer.addr} lost`)
        } else if (ev.type === 'end') break
      }
    } catch {
      // socket closed
    }
  }

  private setTaps(taps: TapInfo[]): void {
    if (this.role === 'tap') return
    const keep = new Map(this.taps.map((t) => [t.info.id, t]))
    const next: typeof this.taps = []
    for (const info of taps) {
      let t = keep.get(info.id)
      keep.delete(info.id)
      if (!t) {
        const sock = new Dealer({ sendTimeout: 0, sendHighWaterMark: 10000, linger: 0 })
        sock.connect(info.addr)
        t = { info, sock }
      } else t.info = info
      next.push(t)
    }
    for (const t of keep.values()) t.sock.close()
    this.taps = next
  }

  private mirror(env: Envelope, frames: Uint8Array[], dir: 'in' | 'reply'): void {
    for (const t of this.taps) {
      const f = t.info.filter
      if (
        f.types?.length &&
        !f.types.some((p) => env.type === p || (p.endsWith('*') && env.type.startsWith(p.slice(0, -1))))
      )
        continue
      if (f.actors?.length && !f.actors.includes(this.id) && !f.actors.includes(env.from)) continue
      const copy = encode(
        this.envelope(Kind.Tell, 'tap:frame', { actor: this.id, dir, at: Date.now(), frames }, 0),
      )
      t.sock.send(copy).catch(() => {
        this.stats.tapDropped++
      })
    }
  }
}
