/**
 * Several engines behind one proxy: least-loaded placement with session affinity (a session stays on the
 * engine that holds its prefix cache while that engine is up), failover when an engine cannot be reached,
 * and the pause → update weights → resume sequence with abort-and-resume of in-flight generations.
 *
 * Abort and resume: when the pool is paused the engines abort what they are generating and hand back the
 * partial output. `generate` waits for `resume()`, then sends prompt + partial output with the remaining
 * token budget; the tokens made before keep their old version, the new ones get the new version.
 */
import { fail } from '../../../runtime/errors.ts'
import type { Logger } from '../../../runtime/log.ts'
import type { Engine, FinishReason, GenerateResult, Sampling } from './types.ts'

/** aborts in a row without a single new token (and without a pause) before giving up */
const MAX_IDLE_ABORTS = 3

export interface PoolGenerateOptions {
  signal?: AbortSignal
  rid?: string
  /** the prompt as JSON array elements (see GenerateRequest.inputJson); used while nothing was generated */
  promptJson?: () => Uint8Array
  /** called after each engine segment with what it added (streaming) */
  onTokens?: (ids: Int32Array, logprobs: Float32Array) => void
}

export class EnginePool {
  private readonly inflight: number[]
  private readonly downUntil: number[]
  private readonly affinity = new Map<string, number>()
  private paused = false
  private closed = false
  private unpause: { promise: Promise<void>; resolve: () => void } | null = null
  /** generations that were aborted by a pause and resumed (for stats and tests) */
  resumed = 0

  constructor(
    readonly engines: Engine[],
    private readonly opts: { retryMs: number; log: Logger },
  ) {
    if (engines.length === 0)
      throw fail('PRX_ERR_ENGINE_DOWN', 'no engines configured (proxy.engines is empty)')
    this.inflight = engines.map(() => 0)
    this.downUntil = engines.map(() => 0)
  }

  get isPaused(): boolean {
    return this.paused
  }

  load(): number[] {
    return [...this.inflight]
  }

  /** The engine for this session: its affine engine if up, else the least loaded engine that is up. */
  pick(sessionId: string, exclude: Set<number> = new Set()): number {
    const now = Date.now()
    const up = (i: number) => this.downUntil[i]! <= now && !exclude.has(i)
    const aff = this.affinity.get(sessionId)
    if (aff !== undefined && up(aff)) return aff
    let best = -1
    for (let i = 0; i < this.engines.length; i++) {
      if (up(i) && (best < 0 || this.inflight[i]! < this.inflight[best]!)) best = i
    }
    if (best < 0) {
      throw fail('PRX_ERR_ENGINE_DOWN', `all ${this.engines.length} engine(s) unreachable`, {
        engines: this.engines.map((e) => e.name),
      })
    }
    this.affinity.set(sessionId, best)
    return best
  }

  forget(sessionId: string): void {
    this.affinity.delete(sessionId)
  }

