/**
 * Continuous batching over the native model: the embedded engine's scheduler, free of the bus.
 *
 *   submit ──▶ queue (arrival order) ──▶ loop: take ≤ max_batch requests with the head's sampling
 *              ▲                              params, run Model.generate (a chunk)
 *              └── unfinished requests stay queued (resumed with their partial output next chunk) ◀──┘
 *
 * - Requests join and leave the batch between chunks; a chunk makes at most chunk_tokens tokens per
 *   request (a native generate call returns when all its requests are done, so the chunk length bounds
 *   how long a finished request waits for its neighbours). Resuming costs a prefill of prompt + partial
 *   output (the native KV cache does not outlive a generate call): chunk_tokens trades join latency
 *   against that. Sampling randomness is a function of (seed, position) in the native sampler, so
 *   chunking (and being batched with others) does not change what a request generates.
 * - Every output token carries the version of the weights that produced it (weights change only between
 *   chunks: `updateWeights` takes the model lock the loop holds while a chunk runs).
 * - `pause()` aborts the running chunk (native AbortSignal) and answers every in-flight request with
 *   finishReason 'abort' and its tokens so far; requests arriving while paused wait for `resume()`.
 * - A native failure fails the requests of that chunk only; the engine keeps serving.
 */
import { EventEmitter } from 'node:events'
import type { Generation, GenerationRequest, Model } from '../../native/index.ts'
import { type CodedError, fail } from '../../runtime/errors.ts'
import type { Logger } from '../../runtime/log.ts'
import type { AskRes, SamplingShape } from '../../runtime/messages.ts'

export interface EngineRequest {
  rid: string
  inputIds: Int32Array
  sampling: SamplingShape
}
export type EngineResult = AskRes<'engine:generate'>

export interface BatcherOptions {
  maxBatch: number
  chunkTokens: number
  /** base seed for requests without one */
  seed: number
  kvCache: boolean
  log: Logger
  /** loads the weights of engine:update_weights */
  load: (path: string) => Promise<Model>
  version?: number
  weightsPath?: string
}

interface Slot {
  rid: string
  prompt: Int32Array
  sampling: SamplingShape
  /** requests with equal keys can share a chunk (one SamplingParams per native call) */
  key: string
  seed: number
  budget: number
  tokens: number[]
  logprobs: number[]
  versions: number[]
  /** engine:abort while its chunk ran: answered when the chunk returns */
  cancelled: boolean
  resolve: (r: EngineResult) => void
  reject: (e: Error) => void
}

/** What a Batcher reports as it works (for stats and for tests to synchronise on). */
export interface BatcherEvents {
  /** a request was queued; the number of unfinished requests */
  queued: [number]
  /** the running chunk made `steps` decode steps */
  progress: [number]
  /** a chunk returned; tokens generated so far */
  chunk: [number]
}

export class Batcher extends EventEmitter<BatcherEvents> {
  version: number
  weightsPath: string
  generatedTokens = 0
  chunks = 0
  private model: Model
  private readonly queue: Slot[] = []
  private running: Slot[] = []
  private chunk: AbortController | undefined
  /** decode steps of the running chunk so far */
  private steps = 0
  private idle: Promise<void> = Promise.resolve()
  private paused = false
  private closed = false
  private wakeUp: (() => void) | undefined
  private lock: Promise<unknown> = Promise.resolve()
  private seq = 0
  private readonly loopDone: Promise<void>

  constructor(
    model: Model,
    private readonly opts: BatcherOptions,
  ) {
    super()
    this.model = model
    this.version = opts.version ?? 0
    this.weightsPath = opts.weightsPath ?? ''
    this.loopDone = this.loop()
  }

