/**
 * The controller's directory of actors: registration, lookup, watches, heartbeats and deadlines, taps.
 * It lives inside the controller process and answers on the controller actor's inbox.
 *
 *   actor ──dir:register──▶ directory ──reply {heartbeatMs, deadlineMs, taps}
 *   actor ──dir:heartbeat (every heartbeatMs)──▶ directory: lastBeat = now
 *   sweep (every heartbeatMs/2): alive && now − lastBeat > deadlineMs → dead; watchers get dir:down
 *
 * Local listeners (the supervisor in the launcher) get the same news through `on('down'|'up')`.
 */
import { EventEmitter } from 'node:events'
import { hostname } from 'node:os'
import type { Actor } from './actor.ts'
import type { DirEntry, TapInfo } from './messages.ts'

interface Record_ {
  entry: Omit<DirEntry, 'heartbeatAgeMs'>
  lastBeat: number
}

interface Watch {
  ids?: string[]
  roles?: string[]
}

export interface DirectoryEvents {
  up: [DirEntry]
  down: [DirEntry, string, DownCause]
}

/** why an actor went down: missed its heartbeat deadline, its process exited, or it unregistered */
export type DownCause = 'deadline' | 'exit' | 'unregister'

export class Directory extends EventEmitter<DirectoryEvents> {
  private readonly recs = new Map<string, Record_>()
  private readonly watches = new Map<string, Watch>()
  private readonly taps = new Map<string, TapInfo>()
  private sweepTimer: NodeJS.Timeout | undefined

  constructor(private readonly actor: Actor) {
    super()
    actor.setResolver((sel) => this.select(sel.id ? [sel.id] : undefined, sel.role ? [sel.role] : undefined))
    const { heartbeatMs, deadlineMs } = actor.bus
    actor.handle({
      'dir:register': (b) => {
        const now = Date.now()
        const entry = { ...b, state: 'alive' as const, startedAt: now }
        this.recs.set(b.id, { entry, lastBeat: now })
        this.actor.log.info({ peer: b.id, role: b.role, addr: b.addr, pid: b.pid }, 'actor registered')
        this.notify(b.id, b.role, 'dir:up')
        this.emit('up', this.view(this.recs.get(b.id)!, now))
        return { heartbeatMs, deadlineMs, taps: [...this.taps.values()] }
      },
      'dir:heartbeat': (b) => {
        const r = this.recs.get(b.id)
        if (r && r.entry.state !== 'dead') r.lastBeat = Date.now()
      },
      'dir:unregister': (b) => this.markDead(b.id, b.reason, 'unregister'),
      'dir:lookup': (b) => ({
        entries: this.select(b.id ? [b.id] : undefined, b.role ? [b.role] : undefined),
      }),
      'dir:list': () => ({
        entries: this.select(),
        controller: this.actor.addr,
        startedAt: this.actor.startedAt,
      }),
      'dir:watch': (b, env) => {
        this.watches.set(env.from, { ids: b.ids, roles: b.roles })
        return { entries: this.select(b.ids, b.roles) }
      },
      'tap:attach': async (b) => {
        this.taps.set(b.id, { id: b.id, addr: b.addr, filter: b.filter })
        const n = await this.pushTaps()
        return { actors: n }
      },
      'tap:detach': async (b) => {
        const had = this.taps.delete(b.id)
        await this.pushTaps()
        return { ok: had }
      },
    })
    // the controller is in its own directory
    this.on('down', (e) => {
      if (this.taps.delete(e.id)) this.pushTaps().catch(() => {})
      this.watches.delete(e.id)
    })
  }

  /** Add the hosting actor itself and start the deadline sweep. */
  start(): void {
    this.recs.set(this.actor.id, {
      entry: {
        id: this.actor.id,
        role: this.actor.role,
        addr: this.actor.addr,
        pid: process.pid,
        host: hostname(),
        state: 'alive',
        startedAt: this.actor.startedAt,
      },
      lastBeat: Number.POSITIVE_INFINITY,
    })
    this.sweepTimer = setInterval(() => this.sweep(), Math.max(10, this.actor.bus.heartbeatMs / 2))
    this.sweepTimer.unref()
  }

  stop(): void {
    if (this.sweepTimer) clearInterval(this.sweepTimer)
  }

  /** Entries, optionally by ids or roles (either matching). */
  select(ids?: string[], roles?: string[]): DirEntry[] {
    const now = Date.now()
    const out: DirEntry[] = []
    for (const r of this.recs.values()) {
      if ((ids?.length || roles?.length) && !ids?.includes(r.entry.id) && !roles?.includes(r.entry.role))
        continue
      out.push(this.view(r, now))
    }
    return out
  }

  get(id: string): DirEntry | undefined {
    const r = this.recs.get(id)
    return r && this.view(r, Date.now())
  }

  /** Declare an actor dead now (exit seen by a supervisor, clean unregister, missed deadline). */
  markDead(id: string, reason: string, cause: DownCause = 'exit'): void {
    const r = this.recs.get(id)
    if (!r || r.entry.state === 'dead') return
    r.entry = { ...r.entry, state: 'dead' }
    this.actor.log[cause === 'unregister' ? 'info' : 'warn'](
      { peer: id, role: r.entry.role, reason, cause },
      'actor down',
    )
    this.notify(id, r.entry.role, 'dir:down', reason)
    this.emit('down', this.view(r, Date.now()), reason, cause)
  }

  private view(r: Record_, now: number): DirEntry {
    const age = Number.isFinite(r.lastBeat) ? now - r.lastBeat : 0
    return { ...r.entry, heartbeatAgeMs: age }
  }

  private sweep(): void {
    const now = Date.now()
    const deadline = this.actor.bus.deadlineMs
    for (const r of this.recs.values()) {
      if (r.entry.state !== 'dead' && now - r.lastBeat > deadline) {
        this.markDead(
          r.entry.id,
          `no heartbeat for ${now - r.lastBeat} ms (deadline ${deadline} ms)`,
          'deadline',
        )
      }
    }
  }

  private notify(id: string, role: string, type: 'dir:up' | 'dir:down', reason = ''): void {
    for (const [watcher, w] of this.watches) {
      if (watcher === id) continue
      const wants = (!w.ids?.length && !w.roles?.length) || w.ids?.includes(id) || w.roles?.includes(role)
      if (!wants) continue
      const send =
        type === 'dir:up'
          ? this.actor.tell(watcher, 'dir:up', { entry: this.view(this.recs.get(id)!, Date.now()) })
          : this.actor.tell(watcher, 'dir:down', { id, role, reason })
      send.catch((e) => this.actor.log.debug({ watcher, err: (e as Error).message }, 'watch notify failed'))
    }
  }

  private async pushTaps(): Promise<number> {
    const taps = [...this.taps.values()]
    const ids = this.select()
      .filter((e) => e.state === 'alive' && e.role !== 'tap' && e.id !== this.actor.id)
      .map((e) => e.id)
    // the controller mirrors its own traffic too
    await this.actor.tell(this.actor.addr, 'tap:set', { taps }).catch(() => {})
    const reached = await this.actor.broadcast(ids, 'tap:set', { taps })
    return reached.length + 1
  }
}
