/**
 * ProxyService: the proxy's core, free of HTTP and of the bus (the fastify app in app.ts and the bus
 * actor in actor.ts are thin skins over it). It owns:
 *   sessions   open / end / reward, bearer keys, capacity
 *   templating the model's tokenizer + chat template, incremental prompts (token-in-token-out)
 *   engines    an EnginePool (placement, pause / weight update / resume, abort-and-resume)
 *   recording  each completion's exact ids, log-probs and per-token versions
 *   export     packed typed-array trajectories held by reference until the trainer fetches them
 *
 *   agent ──HTTP──▶ app.ts ──▶ ProxyService.chat ──▶ PromptBuilder ──▶ EnginePool ──▶ engine(s)
 *   controller/trainer ──bus──▶ actor.ts ──▶ open/end/setReward/export/fetch/pause/resume/setVersion
 */
import { randomUUID } from 'node:crypto'
import { fail } from '../../runtime/errors.ts'
import type { Logger } from '../../runtime/log.ts'
import { ChatTemplate } from '../tokenizer/chat-template.ts'
import { PromptBuilder } from '../tokenizer/incremental.ts'
import { ModelTokenizer } from '../tokenizer/tokenizer.ts'
import { type ChatResult, Completer, type CompletionResult, type StreamDelta } from './completer.ts'
import type { ProxyConfig } from './config.ts'
import { makeEngine } from './engines/factory.ts'
import { EnginePool } from './engines/pool.ts'
import type { Engine } from './engines/types.ts'
import { describe, type ExportStyle, type PackedTrajectories, pack, type TrajectoryMeta } from './export.ts'
import type { ChatRequest, CompletionRequest } from './openai.ts'

export type { ChatResult, CompletionResult, StreamDelta }

import { SessionRegistry } from './registry.ts'
import type { Session } from './session.ts'

export interface SessionHandle {
  sessionId: string
  apiKey: string
  baseUrl: string
}

export interface ProxyDeps {
  log: Logger
  /** engines built by the caller (tests, the embedded engine); default: from config.engines */
  engines?: Engine[]
  /** a tokenizer already loaded (tests share one); default: from config.model_dir */
  tokenizer?: ModelTokenizer
  /** the clock (tests); default Date.now */
  now?: () => number
}

export interface ProxyStats {
  sessions: number
  inflight: number
  completions: number
  resumed: number
  malformedToolCalls: number
  historyRewrites: number
  storedTrajectories: number
  expiredSessions: number
  expiredTrajectories: number
  version: number
  paused: boolean
}

export class ProxyService {
  readonly tokenizer: ModelTokenizer
  readonly builder: PromptBuilder
  readonly pool: EnginePool
  private readonly sessions = new SessionRegistry()
  private readonly trajectories = new Map<string, { data: PackedTrajectories; at: number }>()
  private readonly now: () => number
  private sweeper: NodeJS.Timeout | undefined
  readonly log: Logger
  private version = 0
  private closed = false
  private publicUrl = ''
  private readonly completer: Completer
  private readonly expired = { expiredSessions: 0, expiredTrajectories: 0 }

  constructor(
    readonly config: ProxyConfig,
    deps: ProxyDeps,
  ) {
    this.log = deps.log.child({ actor: 'proxy' })
    if (!deps.tokenizer && !config.model_dir) throw fail('PRX_ERR_TOKENIZER', 'proxy.model_dir is not set')
    this.tokenizer = deps.tokenizer ?? ModelTokenizer.fromDir(config.model_dir)
    this.builder = new PromptBuilder(this.tokenizer, ChatTemplate.forTokenizer(this.tokenizer))
    const engines = deps.engines ?? config.engines.map((e) => makeEngine(e, config))
    this.pool = new EnginePool(engines, { retryMs: config.engine_retry_ms, log: this.log })
    this.publicUrl = config.public_url
    this.now = deps.now ?? Date.now
    this.completer = new Completer(config, this.tokenizer, this.builder, this.pool, this.log, this.now)
    const every =
      Math.min(...[config.session_idle_ms, config.trajectory_ttl_ms].filter((x) => x > 0), 240_000) / 4
    if (!deps.now && (config.session_idle_ms > 0 || config.trajectory_ttl_ms > 0)) {
      this.sweeper = setInterval(() => this.sweep(), every).unref()
    }
  }

  /**
   * Free what nobody will claim (DESIGN §9: per-step stores must not leak): sessions idle longer than
   * session_idle_ms with nothing in flight, and exported trajectories older than trajectory_ttl_ms.
   * Runs on a timer; tests call it with their own clock.
   */
  sweep(): { sessions: number; trajectories: number } {
    const now = this.now()
    let sessions = 0
    let trajectories = 0
    const idle = this.config.session_idle_ms
    if (idle > 0) {
      for (const s of this.sessions.all()) {
        if (s.pending.size === 0 && now - s.lastActive > idle) {
          this.drop(s)
          sessions++
        }
      }
    }
    const ttl = this.config.trajectory_ttl_ms
    if (ttl > 0) {
      for (const [ref, t] of [...this.trajectories]) {
        if (now - t.at > ttl) {
          this.trajectories.delete(ref)
          trajectories++
        }
      }
    }
    this.expired.expiredSessions += sessions
    this.expired.expiredTrajectories += trajectories
    if (sessions || trajectories)
      this.log.warn({ sessions, trajectories }, 'freed unclaimed sessions / trajectories')
    return { sessions, trajectories }
  }

  /** Where agents reach this proxy: proxy.public_url, or what the HTTP server bound. */
  get url(): string {
    return this.publicUrl
  }