  /** Queue a request; resolves when it finishes ('stop' | 'length') or is aborted ('abort'). */
  submit(req: EngineRequest): Promise<EngineResult> {
    if (this.closed) return Promise.reject(fail('RT_ERR_CLOSED', 'engine is shutting down'))
    try {
      this.check(req)
    } catch (e) {
      return Promise.reject(e)
    }
    const s = req.sampling
    return new Promise<EngineResult>((resolve, reject) => {
      const slot: Slot = {
        rid: req.rid,
        prompt: req.inputIds,
        sampling: s,
        key: JSON.stringify([s.temperature, s.topP, s.topK ?? 0, s.stopTokenIds]),
        seed: s.seed ?? this.opts.seed + this.seq++,
        budget: s.maxNewTokens,
        tokens: [],
        logprobs: [],
        versions: [],
        cancelled: false,
        resolve,
        reject,
      }
      if (slot.budget === 0) return this.answer(slot, 'length', false)
      this.queue.push(slot)
      this.wake()
      this.emit('queued', this.queue.length)
    })
  }

  /** Abort the running chunk, answer every in-flight request with 'abort'; hold new ones until resume(). */
  async pause(): Promise<number> {
    this.paused = true
    this.chunk?.abort()
    await this.idle
    const n = this.queue.length
    for (const s of [...this.queue]) this.answer(s, 'abort')
    this.opts.log.debug({ aborted: n, version: this.version }, 'engine paused')
    return n
  }

  resume(): number {
    this.paused = false
    this.wake()
    return this.version
  }

  /** Answer these requests with 'abort' now (queued) or when the running chunk returns (running). */
  abort(rids: string[]): number {
    const want = new Set(rids)
    let n = 0
    for (const s of [...this.queue]) {
      if (!want.has(s.rid)) continue
      n++
      if (this.running.includes(s)) {
        s.cancelled = true
        this.chunk?.abort()
      } else this.answer(s, 'abort')
    }
    return n
  }

  /** Decode steps the running chunk has made so far (0 when idle). */
  get runningSteps(): number {
    return this.chunk ? this.steps : 0
  }

  /**
   * Load new weights between chunks: the running chunk is cut (its requests continue afterwards, with
   * the new weights); tokens generated afterwards carry `version`.
   */
  updateWeights(path: string, version: number): Promise<{ version: number; loadMs: number }> {
    const done = this.exclusive(async () => {
      const t0 = Date.now()
      const next = await this.opts.load(path)
      const old = this.model
      this.model = next
      old.dispose()
      this.version = version
      this.weightsPath = path
      const loadMs = Date.now() - t0
      this.opts.log.info({ path, version, loadMs }, 'weights loaded')
      return { version, loadMs }
    })
    this.chunk?.abort()
    return done
  }

  info(): AskRes<'engine:info'> {
    return {
      version: this.version,
      running: this.running.length,
      queued: this.queue.length - this.running.length,
      paused: this.paused,
      generatedTokens: this.generatedTokens,
      weightsPath: this.weightsPath,
    }
  }

