/**
 * Token-in-token-out prompt building.
 *
 * A conversation's next prompt is the previous prompt, plus the model's exact output ids, plus the
 * tokens of the newly added messages rendered by the chat template ("the delta"). The history is never
 * re-rendered and re-tokenized: that costs O(N²) over an episode (AReaL #1658) and, worse, re-tokenizing
 * the model's own text can give different ids than it sampled, which corrupts PPO's ratios.
 *
 * How the delta is rendered, for any template, with a small fixed probe conversation: h1 is what the
 * token sequence holds after a turn — the template's generation prompt for `[user]` followed by the
 * model's raw output (reasoning block as the model writes it, then content) and eos; h2 is the template's
 * render of `[user, assistant, ...newMessages]` with the generation prompt. If h2 starts with h1, the
 * template renders that earlier turn exactly as the model wrote it, and `h2.slice(h1.length)` is the text
 * of the new messages. If not, the template rewrites history when these messages follow (Qwen3 drops
 * `<think>` of turns before the last user query, and empty think blocks): the caller then starts a new
 * sample from a full render instead of extending a corrupted one. The probe mirrors whether the real turn
 * had no think block, an empty one, or one with text, because templates treat those differently.
 *
 *   prompt[t+1] = prompt[t] ++ output[t] ++ encode([eos if output lacks it] + delta)
 */
import type { ChatMessage, ChatTemplate, ChatTool } from './chat-template.ts'
import { ContentSlots, contentRules } from './content-slots.ts'
import type { ModelTokenizer } from './tokenizer.ts'

export interface TemplateContext {
  tools?: ChatTool[]
  kwargs?: Record<string, unknown>
  /** `JSON.stringify([tools ?? null, kwargs ?? null])` when the caller has it already (else computed) */
  key?: string
}

/** The key of everything a context changes in a render. */
export function contextKey(ctx: TemplateContext): string {
  return ctx.key ?? JSON.stringify([ctx.tools ?? null, ctx.kwargs ?? null])
}

export type DeltaResult =
  | { kind: 'extend'; ids: number[]; text: string }
  | { kind: 'rewrite'; reason: string }

/** What the previous turn's output held before its content: no think block, an empty one, or reasoning. */
export type ReasoningShape = 'none' | 'empty' | 'text'

const PROBE_USER: ChatMessage = { role: 'user', content: 'probe-user-question' }
const PROBE_CONTENT = 'probe-assistant-answer'
const PROBE_REASONING = 'probe-assistant-reasoning'
const PROBE_CACHE_MAX = 64
/** contexts given short ids (beyond: the ids start over, with new ids; entries under old ones age out) */
const CONTEXT_IDS_MAX = 1024
/** full renders shorter than this are tokenized every time (cheap; not worth a cache entry) */
const FULL_CACHE_MIN_CHARS = 2048

export class PromptBuilder {
  /** h1 per (reasoning shape, tools, kwargs) */
  private readonly probes = new Map<string, string>()
  /**
   * context key → a short id for the cache keys above: a tools list is kilobytes of JSON, and a key string
   * built from it each turn would be hashed again on every lookup. Ids are never reused.
   */
  private readonly contextIds = new Map<string, string>()
  private nextContextId = 0
  /** ids of long full renders, by text, least recently used first */
  private readonly fullIds = new Map<string, Int32Array>()
  private fullIdsTokens = 0
  /** the fast path for deltas of user/tool messages (content-slots.ts); null: the template is not eligible */
  private readonly slots: ContentSlots | null

  /**
   * `fullCacheTokens`: how many tokens of tokenized full renders to keep (0 = none). The sessions of a task
   * group open with the same system prompt, tools and first message: their first prompts are tokenized once.
   * `contentSlots`: render user/tool deltas by filling learned layouts where the template allows (false: the
   * template renders every delta).
   */
  constructor(
    readonly tokenizer: ModelTokenizer,
    readonly template: ChatTemplate,
    private readonly fullCacheTokens = 1 << 20,
    contentSlots = true,
  ) {
    const rules = contentSlots ? contentRules(template.program) : null
    this.slots = rules ? new ContentSlots(rules) : null
  }

  /** How many deltas were rendered by filling a learned layout instead of running the template. */
  get slotDeltas(): number {
    return this.slots?.filled ?? 0
  }