  async generate(sessionId: string, prompt: Int32Array, sampling: Sampling, o: PoolGenerateOptions = {}) {
    const ids: number[] = []
    const lps: number[] = []
    const vers: number[] = []
    let finishReason: FinishReason = 'abort'
    let idleAborts = 0
    let resumes = 0
    const tried = new Set<number>()
    for (;;) {
      if (this.paused) await this.waitUnpaused(o.signal)
      const remaining = sampling.maxNewTokens - ids.length
      if (remaining <= 0) {
        finishReason = 'length'
        break
      }
      const i = this.pick(sessionId, tried)
      const input = ids.length === 0 ? prompt : concat(prompt, ids)
      let res: GenerateResult
      let streamed = 0
      this.inflight[i]!++
      try {
        res = await this.engines[i]!.generate({
          inputIds: input,
          inputJson: ids.length === 0 ? o.promptJson : undefined,
          sampling: { ...sampling, maxNewTokens: remaining },
          signal: o.signal,
          // one engine request per segment: a resumed generation is a new request there
          rid: o.rid ? `${o.rid}-${resumes}` : undefined,
          onTokens: o.onTokens
            ? (t, l) => {
                streamed += t.length
                o.onTokens!(t, l)
              }
            : undefined,
        })
      } catch (err) {
        if ((err as { code?: string }).code === 'PRX_ERR_ENGINE_DOWN') {
          this.downUntil[i] = Date.now() + this.opts.retryMs
          this.affinity.delete(sessionId)
          tried.add(i)
          this.opts.log.warn(
            { engine: this.engines[i]!.name, err: (err as Error).message },
            'engine unreachable',
          )
          continue
        }
        throw err
      } finally {
        this.inflight[i]!--
      }
      tried.clear()
      // what a non-streaming backend (or the tail of a streaming one) has not handed over yet
      if (res.outputIds.length > streamed)
        o.onTokens?.(res.outputIds.subarray(streamed), res.logprobs.subarray(streamed))
      finishReason = res.finishReason
      if (finishReason !== 'abort' && resumes === 0) {
        // one segment, the usual case: its arrays as they are (no copy of every token, twice)
        const { outputIds, logprobs, versions } = res
        return { outputIds, logprobs, versions, finishReason, resumes }
      }
      for (let k = 0; k < res.outputIds.length; k++) {
        ids.push(res.outputIds[k]!)
        lps.push(res.logprobs[k]!)
        vers.push(res.versions[k]!)
      }
      if (finishReason !== 'abort') break
      if (o.signal?.aborted) throw o.signal.reason
      if (res.outputIds.length === 0 && !this.paused && ++idleAborts >= MAX_IDLE_ABORTS) {
        throw fail('PRX_ERR_UPSTREAM', `${this.engines[i]!.name} keeps aborting the request without output`)
      }
      if (res.outputIds.length > 0) idleAborts = 0
      resumes++
    }
    if (resumes > 0) this.resumed++
    return {
      outputIds: Int32Array.from(ids),
      logprobs: Float32Array.from(lps),
      versions: Int32Array.from(vers),
      finishReason,
      resumes,
    }
  }

  /** Stop placing generations and abort those in flight (they resume after `resume()`). */
  async pause(): Promise<void> {
    if (!this.paused) {
      this.paused = true
      let resolve!: () => void
      const promise = new Promise<void>((r) => (resolve = r))
      this.unpause = { promise, resolve }
    }
    await Promise.all(this.engines.map((e) => e.pause()))
  }

  async resume(): Promise<void> {
    await Promise.all(this.engines.map((e) => e.resume()))
    this.paused = false
    this.unpause?.resolve()
    this.unpause = null
  }

  async updateWeights(path: string, version: number): Promise<void> {
    await Promise.all(this.engines.map((e) => e.updateWeights(path, version)))
  }

  setVersion(version: number): void {
    for (const e of this.engines) e.setVersion(version)
  }

  async health(): Promise<{ name: string; ok: boolean; inflight: number }[]> {
    return Promise.all(
      this.engines.map(async (e, i) => {
        const ok = await e.health()
        if (ok) this.downUntil[i] = 0
        return { name: e.name, ok, inflight: this.inflight[i]! }
      }),
    )
  }

  /** Generations waiting for a resume fail with PRX_ERR_CLOSED. */
  async close(): Promise<void> {
    this.closed = true
    this.paused = false
    this.unpause?.resolve()
    this.unpause = null
    await Promise.all(this.engines.map((e) => e.close()))
  }

  private async waitUnpaused(signal?: AbortSignal): Promise<void> {
    while (this.paused && this.unpause) {
      const wait = this.unpause.promise
      if (!signal) await wait
      else {
        if (signal.aborted) throw signal.reason
        await new Promise<void>((resolve, reject) => {
          const onAbort = () => reject(signal.reason)
          signal.addEventListener('abort', onAbort, { once: true })
          wait.then(() => {
            signal.removeEventListener('abort', onAbort)
            resolve()
          })
        })
      }
    }
    if (this.closed) throw fail('PRX_ERR_CLOSED', 'proxy closed while generation was paused')
  }
}

function concat(a: Int32Array, b: number[]): Int32Array {
  const out = new Int32Array(a.length + b.length)
  out.set(a)
  out.set(b, a.length)
  return out
}
