/**
 * The controller's task dataset: task ids of the configured domain/split, visited epoch by epoch in a
 * seeded shuffled order. Its position is part of the controller's checkpoint, so a recovered run
 * continues with the next task, not from the start.
 */

export interface DatasetState {
  epoch: number
  index: number
}

/** mulberry32: a small seeded PRNG (reproducible shuffles across runs and restarts). */
export function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export class TaskDataset {
  private order: string[] = []
  private state: DatasetState = { epoch: 0, index: 0 }

  constructor(
    readonly ids: readonly string[],
    private readonly seed: number,
    private readonly shuffle: boolean,
  ) {
    if (ids.length === 0) throw new Error('empty dataset')
    this.reorder()
  }

  private reorder(): void {
    this.order = [...this.ids]
    if (!this.shuffle) return
    const r = rng(this.seed * 1000003 + this.state.epoch)
    for (let i = this.order.length - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1))
      ;[this.order[i], this.order[j]] = [this.order[j], this.order[i]]
    }
  }

  /** The next task id (wrapping into a new epoch). */
  next(): string {
    if (this.state.index >= this.order.length) {
      this.state = { epoch: this.state.epoch + 1, index: 0 }
      this.reorder()
    }
    return this.order[this.state.index++]
  }

  get position(): DatasetState {
    return { ...this.state }
  }

  restore(s: DatasetState): void {
    this.state = { ...s }
    this.reorder()
  }
}
