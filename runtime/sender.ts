/**
 * Serialised, awaited sends on one ZeroMQ socket. zeromq.js allows one blocking send at a time (a second
 * one on a muted socket rejects with EBUSY), so sends on a socket queue here in call order. Each caller's
 * promise settles when its frames are queued by ZeroMQ — that is the backpressure: a full high-water mark
 * makes `send` wait, and `sendTimeout` turns a stuck peer into RT_ERR_SEND.
 */
import { fail } from './errors.ts'

export class Sender {
  private tail: Promise<void> = Promise.resolve()
  private queued = 0
  constructor(
    private readonly sock: { send(frames: Uint8Array[]): Promise<void> },
    private readonly what: string,
  ) {}

  /** messages waiting behind a blocked send */
  get depth(): number {
    return this.queued
  }

  send(frames: Uint8Array[]): Promise<void> {
    this.queued++
    const p = this.tail.then(
      () => this.sock.send(frames),
      () => this.sock.send(frames),
    )
    this.tail = p.then(
      () => {
        this.queued--
      },
      () => {
        this.queued--
      },
    )
    return p.catch((e: { code?: string; message?: string }) => {
      throw fail('RT_ERR_SEND', `${this.what}: ${e?.code ?? ''} ${e?.message ?? String(e)}`.trim(), {
        errno: e?.code,
      })
    })
  }
}
