/**
 * Serialised, awaited sends on one ZeroMQ socket, with coalescing under load.
 *
 * zeromq.js allows one blocking send at a time (a second one on a muted socket rejects with EBUSY), so
 * sends on a socket queue here in call order. Each caller's promise settles when its frames are queued
 * by ZeroMQ — that is the backpressure: a full high-water mark makes `send` wait, and `sendTimeout` turns
 * a stuck peer into RT_ERR_SEND.
 *
 * When messages pile up behind a send, up to MAX_BATCH single-frame envelopes bound for the same peer
 * leave as one multipart ZeroMQ message: [routing id…] BATCH_MARK env1 env2 … . The receiver
 * (`unbatch`) splits it back. An idle socket sends each message alone, so latency is unchanged; a busy
 * one pays one ZeroMQ send and receive per batch instead of per message.
 */
import { fail } from './errors.ts'

export const BATCH_MARK = 0xb7
const MARK_FRAME = new Uint8Array([BATCH_MARK])
const MAX_BATCH = 256

interface Item {
  frames: Uint8Array[]
  resolve: () => void
  reject: (e: Error) => void
}

export class Sender {
  private busy = false
  // a FIFO as array + head index: Array#shift is O(n), and pipelined asks queue thousands here
  private queue: Item[] = []
  private head = 0

  /**
   * @param sock    the socket
   * @param what    names the link in errors
   * @param prefix  routing frames before each envelope (1 on a Router: the peer's routing id; 0 on a Dealer)
   */
  constructor(
    private readonly sock: { send(frames: Uint8Array[]): Promise<void> },
    private readonly what: string,
    private readonly prefix = 0,
  ) {}

  /** messages waiting behind a blocked send */
  get depth(): number {
    return this.queue.length - this.head
  }

  send(frames: Uint8Array[]): Promise<void> {
    if (this.busy) return new Promise((resolve, reject) => this.queue.push({ frames, resolve, reject }))
    return this.direct(frames)
  }

  private direct(frames: Uint8Array[]): Promise<void> {
    this.busy = true
    return this.sock.send(frames).then(
      () => this.next(),
      (e: { code?: string; message?: string }) => {
        this.next()
        throw fail('RT_ERR_SEND', `${this.what}: ${e?.code ?? ''} ${e?.message ?? String(e)}`.trim(), {
          errno: e?.code,
        })
      },
    )
  }

  private batchable(it: Item, first: Item): boolean {
    if (it.frames.length !== this.prefix + 1) return false
    for (let i = 0; i < this.prefix; i++) if (!sameBytes(it.frames[i], first.frames[i])) return false
    return true
  }

  private next(): void {
    this.busy = false
    if (this.head === this.queue.length) return
    const first = this.queue[this.head++]
    let items: Item[] | undefined
    if (this.head < this.queue.length && this.batchable(first, first)) {
      while (
        this.head < this.queue.length &&
        (items?.length ?? 1) < MAX_BATCH &&
        this.batchable(this.queue[this.head], first)
      ) {
        items ??= [first]
        items.push(this.queue[this.head++])
      }
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head)
      this.head = 0
    }
    if (!items) {
      this.direct(first.frames).then(first.resolve, first.reject)
      return
    }
    const frames = first.frames.slice(0, this.prefix)
    frames.push(MARK_FRAME)
    for (const it of items) frames.push(it.frames[this.prefix])
    const batch = items
    this.direct(frames).then(
      () => {
        for (const it of batch) it.resolve()
      },
      (e: Error) => {
        for (const it of batch) it.reject(e)
      },
    )
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a === b) return true
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/** Split a received message (routing frames removed) into the frame lists of its envelopes. */
export function unbatch(frames: Uint8Array[]): Uint8Array[][] {
  const f0 = frames[0]
  if (frames.length > 1 && f0 && f0.length === 1 && f0[0] === BATCH_MARK) {
    const out: Uint8Array[][] = []
    for (let i = 1; i < frames.length; i++) out.push([frames[i]])
    return out
  }
  return [frames]
}
