/**
 * Rollout actors joining and leaving a running job, answered by the controller:
 *
 *   bin/add-rollout ──ctl:spawn {role, n}──▶ controller ── start rollout/<k>… through the job's scheduler
 *                                              (local: child process; Slurm: srun step) ── wait registered ─▶ {ids}
 *   bin/drain-rollout ──ctl:drain {id}──▶ controller ── no new groups to id ── rollout:drain (its in-flight
 *                                              groups finish; their results come back through their own
 *                                              rollout:run replies and are counted) ── stop ─▶ {id, completed}
 *
 * The training loop sees the change through `wrap(ops)`: `rollouts()` leaves draining actors out and
 * every completed group is counted per rollout actor (`groupsBy`, in metrics as groups_by_rollout).
 */
import type { Actor } from '../../runtime/actor.ts'
import type { Directory } from '../../runtime/directory.ts'
import { fail } from '../../runtime/errors.ts'
import type { Logger } from '../../runtime/log.ts'
import { type RoleProcess, rolloutProcess } from '../../runtime/scheduler/plan.ts'
import type { LoopOps } from './loop.ts'

export interface MembershipOptions {
  actor: Actor
  dir: Directory
  log: Logger
  /** index of the first rollout actor that joins later (rollout.workers) */
  firstIndex: number
  /** start a planned process through the job's scheduler */
  start(p: RoleProcess): void
  /** stop a started process (no restart) */
  stop(id: string): Promise<void>
  /** resolves once these actors registered; rejects when one exits first */
  registered(ids: string[], timeoutMs: number): Promise<void>
  /** how long a draining actor may take to finish its groups */
  drainTimeoutMs: number
  /** how long joining actors may take to register */
  joinTimeoutMs?: number
}

export class RolloutMembership {
  /** groups completed per rollout actor (joined and departed ones included) */
  readonly groupsBy = new Map<string, number>()
  private readonly draining = new Set<string>()
  private next: number

  constructor(private readonly o: MembershipOptions) {
    this.next = o.firstIndex
    o.actor.handle({
      'ctl:spawn': (b) => this.spawn(b.n),
      'ctl:drain': (b) => this.drain(b.id),
    })
  }

  /** Start n more rollout actors; resolves with their ids once they registered. */
  async spawn(n: number): Promise<{ ids: string[] }> {
    if (!Number.isInteger(n) || n < 1 || n > 256)
      throw fail('CFG_ERR_VALUE', `ctl:spawn n=${n}: expected a whole number in 1..256`)
    const procs = Array.from({ length: n }, () => rolloutProcess(this.next++))
    for (const p of procs) this.o.start(p)
    const ids = procs.map((p) => p.id)
    await this.o.registered(ids, this.o.joinTimeoutMs ?? 120_000)
    this.o.log.info({ ids }, 'rollout actors joined')
    return { ids }
  }

  /** Take a rollout actor out of dispatch, let it finish its groups, then stop it. */
  async drain(id: string): Promise<{ id: string; completed: number }> {
    const e = this.o.dir.get(id)
    if (e?.role !== 'rollout' || e.state !== 'alive')
      throw fail('RT_ERR_NO_ACTOR', `${id} is not a live rollout actor`)
    this.draining.add(id)
    try {
      const { completed } = await this.o.actor.ask(
        id,
        'rollout:drain',
        {},
        { timeoutMs: this.o.drainTimeoutMs },
      )
      await this.o.stop(id)
      this.o.dir.markDead(id, 'drained', 'unregister')
      this.o.log.info({ id, completed }, 'rollout actor drained and removed')
      return { id, completed }
    } finally {
      this.draining.delete(id)
    }
  }

  /** The loop's operations with draining actors left out of dispatch and groups counted per actor. */
  wrap(ops: LoopOps): LoopOps {
    return {
      ...ops,
      rollouts: () => ops.rollouts().filter((id) => !this.draining.has(id)),
      runGroup: async (rollout, req) => {
        const res = await ops.runGroup(rollout, req)
        this.groupsBy.set(rollout, (this.groupsBy.get(rollout) ?? 0) + 1)
        return res
      },
    }
  }
}
