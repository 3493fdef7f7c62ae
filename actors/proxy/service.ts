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
import { randomBytes, randomUUID } from 'node:crypto'
import { fail } from '../../runtime/errors.ts'
import type { Logger } from '../../runtime/log.ts'
import { type ChatMessage, ChatTemplate } from '../tokenizer/chat-template.ts'
import { PromptBuilder, type TemplateContext } from '../tokenizer/incremental.ts'
import { ModelTokenizer } from '../tokenizer/tokenizer.ts'
import type { EngineConfig, ProxyConfig } from './config.ts'
import { EnginePool } from './engines/pool.ts'
import { SglangEngine } from './engines/sglang.ts'
import type { Engine, FinishReason, Sampling } from './engines/types.ts'
import { VllmEngine } from './engines/vllm.ts'
import { describe, type ExportStyle, type PackedTrajectories, pack, type TrajectoryMeta } from './export.ts'
import type { ChatRequest, ChatRequestMessage, CompletionRequest } from './openai.ts'
import type { CompletionRecord } from './session.ts'
import { Session } from './session.ts'
import { type ParsedOutput, type ParsedToolCall, parseOutput, StreamingParser } from './tool-parser.ts'

/** how many ended / exported session ids (and keys) are remembered to answer 410 rather than 404 */
const TOMBSTONES = 65536

export interface SessionHandle {
  sessionId: string
  apiKey: string
  baseUrl: string
}

export interface ChatResult {
  id: string
  created: number
  model: string
  content: string | null
  reasoning: string | null
  toolCalls: ParsedToolCall[]
  finishReason: 'stop' | 'length' | 'tool_calls'
  promptTokens: number
  completionTokens: number
  outputIds: Int32Array
  logprobs: Float32Array
}

export interface CompletionResult {
  id: string
  created: number
  model: string
  text: string
  finishReason: 'stop' | 'length'
  promptTokens: number
  completionTokens: number
  outputIds: Int32Array
  logprobs: Float32Array
}

