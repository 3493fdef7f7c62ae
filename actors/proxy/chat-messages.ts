/**
 * OpenAI request messages → template messages, and the keys that decide whether a request continues an
 * earlier completion (its messages and reply are a prefix of the new request's messages).
 */
import type { ChatMessage } from '../tokenizer/chat-template.ts'
import type { ModelTokenizer } from '../tokenizer/tokenizer.ts'
import type { ChatRequestMessage } from './openai.ts'

function flatten(content: ChatRequestMessage['content']): string {
  if (content == null) return ''
  if (typeof content === 'string') return content
  return content.map((p) => (p.type === 'text' ? (p.text ?? '') : '')).join('')
}

/** The message as a chat template sees it (content parts joined; `developer` is a system message). */
export function toChatMessage(m: ChatRequestMessage): ChatMessage {
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

/**
 * What identifies a message for matching turns (tool-call ids and reasoning, which clients may drop, are
 * left out): `head` holds every field but the content, each length-prefixed (so no text can shift from one
 * field into the next), and `content` is the content string itself. Keeping the content apart means a turn
 * neither copies nor re-encodes a long system prompt: two keys compare by `sameKey`, at worst one memcmp
 * of each content (a request's strings come fresh from JSON.parse, so they are never the same objects).
 */
export interface MessageKey {
  head: string
  content: string
}

export function messageKey(
  m: Pick<ChatMessage, 'role' | 'content' | 'tool_calls'> & Partial<ChatMessage>,
): MessageKey {
  const calls = m.tool_calls?.length
    ? JSON.stringify(m.tool_calls.map((t) => [t.function.name, t.function.arguments]))
    : undefined
  return {
    head: `${field(m.role)}${field(m.name)}${field(m.tool_call_id)}${field(calls)}`,
    content: m.content,
  }
}

/** Whether two keys stand for the same message (every compared field equal). */
export function sameKey(a: MessageKey, b: MessageKey): boolean {
  return a === b || (a.content === b.content && a.head === b.head)
}

/**
 * Whether two parsed JSON values would serialise to the same JSON text: equal primitives, arrays element by
 * element, objects with the same keys in the same order (JSON.stringify, and so a template's `tojson`, keeps
 * key order). Lets a session reuse the context key of its previous request without serialising its tools.
 */
export function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false
    for (let i = 0; i < a.length; i++) if (!sameJson(a[i], b[i])) return false
    return true
  }
  if (Array.isArray(b)) return false
  const ka = Object.keys(a)
  const kb = Object.keys(b)
  if (ka.length !== kb.length) return false
  for (let i = 0; i < ka.length; i++) {
    const k = ka[i]!
    if (k !== kb[i] || !sameJson((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]))
      return false
  }
  return true
}

function field(s: string | undefined): string {
  return s === undefined ? '-' : `${s.length}:${s}`
}

/** `ids` without trailing eos ids (for decoding the text the agent sees). */
export function stripEos(ids: ArrayLike<number>, tok: ModelTokenizer): ArrayLike<number> {
  let n = ids.length
  while (n > 0 && tok.isEos(ids[n - 1]!)) n--
  return n === ids.length ? ids : Array.prototype.slice.call(ids, 0, n)
}

/**
 * Text of a growing token sequence without decoding it all again for every new token (streaming): only
 * a few tokens before the new ones are decoded again, so that a character split across byte-level tokens
 * comes out whole; text ending in U+FFFD (an incomplete character) waits for the next tokens. Eos ids are
 * left out of the text.
 */
export class IncrementalDecoder {
  private readonly ids: number[] = []
  private prefix = 0
  private read = 0
  private text = ''

  constructor(private readonly tok: ModelTokenizer) {}

  /** Add tokens; returns the whole text so far. */
  push(ids: ArrayLike<number>): string {
    for (let i = 0; i < ids.length; i++) if (!this.tok.isEos(ids[i]!)) this.ids.push(ids[i]!)
    const before = this.tok.decode(this.ids.slice(this.prefix, this.read))
    const after = this.tok.decode(this.ids.slice(this.prefix))
    if (after.length > before.length && !after.endsWith('\uFFFD')) {
      this.text += after.slice(before.length)
      this.prefix = this.read
      this.read = this.ids.length
    }
    return this.text
  }
}
