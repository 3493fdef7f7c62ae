/**
 * Turning the model's raw output text into an OpenAI assistant message: reasoning (`<think>…</think>`,
 * Qwen3 / DeepSeek-R1 style) and tool calls (Qwen / Hermes style `<tool_call>{"name", "arguments"}</tool_call>`,
 * any number per turn). Malformed calls (bad JSON, no name, unclosed tag) stay in the content as text and
 * are counted, so an agent sees what the model wrote and the metrics show how often it fails the format.
 *
 * The token ids are never derived from this text: parsing only shapes the reply the agent sees.
 */

export interface ParsedToolCall {
  id: string
  name: string
  /** the arguments object as a JSON string (OpenAI's shape) */
  arguments: string
}

export interface ParsedOutput {
  content: string
  /** text inside the think block; null when the output had none */
  reasoning: string | null
  toolCalls: ParsedToolCall[]
  /** tool-call blocks that could not be parsed (left in `content`) */
  malformed: number
}

export interface ParseOptions {
  /** parse `<tool_call>` blocks (false when the request had no tools or tool_choice is "none") */
  tools: boolean
  /** split off a `<think>` block */
  reasoning: boolean
  /** the generation prompt already opened the think block (output starts inside it) */
  reasoningOpen?: boolean
  /** prefix of generated tool-call ids */
  idPrefix: string
  /** the request's stop strings: the content the agent sees ends before the first one */
  stop?: readonly string[]
}

const THINK_OPEN = '<think>'
const THINK_CLOSE = '</think>'
const CALL_OPEN = '<tool_call>'
const CALL_CLOSE = '</tool_call>'

/**
 * Split reasoning off. A think block is recognised when the text starts with `<think>`, or from the start
 * when the template's generation prompt already opened it (`open`). `closed` is false while the block
 * has not ended (then everything is reasoning so far).
 */
export function splitReasoning(
  text: string,
  open = false,
): { reasoning: string | null; rest: string; closed: boolean } {
  let start = 0
  if (!open) {
    const lead = text.length - text.trimStart().length
    if (!text.startsWith(THINK_OPEN, lead)) return { reasoning: null, rest: text, closed: true }
    start = lead + THINK_OPEN.length
  }
  const close = text.indexOf(THINK_CLOSE, start)
  if (close < 0) return { reasoning: text.slice(start).replace(/^\n+/, ''), rest: '', closed: false }
  return {
    reasoning: text.slice(start, close).replace(/^\n+|\n+$/g, ''),
    rest: text.slice(close + THINK_CLOSE.length).replace(/^\n+/, ''),
    closed: true,
  }
}

/** Parse one `<tool_call>` body; undefined when it is not `{"name": string, "arguments": object|string}`. */
function parseCall(body: string): { name: string; arguments: string } | undefined {
  let obj: unknown
  try {
    obj = JSON.parse(body.trim())
  } catch {
    return undefined
  }
  if (!obj || typeof obj !== 'object' || Array.isArray(obj)) return undefined
  const { name, arguments: args, parameters } = obj as Record<string, unknown>
  if (typeof name !== 'string' || name === '') return undefined
  const a = args ?? parameters ?? {}
  if (typeof a === 'string') {
    try {
      JSON.parse(a)
    } catch {
      return undefined
    }
    return { name, arguments: a }
  }
  if (typeof a !== 'object' || a === null || Array.isArray(a)) return undefined
  return { name, arguments: JSON.stringify(a) }
}

/** Find tool-call blocks; what is not a well-formed call stays content. */
export function splitToolCalls(
  text: string,
  idPrefix: string,
): { content: string; toolCalls: ParsedToolCall[]; malformed: number } {
  const toolCalls: ParsedToolCall[] = []
  let malformed = 0
  let content = ''
  let pos = 0
  for (;;) {
    const open = text.indexOf(CALL_OPEN, pos)
    if (open < 0) break
    const close = text.indexOf(CALL_CLOSE, open + CALL_OPEN.length)
    if (close < 0) {
      malformed++
      break
    }
    const call = parseCall(text.slice(open + CALL_OPEN.length, close))
    if (call) {
      content += text.slice(pos, open)
      toolCalls.push({ id: `${idPrefix}${toolCalls.length}`, ...call })
    } else {
      malformed++
      content += text.slice(pos, close + CALL_CLOSE.length)
    }
    pos = close + CALL_CLOSE.length
  }
  content += text.slice(pos)
  return { content: content.trim(), toolCalls, malformed }
}