  /** Stop: in-flight requests are answered with 'abort' (callers resume elsewhere); the model is freed. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.chunk?.abort()
    await this.idle
    for (const s of [...this.queue]) this.answer(s, 'abort')
    this.wake()
    await this.loopDone
    await this.exclusive(async () => this.model.dispose())
  }

  // --- internals ----------------------------------------------------------------------------------------

  private check(req: EngineRequest): void {
    const cfg = this.model.config
    const { inputIds: ids, sampling: s } = req
    const bad = (why: string) => fail('ENG_ERR_BAD_REQUEST', `${req.rid}: ${why}`, { rid: req.rid })
    if (ids.length === 0) throw bad('inputIds is empty')
    for (let i = 0; i < ids.length; i++)
      if (ids[i]! < 0 || ids[i]! >= cfg.vocab_size)
        throw bad(`inputIds[${i}] = ${ids[i]} outside the vocabulary`)
    if (s.maxNewTokens < 0) throw bad('maxNewTokens < 0')
    if (!(s.temperature >= 0)) throw bad(`temperature ${s.temperature} < 0`)
    if (!(s.topP > 0 && s.topP <= 1)) throw bad(`topP ${s.topP} outside (0, 1]`)
    const limit = cfg.max_position_embeddings ?? Number.POSITIVE_INFINITY
    if (ids.length + s.maxNewTokens > limit)
      throw bad(`${ids.length} prompt + ${s.maxNewTokens} new tokens exceed the model's ${limit} positions`)
    if (this.queue.some((q) => q.rid === req.rid)) throw bad('a request with this rid is in flight')
  }

  private wake(): void {
    const w = this.wakeUp
    this.wakeUp = undefined
    w?.()
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn, fn)
    this.lock = run.catch(() => {})
    return run
  }

  private async loop(): Promise<void> {
    while (!this.closed) {
      if (this.paused || this.queue.length === 0) {
        await new Promise<void>((r) => {
          this.wakeUp = r
        })
        continue
      }
      const key = this.queue[0]!.key
      const batch = this.queue.filter((s) => s.key === key).slice(0, this.opts.maxBatch)
      await this.runChunk(batch)
    }
  }

  private async runChunk(batch: Slot[]): Promise<void> {
    const ac = new AbortController()
    let done!: () => void
    this.idle = new Promise((r) => {
      done = r
    })
    this.chunk = ac
    this.running = batch
    this.steps = 0
    const t0 = Date.now()
    try {
      const out = await this.exclusive(async () => {
        if (ac.signal.aborted) return undefined
        const version = this.version
        const reqs: GenerationRequest[] = batch.map((s) => ({
          prompt: s.prompt,
          seed: s.seed,
          maxNewTokens: Math.min(s.budget, s.tokens.length + this.opts.chunkTokens),
          resume: s.tokens.length
            ? { tokens: Int32Array.from(s.tokens), logprobs: Float32Array.from(s.logprobs) }
            : undefined,
        }))
        const p = batch[0]!.sampling
        const gens = await this.model.generate(
          reqs,
          {
            temperature: p.temperature,
            topP: p.topP,
            topK: p.topK ?? 0,
            stopIds: p.stopTokenIds,
            kvCache: this.opts.kvCache,
          },
          {
            signal: ac.signal,
            onProgress: (n) => {
              if (this.chunk !== ac) return
              this.steps = n
              this.emit('progress', n)
            },
          },
        )
        return { gens, version }
      })
      if (out) this.absorb(batch, out.gens, out.version)
      else for (const s of batch) if (s.cancelled) this.answer(s, 'abort')
      this.chunks++
      this.opts.log.debug({ batch: batch.length, ms: Date.now() - t0 }, 'chunk done')
    } catch (e) {
      const err = e as CodedError
      this.opts.log.error({ code: err.code, err: err.message, batch: batch.length }, 'chunk failed')
      for (const s of batch) this.fail(s, err)
    } finally {
      this.chunk = undefined
      this.running = []
      done()
      this.emit('chunk', this.generatedTokens)
    }
  }

  private absorb(batch: Slot[], gens: Generation[], version: number): void {
    batch.forEach((s, i) => {
      const g = gens[i]!
      for (let k = s.tokens.length; k < g.tokens.length; k++) {
        s.tokens.push(g.tokens[k]!)
        s.logprobs.push(g.logprobs[k]!)
        s.versions.push(version)
        this.generatedTokens++
      }
      if (s.cancelled) this.answer(s, 'abort')
      else if (g.finish === 'stop') this.answer(s, 'stop')
      else if (s.tokens.length >= s.budget) this.answer(s, 'length')
      // else: 'length' at the chunk's end, or 'abort' (a weight update or a cancelled neighbour cut the
      // chunk: it continues in the next one; or a pause: pause() answers it)
    })
  }

  private remove(s: Slot): boolean {
    const i = this.queue.indexOf(s)
    if (i >= 0) this.queue.splice(i, 1)
    return i >= 0
  }

  private answer(s: Slot, finishReason: EngineResult['finishReason'], queued = true): void {
    if (queued && !this.remove(s)) return
    s.resolve({
      outputIds: Int32Array.from(s.tokens),
      logprobs: Float32Array.from(s.logprobs),
      versions: Int32Array.from(s.versions),
      finishReason,
    })
  }

  private fail(s: Slot, err: Error): void {
    if (this.remove(s)) s.reject(err)
  }
}
