/**
 * Sessions and what they record. A session is one episode of one agent: a bearer key, and every
 * completion made under it (prompt ids, the engine's exact output ids, log-probs, per-token versions,
 * finish reason, reward) plus how completions chain: `parent` is the completion whose prompt + output
 * this completion's prompt extends exactly (token for token), or null when it starts a new sample.
 */
import { randomBytes } from 'node:crypto'
import type { ReasoningShape } from '../tokenizer/incremental.ts'
import { type MessageKey, sameKey } from './chat-messages.ts'
import type { FinishReason } from './engines/types.ts'
import { idsToJson, writeIds } from './ids-json.ts'

/**
 * The tokens of one exact-prefix chain of completions in one growing buffer: each completion's prompt is
 * the previous one's prompt + output + delta, so a chain of N turns is stored once (O(N)) rather than as N
 * ever-longer prompts (O(N²)). Records hold (chain, lengths) and read views.
 */
export class TokenChain {
  buf: Int32Array<ArrayBuffer>
  private n = 0
  /** a completion is generating at the tip (another one extending the same tip must branch off) */
  busy = false
  /**
   * The first `jsonLen` ids as JSON array elements (`1,2,3`, ASCII) in `jsonBuf[0..jsonBytes)`, for HTTP
   * engines: each turn serialises only the ids added since the last one. Append-only: bytes once written
   * are never changed (a request may still be sending them); truncate() starts a new buffer.
   */
  private jsonBuf: Buffer = Buffer.alloc(0)
  private jsonLen = 0
  private jsonBytes = 0

  constructor(capacity = 1024) {
    this.buf = new Int32Array(capacity)
  }

  static of(...parts: ArrayLike<number>[]): TokenChain {
    const n = parts.reduce((a, p) => a + p.length, 0)
    const c = new TokenChain(Math.max(1024, n * 2))
    for (const p of parts) c.append(p)
    return c
  }

  /** number of tokens in the chain */
  get len(): number {
    return this.n
  }

  append(ids: ArrayLike<number>): void {
    if (this.n + ids.length > this.buf.length) {
      const next = new Int32Array(Math.max(this.buf.length * 2, this.n + ids.length))
      next.set(this.buf.subarray(0, this.n))
      this.buf = next
    }
    this.buf.set(ids, this.n)
    this.n += ids.length
  }

  /** Drop the tokens from `len` on (a generation that failed is taken back off the chain). */
  truncate(len: number): void {
    if (len < 0 || len > this.n) throw new RangeError(`truncate(${len}) on a chain of ${this.n}`)
    this.n = len
    if (this.jsonLen > len) {
      this.jsonBuf = Buffer.alloc(0)
      this.jsonLen = 0
      this.jsonBytes = 0
    }
  }

  view(from: number, to: number): Int32Array<ArrayBuffer> {
    return this.buf.subarray(from, to)
  }

  /**
   * The first `len` ids as JSON array elements (`1,2,3`), the same bytes as `view(0, len).join(',')`:
   * serialised once and extended, so a 50-turn conversation serialises each token once, not 50 times.
   * The bytes stay valid (unchanged) for as long as the caller holds them.
   */
  json(len: number): Buffer {
    if (len < 0 || len > this.n) throw new RangeError(`json(${len}) on a chain of ${this.n}`)
    if (len < this.jsonLen) {
      // an earlier prefix (not the hot path): serialise it on its own
      return idsToJson(this.buf.subarray(0, len))
    }
    if (len > this.jsonLen) {
      const need = this.jsonBytes + (len - this.jsonLen) * 12
      if (need > this.jsonBuf.length) {
        const next = Buffer.allocUnsafe(Math.max(need, this.jsonBuf.length * 2, 4096))
        this.jsonBuf.copy(next, 0, 0, this.jsonBytes)
        this.jsonBuf = next
      }
      this.jsonBytes = writeIds(this.jsonBuf, this.jsonBytes, this.buf, this.jsonLen, len)
      this.jsonLen = len
    }
    return this.jsonBuf.subarray(0, this.jsonBytes)
  }
}

export interface CompletionInit {
  id: string
  index: number
  parent: CompletionRecord | null
  follows: string | null
  chain: TokenChain
  promptLen: number
  outputLen: number
  logprobs: Float32Array
  versions: Int32Array
  finishReason: FinishReason
  created: number
  chat?: CompletionRecord['chat']
}

export class CompletionRecord {
  readonly id: string
  /** position in the session, in creation order */
  readonly index: number
  /** the completion this prompt extends token for token; null = a new sample starts here */
  readonly parent: CompletionRecord | null
  /** the completion this conversation continued, even where the template rewrote history */
  readonly follows: string | null
  readonly logprobs: Float32Array
  readonly versions: Int32Array
  readonly finishReason: FinishReason
  readonly created: number
  reward: number | null = null
  /** chat only: normalized request messages and reply, for matching the next turn */
  readonly chat?: {
    msgKeys: MessageKey[]
    replyKey: MessageKey
    ctxKey: string
    reasoning: ReasoningShape
    endsWithEos: boolean
  }
  readonly chain: TokenChain
  readonly promptLen: number
  readonly outputLen: number

  constructor(r: CompletionInit) {
    this.id = r.id
    this.index = r.index
    this.parent = r.parent
    this.follows = r.follows
    this.chain = r.chain
    this.promptLen = r.promptLen
    this.outputLen = r.outputLen
    this.logprobs = r.logprobs
    this.versions = r.versions
    this.finishReason = r.finishReason
    this.created = r.created
    this.chat = r.chat
  }

  get promptIds(): Int32Array {
    return this.chain.view(0, this.promptLen)
  }

  get outputIds(): Int32Array {
    return this.chain.view(this.promptLen, this.promptLen + this.outputLen)
  }
}

export class Session {
  readonly apiKey: string
  state: 'active' | 'ended' = 'active'
  readonly completions: CompletionRecord[] = []
  readonly byId = new Map<string, CompletionRecord>()
  /** completions in flight: export waits for them */
  readonly pending = new Set<Promise<unknown>>()
  readonly opened: number
  /** last open / request / reward (ms since epoch): idle sessions are swept after proxy.session_idle_ms */
  lastActive: number
  /** the tools and template arguments of the last chat request, and their key (reused while unchanged) */
  lastContext: { tools: unknown; kwargs: unknown; key: string } | undefined

  constructor(
    readonly id: string,
    readonly meta: Record<string, unknown> = {},
    now = Date.now(),
  ) {
    this.opened = now
    this.lastActive = now
    this.apiKey = `sk-sess-${randomBytes(24).toString('base64url')}`
  }

  add(rec: CompletionRecord): void {
    this.completions.push(rec)
    this.byId.set(rec.id, rec)
  }

  /**
   * The latest chat completion that this request continues: its messages followed by its reply are a
   * prefix of `msgKeys`, under the same tools and template arguments.
   */
  findParent(msgKeys: readonly MessageKey[], ctxKey: string): CompletionRecord | undefined {
    outer: for (let c = this.completions.length - 1; c >= 0; c--) {
      const rec = this.completions[c]!
      const chat = rec.chat
      if (!chat || chat.ctxKey !== ctxKey) continue
      const n = chat.msgKeys.length
      if (msgKeys.length <= n || !sameKey(msgKeys[n]!, chat.replyKey)) continue
      for (let i = n - 1; i >= 0; i--) if (!sameKey(msgKeys[i]!, chat.msgKeys[i]!)) continue outer
      return rec
    }
    return undefined
  }

  tokens(): number {
    let n = 0
    for (const c of this.completions) n += c.promptLen + c.outputLen
    return n
  }
}
