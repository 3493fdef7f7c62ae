/**
 * Sessions and what they record. A session is one episode of one agent: a bearer key, and every
 * completion made under it (prompt ids, the engine's exact output ids, log-probs, per-token versions,
 * finish reason, reward) plus how completions chain: `parent` is the completion whose prompt + output
 * this completion's prompt extends exactly (token for token), or null when it starts a new sample.
 */
import { randomBytes } from 'node:crypto'
import type { ReasoningShape } from '../tokenizer/incremental.ts'
import type { FinishReason } from './engines/types.ts'

export interface CompletionRecord {
  id: string
  /** position in the session, in creation order */
  index: number
  /** the completion this prompt extends token for token; null = a new sample starts here */
  parent: CompletionRecord | null
  /** the completion this conversation continued, even where the template rewrote history */
  follows: string | null
  promptIds: Int32Array
  outputIds: Int32Array
  logprobs: Float32Array
  versions: Int32Array
  finishReason: FinishReason
  reward: number | null
  created: number
  /** chat only: normalized request messages and reply, for matching the next turn */
  chat?: {
    msgKeys: string[]
    replyKey: string
    ctxKey: string
    reasoning: ReasoningShape
    endsWithEos: boolean
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
  findParent(msgKeys: readonly string[], ctxKey: string): CompletionRecord | undefined {
    outer: for (let c = this.completions.length - 1; c >= 0; c--) {
      const rec = this.completions[c]!
      const chat = rec.chat
      if (!chat || chat.ctxKey !== ctxKey) continue
      const n = chat.msgKeys.length
      if (msgKeys.length <= n || msgKeys[n] !== chat.replyKey) continue
      for (let i = n - 1; i >= 0; i--) if (msgKeys[i] !== chat.msgKeys[i]) continue outer
      return rec
    }
    return undefined
  }

  tokens(): number {
    let n = 0
    for (const c of this.completions) n += c.promptIds.length + c.outputIds.length
    return n
  }
}