export function parseOutput(text: string, opts: ParseOptions): ParsedOutput {
  let reasoning: string | null = null
  let rest = text
  if (opts.reasoning) ({ reasoning, rest } = splitReasoning(text, opts.reasoningOpen))
  if (!opts.tools)
    return { content: cutAtStop(rest, opts.stop, true).trim(), reasoning, toolCalls: [], malformed: 0 }
  const { content, toolCalls, malformed } = splitToolCalls(rest, opts.idPrefix)
  return { content: cutAtStop(content, opts.stop, true).trim(), reasoning, toolCalls, malformed }
}

/** Length of the longest suffix of `s` that is a proper prefix of `tag` (a tag may still be arriving). */
function partialTagLength(s: string, tag: string): number {
  for (let n = Math.min(tag.length - 1, s.length); n > 0; n--) if (s.endsWith(tag.slice(0, n))) return n
  return 0
}

/**
 * Incremental view of the same parse for SSE streaming. Feed it the whole decoded text so far; it returns
 * the reasoning and content text that is safe to send now (nothing that could still turn out to be part
 * of a tag or a tool call, no trailing whitespace that the final parse would trim, no half-decoded
 * character). `finish` returns the final parse and what remains to be sent so that the streamed pieces
 * add up to exactly the non-streaming reply.
 */
export class StreamingParser {
  private sentReasoning = ''
  private sentContent = ''

  constructor(private readonly opts: ParseOptions) {}

  update(text: string): { reasoning: string; content: string } {
    text = text.replace(/\uFFFD+$/, '')
    let reasoningNow = ''
    let body = text
    if (this.opts.reasoning) {
      const head = text.trimStart()
      // `<thi…` may still become a think block: hold everything until it is decided.
      if (
        !this.opts.reasoningOpen &&
        head !== '' &&
        head.length < THINK_OPEN.length &&
        THINK_OPEN.startsWith(head)
      ) {
        return { reasoning: '', content: '' }
      }
      const split = splitReasoning(text, this.opts.reasoningOpen)
      if (!split.closed) {
        const r = split.reasoning ?? ''
        reasoningNow = r.slice(0, r.length - partialTagLength(r, THINK_CLOSE)).replace(/\n+$/, '')
        body = ''
      } else {
        reasoningNow = split.reasoning ?? ''
        body = split.rest
      }
    }
    if (this.opts.tools) {
      const open = body.indexOf(CALL_OPEN)
      body = open >= 0 ? body.slice(0, open) : body.slice(0, body.length - partialTagLength(body, CALL_OPEN))
    }
    const contentNow = cutAtStop(body.trimStart(), this.opts.stop, false).replace(/\s+$/, '')
    return { reasoning: this.take('reasoning', reasoningNow), content: this.take('content', contentNow) }
  }

  finish(text: string): ParsedOutput & { reasoningDelta: string; contentDelta: string } {
    const out = parseOutput(text, this.opts)
    return {
      ...out,
      reasoningDelta: this.take('reasoning', out.reasoning ?? ''),
      contentDelta: this.take('content', out.content),
    }
  }

  private take(kind: 'reasoning' | 'content', now: string): string {
    const sent = kind === 'reasoning' ? this.sentReasoning : this.sentContent
    if (now.length <= sent.length || !now.startsWith(sent)) return ''
    const delta = now.slice(sent.length)
    if (kind === 'reasoning') this.sentReasoning = now
    else this.sentContent = now
    return delta
  }
}

/**
 * OpenAI leaves a stop sequence and what follows out of the reply. Applied to the content only, after tool
 * calls are parsed (a workload may stop at `</tool_call>`: the call stays whole). While streaming
 * (`final` false) a tail that may still grow into a stop string is held back too. The recorded tokens are
 * never cut: the trainer sees what the model sampled.
 */
export function cutAtStop(text: string, stops: readonly string[] | undefined, final: boolean): string {
  if (!stops?.length) return text
  let end = text.length
  for (const s of stops) {
    if (s === '') continue
    const at = text.indexOf(s)
    if (at >= 0 && at < end) end = at
  }
  if (!final && end === text.length) {
    for (const s of stops) end = Math.min(end, text.length - partialTagLength(text, s))
  }
  return text.slice(0, end)
}