  /** Where agents reach this proxy (set by the HTTP server once it listens, unless configured). */
  setPublicUrl(url: string): void {
    if (!this.config.public_url) this.publicUrl = url.replace(/\/+$/, '')
  }

  // --- sessions -----------------------------------------------------------------------------------------

  async openSession(
    opts: { sessionId?: string; meta?: Record<string, unknown> } = {},
  ): Promise<SessionHandle> {
    this.assertOpen()
    if (this.sessions.size >= this.config.max_sessions) {
      throw fail('PRX_ERR_FULL', `${this.sessions.size} sessions open (proxy.max_sessions)`)
    }
    const id = opts.sessionId ?? `sess-${randomUUID()}`
    const s = this.sessions.open(id, opts.meta, this.now())
    this.log.debug({ session: id }, 'session opened')
    return { sessionId: id, apiKey: s.apiKey, baseUrl: `${this.publicUrl}/sessions/${id}/v1` }
  }

  async endSession(sessionId: string): Promise<{ completions: number }> {
    const s = this.session(sessionId)
    s.state = 'ended'
    this.pool.forget(sessionId)
    return { completions: s.completions.length }
  }

  /** Reward one completion (`interactionId`) or, without an id, the session's last completion. */
  async setReward(
    sessionId: string,
    reward: number,
    interactionId?: string | null,
  ): Promise<{ interactionId: string }> {
    if (!Number.isFinite(reward)) throw fail('PRX_ERR_BAD_REQUEST', 'reward must be a finite number')
    const s = this.session(sessionId)
    const rec = interactionId ? s.byId.get(interactionId) : s.completions.at(-1)
    if (!rec) {
      throw fail('PRX_ERR_NO_INTERACTION', interactionId ?? 'the session has no completion yet', {
        sessionId,
      })
    }
    rec.reward = reward
    s.lastActive = this.now()
    return { interactionId: rec.id }
  }

  /**
   * Turn ended sessions into packed samples held under a new reference and free the sessions.
   * Waits for the sessions' in-flight completions first.
   */
  async exportTrajectories(
    sessionIds: string | string[],
    opts: { style?: ExportStyle; turnDiscount?: number } = {},
  ): Promise<TrajectoryMeta> {
    const ids = Array.isArray(sessionIds) ? sessionIds : [sessionIds]
    const sessions = ids.map((id) => this.session(id))
    for (const s of sessions) {
      if (s.state !== 'ended') throw fail('PRX_ERR_SESSION_ACTIVE', s.id, { sessionId: s.id })
    }
    await Promise.allSettled(sessions.flatMap((s) => [...s.pending]))
    const style = opts.style ?? this.config.export.style
    const gamma = opts.turnDiscount ?? this.config.export.turn_discount
    const ref = `traj-${randomUUID()}`
    const packed = pack(ref, style, sessions, gamma)
    for (const s of sessions) this.drop(s)
    this.trajectories.set(ref, { data: packed, at: this.now() })
    return describe(packed)
  }

  /** The packed arrays under `ref`; freed once fetched unless `keep`. */
  fetchTrajectories(ref: string, opts: { keep?: boolean } = {}): PackedTrajectories {
    const p = this.trajectories.get(ref)
    if (!p) throw fail('PRX_ERR_NO_TRAJECTORY', ref)
    if (!opts.keep) this.trajectories.delete(ref)
    return p.data
  }

  releaseTrajectories(ref: string): boolean {
    return this.trajectories.delete(ref)
  }

  // --- engines --------------------------------------------------------------------------------------------

  async pause(): Promise<void> {
    await this.pool.pause()
  }

  async resume(): Promise<void> {
    await this.pool.resume()
  }

  /** Label tokens with `version` from now on (weights were pushed to the engines another way). */
  async setVersion(version: number): Promise<void> {
    this.version = version
    this.pool.setVersion(version)
  }

  /** Have every engine load weights from `path`; call between pause() and resume(). */
  async updateWeights(path: string, version: number): Promise<void> {
    await this.pool.updateWeights(path, version)
    this.version = version
  }

  getVersion(): number {
    return this.version
  }

  stats(): ProxyStats {
    return {
      sessions: this.sessions.size,
      inflight: this.completer.inflight,
      ...this.completer.counters,
      ...this.expired,
      resumed: this.pool.resumed,
      storedTrajectories: this.trajectories.size,
      version: this.version,
      paused: this.pool.isPaused,
    }
  }

  // --- requests -------------------------------------------------------------------------------------------

  /** The session a request may act on (see SessionRegistry.authenticate); marks it active. */
  authenticate(pathSessionId: string | undefined, bearer: string | undefined): Session {
    const s = this.sessions.authenticate(pathSessionId, bearer)
    s.lastActive = this.now()
    return s
  }

  async chat(
    s: Session,
    req: ChatRequest,
    o: { signal?: AbortSignal; onDelta?: (d: StreamDelta) => void } = {},
  ): Promise<ChatResult> {
    this.assertOpen()
    return this.completer.chat(s, req, o)
  }

  async completion(
    s: Session,
    req: CompletionRequest,
    o: { signal?: AbortSignal } = {},
  ): Promise<CompletionResult> {
    this.assertOpen()
    return this.completer.completion(s, req, o)
  }

  async close(): Promise<void> {
    this.closed = true
    clearInterval(this.sweeper)
    await this.pool.close()
  }

  // --- internals ------------------------------------------------------------------------------------------

  private session(id: string): Session {
    return this.sessions.get(id)
  }

  private drop(s: Session): void {
    this.sessions.drop(s)
    this.pool.forget(s.id)
  }

  private assertOpen(): void {
    if (this.closed) throw fail('PRX_ERR_CLOSED')
  }
}
