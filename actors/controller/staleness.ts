/**
 * Admission under the staleness bound η (DESIGN §4), counted in task groups.
 *
 *   capacity = min(maxConcurrent − running, (η + version + 1)·batch − (accepted + running))
 *
 * A group is admitted only while capacity > 0. `accepted` counts groups that entered a training batch;
 * filtered or failed groups free their slot without counting. Admission alone bounds how far ahead of
 * the trainer generation can run, but not a straggler: a group admitted at version a that runs long can
 * finish after versions have moved past a + η. So batches are formed through `isStale`: a group trained
 * at version v must have a ≥ v − η; a straggler past that is dropped (counted as stale, its slot freed).
 * Per-token versions inside a group can still span several versions (DESIGN §9); the bound is on the
 * version the group's generation started from.
 *
 * On resume at version v, `accepted` restarts at v·batch and `running` at 0 (the groups that were in
 * flight when the run stopped are gone). Counting the groups that were accepted before the stop
 * instead would let staleness grow without bound (AReaL #1388).
 */
export interface StalenessState {
  version: number
  accepted: number
  running: number
}

export class StalenessManager {
  version = 0
  accepted = 0
  running = 0

  constructor(
    readonly batch: number,
    readonly eta: number,
    readonly maxConcurrent: number,
  ) {}

  capacity(): number {
    const byConcurrency = this.maxConcurrent - this.running
    const byStaleness = (this.eta + this.version + 1) * this.batch - (this.accepted + this.running)
    return Math.min(byConcurrency, byStaleness)
  }

  /** Take one slot; false when there is none. */
  admit(): boolean {
    if (this.capacity() <= 0) return false
    this.running++
    return true
  }

  /** A running group finished: accepted into a batch, or dropped (filtered, failed). */
  finish(accepted: boolean): void {
    if (this.running <= 0) throw new Error('finish without a running group')
    this.running--
    if (accepted) this.accepted++
  }

  /** Would a group admitted at `admittedAt` break the bound if trained now? */
  isStale(admittedAt: number): boolean {
    return this.version - admittedAt > this.eta
  }

  setVersion(v: number): void {
    this.version = v
  }

  /** Restart counters for a run resumed at `version` (nothing is running after a restart). */
  resume(version: number): void {
    this.version = version
    this.accepted = version * this.batch
    this.running = 0
  }

  state(): StalenessState {
    return { version: this.version, accepted: this.accepted, running: this.running }
  }
}
