/**
 * The controller's task dataset: task ids of the configured domain/split, visited epoch by epoch in a
 * seeded shuffled order. Its position is part of the controller's checkpoint, so a recovered run
 * continues with the next task, not from the start.
 */
import { rng } from '../../runtime/rng.ts'

export interface DatasetState {
  epoch: number
  index: number
}

export { rng }

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
