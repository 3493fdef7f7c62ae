/**
 * Supervision of the processes the runtime started (Erlang style).
 *
 *   policy per actor type (role):  restart  permanent  always restarted
 *                                           transient  restarted only after an abnormal exit (code ≠ 0 or signal)
 *                                           temporary  never restarted
 *                                  intensity, periodMs: more than `intensity` restarts within `periodMs`
 *                                           → the supervisor gives up on that child (RT_ERR_RESTART_LIMIT)
 *
 * A child is a process (`command args…`) with its own log file. The directory's 'down' news (missed
 * heartbeat deadline: a hung process) is passed to `down(id)`: the supervisor kills the process with
 * SIGKILL and the exit is then handled as any other crash. Events: 'start', 'exit', 'restart', 'giveup'.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { EventEmitter } from 'node:events'
import { mkdirSync, openSync } from 'node:fs'
import { dirname } from 'node:path'
import { type CodedError, fail } from './errors.ts'
import type { Logger } from './log.ts'

export type RestartKind = 'permanent' | 'transient' | 'temporary'

export interface RestartPolicy {
  restart: RestartKind
  /** restarts allowed within periodMs before giving up */
  intensity: number
  periodMs: number
}

export const defaultPolicy: RestartPolicy = { restart: 'transient', intensity: 3, periodMs: 60000 }

export interface ChildSpec {
  id: string
  role: string
  command: string
  args: string[]
  env?: Record<string, string>
  cwd?: string
  /** stdout+stderr go here (appended across restarts); default: inherited */
  logFile?: string
  policy?: Partial<RestartPolicy>
}

export interface ChildExit {
  id: string
  code: number | null
  signal: NodeJS.Signals | null
  abnormal: boolean
}

export interface SupervisorEvents {
  start: [{ id: string; pid: number; restarts: number }]
  exit: [ChildExit]
  restart: [{ id: string; restarts: number }]
  giveup: [{ id: string; error: CodedError }]
}

interface Child {
  spec: ChildSpec
  policy: RestartPolicy
  proc: ChildProcess | undefined
  restarts: number[]
  stopping: boolean
  exited: Promise<void>
}

export class Supervisor extends EventEmitter<SupervisorEvents> {
  private readonly children = new Map<string, Child>()
  private closing = false

  constructor(
    private readonly log: Logger,
    private readonly policies: Record<string, Partial<RestartPolicy>> = {},
  ) {
    super()
  }

  /** Start a child process under supervision. Resolves once spawned (not once registered). */
  start(spec: ChildSpec): number {
    if (this.children.has(spec.id)) throw fail('RT_ERR_SPAWN', `child ${spec.id} already exists`)
    const policy = { ...defaultPolicy, ...this.policies[spec.role], ...spec.policy }
    const child: Child = {
      spec,
      policy,
      proc: undefined,
      restarts: [],
      stopping: false,
      exited: Promise.resolve(),
    }
    this.children.set(spec.id, child)
    return this.launch(child)
  }

  pid(id: string): number | undefined {
    return this.children.get(id)?.proc?.pid
  }

  ids(): string[] {
    return [...this.children.keys()]
  }

  /** The directory declared this child dead (e.g. hung): kill it; its exit goes through the policy. */
  down(id: string, reason: string): void {
    const c = this.children.get(id)
    if (!c?.proc || c.stopping || c.proc.exitCode !== null) return
    this.log.warn({ child: id, reason }, 'child declared dead; killing')
    c.proc.kill('SIGKILL')
  }

  /** Stop one child (SIGTERM, then SIGKILL after graceMs); it is not restarted. */
  async stop(id: string, graceMs = 5000): Promise<void> {
    const c = this.children.get(id)
    if (!c) return
    c.stopping = true
    const p = c.proc
    if (p && p.exitCode === null && p.signalCode === null) {
      p.kill('SIGTERM')
      const t = setTimeout(() => p.kill('SIGKILL'), graceMs)
      await c.exited
      clearTimeout(t)
    }
    this.children.delete(id)
  }

  /** Stop every child. */
  async stopAll(graceMs = 5000): Promise<void> {
    this.closing = true
    await Promise.all([...this.children.keys()].map((id) => this.stop(id, graceMs)))
  }

  private launch(c: Child): number {
    const { spec } = c
    let stdio: ('inherit' | 'ignore' | number)[] = ['ignore', 'inherit', 'inherit']
    if (spec.logFile) {
      mkdirSync(dirname(spec.logFile), { recursive: true })
      const fd = openSync(spec.logFile, 'a')
      stdio = ['ignore', fd, fd]
    }
    let proc: ChildProcess
    try {
      proc = spawn(spec.command, spec.args, {
        cwd: spec.cwd,
        env: { ...process.env, ...spec.env, AREAL_ACTOR_ID: spec.id, AREAL_ACTOR_ROLE: spec.role },
        stdio,
      })
    } catch (e) {
      throw fail('RT_ERR_SPAWN', `${spec.id}: ${(e as Error).message}`)
    }
    c.proc = proc
    c.exited = new Promise<void>((resolve) => {
      proc.once('exit', (code, signal) => {
        resolve()
        this.exited(c, proc, code, signal)
      })
    })
    proc.once('error', (e) => this.log.error({ child: spec.id, err: e.message }, 'child process error'))
    this.emit('start', { id: spec.id, pid: proc.pid ?? -1, restarts: c.restarts.length })
    this.log.info({ child: spec.id, pid: proc.pid }, 'child started')
    return proc.pid ?? -1
  }

  private exited(c: Child, proc: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (c.proc !== proc) return
    const abnormal = signal !== null || code !== 0
    const id = c.spec.id
    this.emit('exit', { id, code, signal, abnormal })
    if (c.stopping || this.closing) return
    const { restart, intensity, periodMs } = c.policy
    const wanted = restart === 'permanent' || (restart === 'transient' && abnormal)
    this.log[abnormal ? 'warn' : 'info']({ child: id, code, signal, restart: wanted }, 'child exited')
    if (!wanted) {
      this.children.delete(id)
      return
    }
    const now = Date.now()
    c.restarts = c.restarts.filter((t) => now - t < periodMs)
    if (c.restarts.length >= intensity) {
      const error = fail(
        'RT_ERR_RESTART_LIMIT',
        `${id} exited (${signal ?? `code ${code}`}) after ${c.restarts.length} restarts within ${periodMs} ms`,
        { id, code, signal, restarts: c.restarts.length },
      )
      this.children.delete(id)
      this.log.error({ child: id, code: error.code }, error.message)
      this.emit('giveup', { id, error })
      return
    }
    c.restarts.push(now)
    this.emit('restart', { id, restarts: c.restarts.length })
    try {
      this.launch(c)
    } catch (e) {
      this.emit('giveup', { id, error: e as CodedError })
    }
  }
}

/**
 * Join a supervisor and the directory: an exit seen by the supervisor marks the actor dead at once, and
 * an actor the directory declares dead (missed deadline: hung) is killed so its policy applies.
 */
export function linkDirectory(
  sup: Supervisor,
  dir: {
    markDead(id: string, reason: string, cause: 'exit'): void
    on(ev: 'down', fn: (e: { id: string }, r: string, cause: string) => void): unknown
  },
): void {
  sup.on('exit', (e) =>
    dir.markDead(e.id, e.signal ? `killed by ${e.signal}` : `exited with code ${e.code}`, 'exit'),
  )
  dir.on('down', (e, reason, cause) => {
    if (cause === 'deadline') sup.down(e.id, reason)
  })
}
