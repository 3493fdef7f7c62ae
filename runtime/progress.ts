/**
 * A progress bar for long CLI work, on stderr. On a TTY it redraws one line; otherwise it prints a line
 * at most every `everyMs` (logs stay readable in CI and Slurm output files).
 */
export class Progress {
  private done = 0
  private last = 0
  private readonly t0 = Date.now()
  private readonly tty: boolean
  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly out: NodeJS.WriteStream = process.stderr,
    private readonly everyMs = 2000,
  ) {
    this.tty = Boolean(out.isTTY)
  }

  /** Advance by `n` and redraw with extra `info` ("reward 0.41 · 812 tok/s"). */
  tick(n = 1, info = ''): void {
    this.done = Math.min(this.total, this.done + n)
    this.draw(info)
  }

  set(done: number, info = ''): void {
    this.done = Math.min(this.total, done)
    this.draw(info)
  }

  finish(info = ''): void {
    this.draw(info, true)
    if (this.tty) this.out.write('\n')
  }

  private draw(info: string, force = false): void {
    const now = Date.now()
    if (!force && !this.tty && now - this.last < this.everyMs) return
    if (!force && this.tty && now - this.last < 50) return
    this.last = now
    const width = 28
    const frac = this.total ? this.done / this.total : 1
    const fill = Math.round(frac * width)
    const secs = (now - this.t0) / 1000
    const eta = frac > 0 && frac < 1 ? ` eta ${Math.round(secs / frac - secs)}s` : ''
    const line = `${this.label} [${'█'.repeat(fill)}${'·'.repeat(width - fill)}] ${this.done}/${this.total} ${secs.toFixed(0)}s${eta}${info ? ` · ${info}` : ''}`
    this.out.write(this.tty ? `\r\x1b[2K${line}` : `${line}\n`)
  }
}