  /** Full render of `messages` with the generation prompt: the text (for checks and first turns). */
  renderFull(messages: readonly ChatMessage[], ctx: TemplateContext = {}): string {
    return this.template.render(messages, { tools: ctx.tools, kwargs: ctx.kwargs, addGenerationPrompt: true })
  }

  /** Full render and tokenization (first turn of a sample, or after a history rewrite). */
  full(messages: readonly ChatMessage[], ctx: TemplateContext = {}): number[] {
    return this.tokenizer.encode(this.renderFull(messages, ctx))
  }

  /**
   * `encode(text)` of a full render, remembered for long texts (up to `fullCacheTokens` tokens in all, least
   * recently used dropped first). The array is shared between callers: read it, never write it.
   */
  encodeFull(text: string): Int32Array {
    const hit = this.fullIds.get(text)
    if (hit) {
      this.fullIds.delete(text)
      this.fullIds.set(text, hit)
      return hit
    }
    const ids = Int32Array.from(this.tokenizer.encode(text))
    if (text.length >= FULL_CACHE_MIN_CHARS && ids.length <= this.fullCacheTokens) {
      this.fullIds.set(text, ids)
      this.fullIdsTokens += ids.length
      for (const [k, v] of this.fullIds) {
        if (this.fullIdsTokens <= this.fullCacheTokens) break
        this.fullIds.delete(k)
        this.fullIdsTokens -= v.length
      }
    }
    return ids
  }

  /**
   * The tokens that follow the previous turn's output when `newMessages` are appended after it.
   * `prevReasoning`: the shape of the previous output's think block. `outputEndsWithEos`: the previous
   * output ended with an eos id (otherwise the eos the template writes is added as a prompt token).
   */
  delta(
    newMessages: readonly ChatMessage[],
    ctx: TemplateContext,
    opts: { prevReasoning: ReasoningShape; outputEndsWithEos: boolean },
  ): DeltaResult {
    const key = `${opts.prevReasoning}|${this.contextId(contextKey(ctx))}`
    const h1 = this.probe(ctx, opts.prevReasoning, key)
    const renderDelta = (messages: readonly ChatMessage[]): string | null => {
      const h2 = this.template.render([PROBE_USER, probeAssistant(opts.prevReasoning), ...messages], {
        tools: ctx.tools,
        kwargs: ctx.kwargs,
        addGenerationPrompt: true,
      })
      return h2.startsWith(h1) ? h2.slice(h1.length) : null
    }
    const delta = this.slots?.render(newMessages, key, renderDelta) ?? renderDelta(newMessages)
    if (delta === null) return { kind: 'rewrite', reason: 'template re-renders the earlier assistant turn' }
    const text = (opts.outputEndsWithEos ? '' : this.tokenizer.eosToken) + delta
    return { kind: 'extend', ids: this.tokenizer.encode(text), text }
  }

  private contextId(key: string): string {
    let id = this.contextIds.get(key)
    if (id === undefined) {
      if (this.contextIds.size >= CONTEXT_IDS_MAX) this.contextIds.clear()
      id = `c${this.nextContextId++}`
      this.contextIds.set(key, id)
    }
    return id
  }

  private probe(ctx: TemplateContext, shape: ReasoningShape, key: string): string {
    const hit = this.probes.get(key)
    if (hit !== undefined) return hit
    const gen = this.template.render([PROBE_USER], {
      tools: ctx.tools,
      kwargs: ctx.kwargs,
      addGenerationPrompt: true,
    })
    const think =
      shape === 'none' ? '' : `<think>\n${shape === 'text' ? `${PROBE_REASONING}\n` : '\n'}</think>\n\n`
    // a template that opens the think block in its generation prompt: the model writes the rest of it
    const raw = think && gen.endsWith('<think>\n') ? think.slice('<think>\n'.length) : think
    const h1 = gen + raw + PROBE_CONTENT + this.tokenizer.eosToken
    if (this.probes.size >= PROBE_CACHE_MAX) this.probes.delete(this.probes.keys().next().value!)
    this.probes.set(key, h1)
    return h1
  }
}

function probeAssistant(shape: ReasoningShape): ChatMessage {
  if (shape === 'none') return { role: 'assistant', content: PROBE_CONTENT }
  return {
    role: 'assistant',
    content: PROBE_CONTENT,
    reasoning_content: shape === 'text' ? PROBE_REASONING : '',
  }
}
