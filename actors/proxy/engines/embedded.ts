/**
 * The embedded engine backend: generation by an engine actor on the bus (actors/engine/actor.ts, the
 * native addon), through the proxy's own Actor:
 *   engine:generate {rid, inputIds, sampling} → {outputIds, logprobs, versions, finishReason}
 *   engine:pause · engine:resume · engine:update_weights {path, version} · engine:abort {rids} · engine:info
 * The engine labels every token with its weights' version itself. Bus failures map to proxy codes:
 * a dead / unknown / unreachable peer → PRX_ERR_ENGINE_DOWN, an ask timeout → PRX_ERR_UPSTREAM_TIMEOUT.
 * Except for pause / resume / update_weights: a dead engine actor is left out of those (as the controller
 * leaves out a dead proxy) — its supervisor restarts it, and when it registers again the controller
 * brings every proxy, so this engine, to the current weights.
 */
import type { Actor } from '../../../runtime/actor.ts'
import { fail } from '../../../runtime/errors.ts'
import type { Engine, GenerateRequest, GenerateResult } from './types.ts'

const DOWN = new Set(['RT_ERR_PEER_DEAD', 'RT_ERR_NO_ACTOR', 'RT_ERR_SEND', 'RT_ERR_CLOSED'])

export class EmbeddedEngine implements Engine {
  readonly name: string
  private seq = 0

  constructor(
    private readonly actor: Actor,
    private readonly engineId: string,
    private readonly timeoutMs: number,
    /** engine:update_weights loads a checkpoint: it gets longer than a generation */
    private readonly loadTimeoutMs = 600_000,
  ) {
    this.name = `embedded@${engineId}`
  }

  async generate(req: GenerateRequest): Promise<GenerateResult> {
    const rid = req.rid ? `${req.rid}.${++this.seq}` : `${this.actor.id}.${++this.seq}`
    const s = req.sampling
    const onAbort = () => {
      this.actor.ask(this.engineId, 'engine:abort', { rids: [rid] }, { timeoutMs: 5000 }).catch(() => {})
    }
    req.signal?.addEventListener('abort', onAbort, { once: true })
    try {
      const r = await this.call(() =>
        this.actor.ask(
          this.engineId,
          'engine:generate',
          {
            rid,
            // never a SharedArrayBuffer here: the codec sends it as one binary frame
            inputIds: req.inputIds as Int32Array<ArrayBuffer>,
            sampling: {
              maxNewTokens: s.maxNewTokens,
              temperature: s.temperature,
              topP: s.topP,
              ...(s.topK !== undefined ? { topK: s.topK } : {}),
              stopTokenIds: s.stopStringIds?.length
                ? [...new Set([...s.stopTokenIds, ...s.stopStringIds])]
                : s.stopTokenIds,
              ...(s.seed !== undefined ? { seed: s.seed } : {}),
            },
          },
          { timeoutMs: this.timeoutMs },
        ),
      )
      if (req.signal?.aborted) throw req.signal.reason
      if (r.outputIds.length !== r.logprobs.length || r.outputIds.length !== r.versions.length) {
        throw fail('PRX_ERR_UPSTREAM', `${this.name}: outputIds, logprobs and versions differ in length`)
      }
      return r
    } finally {
      req.signal?.removeEventListener('abort', onAbort)
    }
  }

  async pause(): Promise<void> {
    await this.control(() => this.actor.ask(this.engineId, 'engine:pause', {}, { timeoutMs: this.timeoutMs }))
  }

  async resume(): Promise<void> {
    await this.control(() =>
      this.actor.ask(this.engineId, 'engine:resume', {}, { timeoutMs: this.timeoutMs }),
    )
  }

  async updateWeights(path: string, version: number): Promise<void> {
    await this.control(() =>
      this.actor.ask(
        this.engineId,
        'engine:update_weights',
        { path, version },
        { timeoutMs: Math.max(this.timeoutMs, this.loadTimeoutMs) },
      ),
    )
  }

  /** The engine labels tokens with its own weights' version; nothing to do here. */
  setVersion(_version: number): void {}

  async health(): Promise<boolean> {
    try {
      await this.actor.ask(this.engineId, 'engine:info', {}, { timeoutMs: 5000 })
      return true
    } catch {
      return false
    }
  }

  async close(): Promise<void> {}

  /** A control call: done, or skipped when the engine actor is dead (see the header). */
  private async control(fn: () => Promise<unknown>): Promise<void> {
    try {
      await this.call(fn)
    } catch (err) {
      if ((err as { code?: string }).code !== 'PRX_ERR_ENGINE_DOWN') throw err
    }
  }

  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn()
    } catch (err) {
      const code = (err as { code?: string }).code
      if (code && DOWN.has(code))
        throw fail('PRX_ERR_ENGINE_DOWN', `${this.name}: ${(err as Error).message}`, undefined, err)
      if (code === 'RT_ERR_TIMEOUT')
        throw fail('PRX_ERR_UPSTREAM_TIMEOUT', `${this.name}: ${(err as Error).message}`)
      throw err
    }
  }
}