export interface StreamDelta {
  reasoning: string
  content: string
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
  private readonly sessions = new Map<string, Session>()
  private readonly keys = new Map<string, Session>()
  private readonly gone = new Map<string, true>()
  private readonly trajectories = new Map<string, { data: PackedTrajectories; at: number }>()
  private readonly now: () => number
  private sweeper: NodeJS.Timeout | undefined
  readonly log: Logger
  private inflight = 0
  private version = 0
  private closed = false
  private publicUrl = ''
  private counters = {
    completions: 0,
    malformedToolCalls: 0,
    historyRewrites: 0,
    expiredSessions: 0,
    expiredTrajectories: 0,
  }

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
      for (const s of [...this.sessions.values()]) {
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
    this.counters.expiredSessions += sessions
    this.counters.expiredTrajectories += trajectories
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
    if (this.sessions.has(id) || this.gone.has(id))
      throw fail('PRX_ERR_BAD_REQUEST', `session id ${id} already used`)
    const s = new Session(id, opts.meta, this.now())
    this.sessions.set(id, s)
    this.keys.set(s.apiKey, s)
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
      inflight: this.inflight,
      ...this.counters,
      resumed: this.pool.resumed,
      storedTrajectories: this.trajectories.size,
      version: this.version,
      paused: this.pool.isPaused,
    }
  }

  // --- requests -------------------------------------------------------------------------------------------

  /**
   * The session a request may act on. `pathSessionId` comes from a session-scoped URL
   * (/sessions/:id/v1/…); `bearer` is the Authorization key.
   */
  authenticate(pathSessionId: string | undefined, bearer: string | undefined): Session {
    if (!bearer) throw fail('PRX_ERR_AUTH_MISSING')
    if (pathSessionId !== undefined) {
      const s = this.sessions.get(pathSessionId)
      if (!s) {
        if (this.gone.has(pathSessionId)) throw fail('PRX_ERR_SESSION_ENDED', pathSessionId)
        throw fail('PRX_ERR_NO_SESSION', pathSessionId)
      }
      const owner = this.keys.get(bearer)
      if (!owner) {
        if (this.gone.has(bearer))
          throw fail('PRX_ERR_FORBIDDEN', 'the key belongs to another, ended session')
        throw fail('PRX_ERR_AUTH_INVALID')
      }
      if (owner !== s) throw fail('PRX_ERR_FORBIDDEN', `key is not the key of ${pathSessionId}`)
      if (s.state === 'ended') throw fail('PRX_ERR_SESSION_ENDED', s.id)
      s.lastActive = this.now()
      return s
    }
    const s = this.keys.get(bearer)
    if (!s) {
      if (this.gone.has(bearer)) throw fail('PRX_ERR_SESSION_ENDED')
      throw fail('PRX_ERR_AUTH_INVALID')
    }
    if (s.state === 'ended') throw fail('PRX_ERR_SESSION_ENDED', s.id)
    s.lastActive = this.now()
    return s
  }

  async chat(
    s: Session,
    req: ChatRequest,
    o: { signal?: AbortSignal; onDelta?: (d: StreamDelta) => void } = {},
  ): Promise<ChatResult> {
    if (req.n !== undefined && req.n !== 1)
      throw fail('PRX_ERR_UNSUPPORTED', 'n must be 1 (one session, one branch)')
    const messages = req.messages.map(toChatMessage)
    const ctx: TemplateContext = {
      tools: req.tools?.length ? req.tools : undefined,
      kwargs: req.chat_template_kwargs,
    }
    const ctxKey = JSON.stringify([ctx.tools ?? null, ctx.kwargs ?? null])
    const msgKeys = messages.map(messageKey)
    const { prompt, parent, follows } = this.chatPrompt(s, messages, msgKeys, ctx, ctxKey)
    const toolsOn = this.config.tool_parser !== 'none' && !!ctx.tools && req.tool_choice !== 'none'
    const reasoningOn = this.config.reasoning_parser !== 'none'
    const promptTail = this.tokenizer.decode(prompt.subarray(Math.max(0, prompt.length - 4)))
    const id = `chatcmpl-${randomBytes(12).toString('hex')}`
    const parseOpts = {
      tools: toolsOn,
      reasoning: reasoningOn,
      reasoningOpen: reasoningOn && /<think>\n?$/.test(promptTail),
      idPrefix: `call_${id.slice(9, 21)}_`,
    }
    const stream = o.onDelta ? new StreamingParser(parseOpts) : null
    const out: number[] = []
    const gen = await this.generate(
      s,
      id,
      prompt,
      this.sampling(req, prompt.length, req.max_completion_tokens),
      {
        signal: o.signal,
        onTokens: stream
          ? (ids) => {
              for (const x of ids) out.push(x)
              const d = stream.update(this.tokenizer.decode(stripEos(out, this.tokenizer), false))
              if (d.reasoning || d.content) o.onDelta!(d)
            }
          : undefined,
      },
    )
    const text = this.tokenizer.decode(stripEos(gen.outputIds, this.tokenizer))
    let parsed: ParsedOutput
    if (stream) {
      const fin = stream.finish(text)
      if (fin.reasoningDelta || fin.contentDelta)
        o.onDelta!({ reasoning: fin.reasoningDelta, content: fin.contentDelta })
      parsed = fin
    } else {
      parsed = parseOutput(text, parseOpts)
    }
    this.counters.malformedToolCalls += parsed.malformed
    const endsWithEos =
      gen.outputIds.length > 0 && this.tokenizer.isEos(gen.outputIds[gen.outputIds.length - 1]!)
    const content = parsed.content === '' && parsed.toolCalls.length > 0 ? null : parsed.content
    this.record(s, {
      id,
      parent,
      follows,
      prompt,
      gen,
      chat: {
        msgKeys,
        replyKey: messageKey({
          role: 'assistant',
          content: content ?? '',
          tool_calls: parsed.toolCalls.length
            ? parsed.toolCalls.map((t) => ({ function: { name: t.name, arguments: t.arguments } }))
            : undefined,
        }),
        ctxKey,
        reasoning: parsed.reasoning === null ? 'none' : parsed.reasoning === '' ? 'empty' : 'text',
        endsWithEos,
      },
    })
    return {
      id,
      created: Math.floor(Date.now() / 1000),
      model: this.config.model_name,
      content,
      reasoning: parsed.reasoning,
      toolCalls: parsed.toolCalls,
      finishReason:
        parsed.toolCalls.length > 0 ? 'tool_calls' : gen.finishReason === 'length' ? 'length' : 'stop',
      promptTokens: prompt.length,
      completionTokens: gen.outputIds.length,
      outputIds: gen.outputIds,
      logprobs: gen.logprobs,
    }
  }

  async completion(
    s: Session,
    req: CompletionRequest,
    o: { signal?: AbortSignal } = {},
  ): Promise<CompletionResult> {
    if (req.n !== undefined && req.n !== 1) throw fail('PRX_ERR_UNSUPPORTED', 'n must be 1')
    if (req.echo) throw fail('PRX_ERR_UNSUPPORTED', 'echo is not supported')
    const ids = typeof req.prompt === 'string' ? this.tokenizer.encode(req.prompt) : req.prompt
    for (const x of ids) {
      if (x >= this.tokenizer.vocabSize)
        throw fail('PRX_ERR_BAD_REQUEST', `prompt token id ${x} is outside the vocabulary`)
    }
    const prompt = Int32Array.from(ids)
    this.checkPromptLength(prompt.length)
    const id = `cmpl-${randomBytes(12).toString('hex')}`
    const gen = await this.generate(s, id, prompt, this.sampling(req, prompt.length), o)
    this.record(s, { id, parent: null, follows: null, prompt, gen })
    return {
      id,
      created: Math.floor(Date.now() / 1000),
      model: this.config.model_name,
      text: this.tokenizer.decode(stripEos(gen.outputIds, this.tokenizer)),
      finishReason: gen.finishReason === 'length' ? 'length' : 'stop',
      promptTokens: prompt.length,
      completionTokens: gen.outputIds.length,
      outputIds: gen.outputIds,
      logprobs: gen.logprobs,
    }
  }

  async close(): Promise<void> {
    this.closed = true
    clearInterval(this.sweeper)
    await this.pool.close()
  }

  // --- internals ------------------------------------------------------------------------------------------

  private session(id: string): Session {
    const s = this.sessions.get(id)
    if (s) return s
    if (this.gone.has(id)) throw fail('PRX_ERR_SESSION_ENDED', `${id} was exported`)
    throw fail('PRX_ERR_NO_SESSION', id)
  }

  private drop(s: Session): void {
    this.sessions.delete(s.id)
    this.keys.delete(s.apiKey)
    this.pool.forget(s.id)
    for (const k of [s.id, s.apiKey]) {
      this.gone.set(k, true)
      if (this.gone.size > TOMBSTONES) this.gone.delete(this.gone.keys().next().value!)
    }
  }

  private assertOpen(): void {
    if (this.closed) throw fail('PRX_ERR_CLOSED')
  }

  private checkPromptLength(n: number): void {
    if (n >= this.config.context_length) {
      throw fail(
        'PRX_ERR_PROMPT_TOO_LONG',
        `${n} prompt tokens, context_length is ${this.config.context_length}`,
        {
          promptTokens: n,
        },
      )
    }
  }

  private chatPrompt(
    s: Session,
    messages: ChatMessage[],
    msgKeys: string[],
    ctx: TemplateContext,
    ctxKey: string,
  ): { prompt: Int32Array; parent: CompletionRecord | null; follows: string | null } {
    const prev = this.config.incremental ? s.findParent(msgKeys, ctxKey) : undefined
    if (prev?.chat) {
      const d = this.builder.delta(messages.slice(prev.chat.msgKeys.length + 1), ctx, {
        prevReasoning: prev.chat.reasoning,
        outputEndsWithEos: prev.chat.endsWithEos,
      })
      if (d.kind === 'extend') {
        const n = prev.promptIds.length + prev.outputIds.length + d.ids.length
        this.checkPromptLength(n)
        const prompt = new Int32Array(n)
        prompt.set(prev.promptIds)
        prompt.set(prev.outputIds, prev.promptIds.length)
        prompt.set(d.ids, prev.promptIds.length + prev.outputIds.length)
        return { prompt, parent: prev, follows: prev.id }
      }
      this.counters.historyRewrites++
      this.log.debug({ session: s.id, reason: d.reason }, 'template rewrites history: new sample')
    }
    const prompt = Int32Array.from(this.builder.full(messages, ctx))
    this.checkPromptLength(prompt.length)
    return { prompt, parent: null, follows: prev?.id ?? null }
  }

  private sampling(
    req: {
      temperature?: number
      top_p?: number
      top_k?: number
      max_tokens?: number | null
      stop?: string | string[] | null
      seed?: number
    },
    promptLen: number,
    maxCompletion?: number | null,
  ): Sampling {
    const room = this.config.context_length - promptLen
    const asked = maxCompletion ?? req.max_tokens ?? this.config.max_new_tokens
    return {
      maxNewTokens: Math.max(1, Math.min(asked, room)),
      temperature: req.temperature ?? 1,
      topP: req.top_p ?? 1,
      topK: req.top_k,
      stopTokenIds: [...this.tokenizer.eosTokenIds],
      stop: req.stop == null ? undefined : Array.isArray(req.stop) ? req.stop : [req.stop],
      seed: req.seed,
    }
  }

  private async generate(
    s: Session,
    rid: string,
    prompt: Int32Array,
    sampling: Sampling,
    o: { signal?: AbortSignal; onTokens?: (ids: Int32Array, lps: Float32Array) => void },
  ) {
    this.assertOpen()
    if (this.inflight >= this.config.max_inflight) {
      throw fail('PRX_ERR_FULL', `${this.inflight} completions in flight (proxy.max_inflight)`)
    }
    this.inflight++
    const p = this.pool.generate(s.id, prompt, sampling, { signal: o.signal, rid, onTokens: o.onTokens })
    s.pending.add(p)
    try {
      return await p
    } finally {
      s.pending.delete(p)
      this.inflight--
    }
  }

  private record(
    s: Session,
    r: {
      id: string
      parent: CompletionRecord | null
      follows: string | null
      prompt: Int32Array
      gen: { outputIds: Int32Array; logprobs: Float32Array; versions: Int32Array; finishReason: FinishReason }
      chat?: CompletionRecord['chat']
    },
  ): void {
    this.counters.completions++
    s.add({
      id: r.id,
      index: s.completions.length,
      parent: r.parent,
      follows: r.follows,
      promptIds: r.prompt,
      outputIds: r.gen.outputIds,
      logprobs: r.gen.logprobs,
      versions: r.gen.versions,
      finishReason: r.gen.finishReason,
      reward: null,
      created: this.now(),
      chat: r.chat,
    })
  }
}

