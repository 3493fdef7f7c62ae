/**
 * Where environment state lives and steps run: a bounded piscina pool of worker threads, or the
 * calling thread (`workers: 0`, for debugging and the bench's baseline).
 *
 *   episode A ──open──▶ least-busy worker 3 ──▶ pinned: every later op of A goes to worker 3
 *   episode B ──open──▶ worker 4 …
 *
 * An episode's Environment stays in the worker that opened it (a custom piscina load balancer routes
 * by the pin). If that worker dies, its in-flight ops reject with ENV_ERR_WORKER_CRASH and later ops
 * of its episodes with ENV_ERR_EPISODE_LOST; episodes on other workers carry on, and piscina replaces
 * the dead thread.
 */
import { randomUUID } from 'node:crypto'
import { Piscina } from 'piscina'
import { fail, fromWire } from '../../../runtime/errors.ts'
import type { Logger } from '../../../runtime/log.ts'
import type { EvaluationResult } from './evaluation.ts'
import { handleOp, type OpenResult, type SessionOp, type SessionResult } from './session.ts'
import type { Message, TerminationReason, ToolCall, ToolMessage } from './types.ts'
import type { WorkerReply } from './worker.ts'

export interface EnvPoolOptions {
  /** worker threads; 0 = run on the calling thread */
  workers: number
  log: Logger
}

/** the op itself travels to the worker; the symbol-keyed pin is read by the balancer and not cloned */
type PinnedTask = SessionOp & { [k: symbol]: unknown }

/** Client of the environment threads; one per rollout process, shared by all its episodes. */
export class EnvPool {
  private readonly pool: Piscina | undefined
  private readonly pins = new Map<string, number>()
  private closed = false

  constructor(private readonly o: EnvPoolOptions) {
    if (o.workers > 0) {
      const qo = Piscina.queueOptionsSymbol
      this.pool = new Piscina({
        filename: new URL('./worker.ts', import.meta.url).href,
        minThreads: o.workers,
        maxThreads: o.workers,
        // environment state lives in the threads: never retire an idle one
        idleTimeout: Number.POSITIVE_INFINITY,
        // ops are synchronous in the worker; a worker takes every op pinned to it and runs them in order
        concurrentTasksPerWorker: 1 << 20,
        loadBalancer: (task, workers) => {
          const pin = (task as unknown as Record<symbol, { pin?: number } | null>)[qo]?.pin
          if (pin !== undefined) {
            const w = workers.find((x) => x.id === pin)
            // a pinned worker that is gone: any worker answers ENV_ERR_EPISODE_LOST
            return w ?? workers[0] ?? null
          }
          let best = null
          for (const w of workers) if (!best || w.currentUsage < best.currentUsage) best = w
          return best
        },
      })
      this.pool.on('error', (err) => o.log.error({ err }, 'environment worker error'))
    }
  }

  get threads(): number {
    return this.pool?.threads.length ?? 0
  }

  private async send(op: SessionOp, episodeId?: string): Promise<WorkerReply> {
    if (this.closed) throw fail('ENV_ERR_POOL_CLOSED')
    if (!this.pool) {
      // in-thread mode: each op runs as its own macrotask, as a worker's reply would arrive
      await new Promise<void>((resolve) => setImmediate(resolve))
      return { threadId: 0, result: handleOp(op) }
    }
    const pin = episodeId === undefined ? undefined : this.pins.get(episodeId)
    const task: PinnedTask = { ...op, [Piscina.queueOptionsSymbol]: pin === undefined ? null : { pin } }
    try {
      return (await this.pool.run(task)) as WorkerReply
    } catch (err) {
      throw fail(
        'ENV_ERR_WORKER_CRASH',
        `episode ${episodeId ?? '-'} (${op.op}) on thread ${pin ?? '?'}: ${(err as Error).message}`,
        { episodeId, op: op.op, thread: pin },
        err,
      )
    }
  }

  private unwrap<T extends SessionResult>(r: WorkerReply): T {
    if (r.error) throw fromWire(r.error)
    return r.result as T
  }

  /** Open an episode on the least busy thread; its later ops go to the same thread. */
  async open(
    dataDir: string,
    domain: string,
    taskId: string,
    solo: boolean,
    episodeId: string = randomUUID(),
  ) {
    const r = await this.send({ op: 'open', episodeId, dataDir, domain, taskId, solo })
    const opened = this.unwrap<OpenResult>(r)
    this.pins.set(episodeId, r.threadId)
    return { episodeId, thread: r.threadId, ...opened }
  }

  async tools(episodeId: string, calls: ToolCall[]): Promise<ToolMessage[]> {
    if (this.pool && !this.pins.has(episodeId)) throw fail('ENV_ERR_EPISODE_LOST', episodeId, { episodeId })
    return this.unwrap<ToolMessage[]>(await this.send({ op: 'tools', episodeId, calls }, episodeId))
  }

  /** Evaluate a finished trajectory on fresh environments (any thread). */
  async evaluate(
    dataDir: string,
    domain: string,
    taskId: string,
    solo: boolean,
    trajectory: Message[],
    terminationReason: TerminationReason,
  ): Promise<EvaluationResult> {
    return this.unwrap<EvaluationResult>(
      await this.send({ op: 'evaluate', dataDir, domain, taskId, solo, trajectory, terminationReason }),
    )
  }

  /** Free an episode's state; never rejects (a lost episode is already gone). */
  async close(episodeId: string): Promise<void> {
    try {
      await this.send({ op: 'close', episodeId }, episodeId)
    } catch (err) {
      this.o.log.debug({ episodeId, err }, 'close of a lost episode')
    } finally {
      this.pins.delete(episodeId)
    }
  }

  /** Tests only: make the episode's worker fail. */
  async crash(episodeId: string, how: 'throw' | 'exit'): Promise<void> {
    this.unwrap(await this.send({ op: 'crash', episodeId, how }, episodeId))
  }

  async destroy(): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.pool?.destroy()
  }
}
