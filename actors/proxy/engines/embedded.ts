/**
 * The embedded engine backend: the proxy's Engine interface over the bus, towards an engine actor
 * (actors/engine/actor.ts) that generates with the native addon.
 *
 *   EnginePool ──generate──▶ EmbeddedEngine ──ask engine:generate──▶ engine actor (continuous batching)
 *              ──pause/resume/updateWeights──▶ engine:pause / engine:resume / engine:update_weights
 *
 * Failure mapping (types.ts contract): the engine actor unknown, dead, or unreachable → PRX_ERR_ENGINE_DOWN
 * (the pool fails over); no reply in time → PRX_ERR_UPSTREAM_TIMEOUT; the engine's own coded errors
 * (e.g. ENG_ERR_BAD_REQUEST) pass through unchanged. A caller's abort sends engine:abort for the request
 * (the engine stops spending tokens on it) and rethrows the signal's reason.
 *
 * Versions come from the engine: it labels every token with the version of the weights that produced it,
 * so `setVersion` has nothing to do here (weights reach an embedded engine only through updateWeights).
 */
import { randomUUID } from 'node:crypto'
import type { Actor } from '../../../runtime/actor.ts'
import { type CodedError, fail } from '../../../runtime/errors.ts'
import type { Engine, GenerateRequest, GenerateResult } from './types.ts'

export interface EmbeddedOptions {
  /** the proxy's bus actor (asks go out through it) */
  actor: Actor
  /** actor id (or inbox address) of the engine */
  engine: string
  /** per-request timeout */
  timeoutMs: number
  /** timeout of engine:update_weights (loading a checkpoint), default 600 s */
  loadTimeoutMs?: number
}

const DOWN = new Set(['RT_ERR_NO_ACTOR', 'RT_ERR_PEER_DEAD', 'RT_ERR_SEND'])

export class EmbeddedEngine implements Engine {
  readonly name: string

  constructor(private readonly opts: EmbeddedOptions) {
    this.name = `embedded@${opts.engine}`
  }

  async generate(req: GenerateRequest): Promise<GenerateResult> {
    const rid = req.rid ?? `gen-${randomUUID()}`
    const s = req.sampling
    const sampling = {
      maxNewTokens: s.maxNewTokens,
      temperature: s.temperature,
      topP: s.topP,
      stopTokenIds: s.stopTokenIds,
      ...(s.topK !== undefined ? { topK: s.topK } : {}),
      ...(s.seed !== undefined ? { seed: s.seed } : {}),
    }
    if (req.signal?.aborted) throw req.signal.reason ?? fail('RT_ERR_CANCELLED', rid)
    const onAbort = () => {
      this.opts.actor.ask(this.opts.engine, 'engine:abort', { rids: [rid] }).catch(() => {})
    }
    req.signal?.addEventListener('abort', onAbort, { once: true })
    try {
      return await this.opts.actor.ask(
        this.opts.engine,
        'engine:generate',
        { rid, inputIds: req.inputIds as Int32Array<ArrayBuffer>, sampling },
        { timeoutMs: this.opts.timeoutMs },
      )
    } catch (e) {
      if (req.signal?.aborted) throw req.signal.reason ?? e
      throw this.mapped(e, 'engine:generate')
    } finally {
      req.signal?.removeEventListener('abort', onAbort)
    }
  }

  async pause(): Promise<void> {
    await this.control(() => this.opts.actor.ask(this.opts.engine, 'engine:pause', {}), 'engine:pause')
  }

  async resume(): Promise<void> {
    await this.control(() => this.opts.actor.ask(this.opts.engine, 'engine:resume', {}), 'engine:resume')
  }

  async updateWeights(path: string, version: number): Promise<void> {
    const timeoutMs = this.opts.loadTimeoutMs ?? 600_000
    await this.control(
      () => this.opts.actor.ask(this.opts.engine, 'engine:update_weights', { path, version }, { timeoutMs }),
      'engine:update_weights',
    )
  }

  setVersion(_version: number): void {
    // the engine labels tokens with the version of the weights it loaded (see the header)
  }

  async health(): Promise<boolean> {
    try {
      await this.opts.actor.ask(this.opts.engine, 'engine:info', {}, { timeoutMs: 5000 })
      return true
    } catch {
      return false
    }
  }

  async close(): Promise<void> {
    // the engine actor has its own lifetime (its process is supervised); nothing is held here
  }

  private async control(fn: () => Promise<unknown>, what: string): Promise<void> {
    try {
      await fn()
    } catch (e) {
      throw this.mapped(e, what)
    }
  }

  private mapped(e: unknown, what: string): Error {
    const err = e as CodedError
    if (DOWN.has(err.code)) return fail('PRX_ERR_ENGINE_DOWN', `${this.name} ${what}: ${err.message}`, {}, e)
    if (err.code === 'RT_ERR_TIMEOUT') return fail('PRX_ERR_UPSTREAM_TIMEOUT', `${this.name} ${what}`, {}, e)
    if (err.code === 'RT_ERR_CLOSED')
      return fail('PRX_ERR_CLOSED', `${this.name} ${what}: ${err.message}`, {}, e)
    return err instanceof Error ? err : fail('PRX_ERR_UPSTREAM', `${this.name} ${what}: ${String(e)}`)
  }
}