/** An HTTP engine backend from its config (embedded engines need the bus: see main.ts). */
export function makeEngine(e: EngineConfig, cfg: ProxyConfig): Engine {
  const timeoutMs = e.timeout_ms ?? cfg.request_timeout_ms
  switch (e.kind) {
    case 'sglang':
      return new SglangEngine({ url: e.url!, timeoutMs })
    case 'vllm':
      return new VllmEngine({ url: e.url!, timeoutMs, model: cfg.model_name, updatePath: e.update_path })
    case 'embedded':
      // TODO(issue 6): the embedded engine actor; wired by actor.ts (see EmbeddedEngine), not from HTTP config.
      throw fail(
        'PRX_ERR_ENGINE_DOWN',
        `embedded engine ${e.actor} needs the bus: start the proxy as an actor`,
      )
  }
}

function flatten(content: ChatRequestMessage['content']): string {
  if (content == null) return ''
  if (typeof content === 'string') return content
  return content.map((p) => (p.type === 'text' ? (p.text ?? '') : '')).join('')
}

function toChatMessage(m: ChatRequestMessage): ChatMessage {
  const out: ChatMessage = { role: m.role === 'developer' ? 'system' : m.role, content: flatten(m.content) }
  if (m.name !== undefined) out.name = m.name
  if (m.tool_call_id !== undefined) out.tool_call_id = m.tool_call_id
  if (m.tool_calls?.length) {
    out.tool_calls = m.tool_calls.map((t) => ({
      id: t.id,
      type: 'function',
      function: { name: t.function.name, arguments: t.function.arguments },
    }))
  }
  if (m.reasoning_content) out.reasoning_content = m.reasoning_content
  return out
}

/** What identifies a message for matching turns (ids and reasoning the client may drop are left out). */
function messageKey(m: Pick<ChatMessage, 'role' | 'content' | 'tool_calls'> & Partial<ChatMessage>): string {
  return JSON.stringify([
    m.role,
    m.content,
    m.name ?? null,
    m.tool_call_id ?? null,
    m.tool_calls?.length ? m.tool_calls.map((t) => [t.function.name, t.function.arguments]) : null,
  ])
}

function stripEos(ids: ArrayLike<number>, tok: ModelTokenizer): ArrayLike<number> {
  let n = ids.length
  while (n > 0 && tok.isEos(ids[n - 1]!)) n--
  return n === ids.length ? ids : Array.prototype.slice.call(ids, 0, n)
}
