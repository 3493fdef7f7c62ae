/**
 * Token-in-token-out prompt building.
 *
 * A conversation's next prompt is the previous prompt, plus the model's exact output ids, plus the
 * tokens of the newly added messages rendered by the chat template ("the delta"). The history is never
 * re-rendered and re-tokenized: that costs O(N²) over an episode (AReaL #1658) and, worse, re-tokenizing
 * the model's own text can give different ids than it sampled, which corrupts PPO's ratios.
 *
 * How the delta is rendered, for any template: render a small fixed probe conversation
 * `[user, assistant]` once (h1), then `[user, assistant, ...newMessages]` with the generation prompt (h2).
 * If h2 starts with h1, the template renders the new messages without touching the assistant turn before
 * them, and `h2.slice(h1.length)` is exactly their text. The text between the assistant's eos and the
 * next message (Qwen: `\n`) is read off h1 once. If h2 does not start with h1, the template rewrites
 * history when these messages follow (Qwen3 drops `<think>` of turns before the last user query): the
 * caller then starts a new sample from a full render instead of extending a corrupted one.
 *
 *   prompt[t+1] = prompt[t] ++ output[t] ++ encode([eos if output lacks it] + suffix + delta)
 */
import type { ChatMessage, ChatTemplate, ChatTool } from './chat-template.ts'
import type { ModelTokenizer } from './tokenizer.ts'

export interface TemplateContext {
  tools?: ChatTool[]
  kwargs?: Record<string, unknown>
}

export type DeltaResult =
  | { kind: 'extend'; ids: number[]; text: string }
  | { kind: 'rewrite'; reason: string }

interface Probe {
  /** render of the probe conversation ending with the probe assistant turn */
  h1: string
  /** text the template writes after the assistant's eos token; null: the template is not incremental */
  suffix: string | null
}

const PROBE_USER: ChatMessage = { role: 'user', content: 'probe-user-question' }
const PROBE_CONTENT = 'probe-assistant-answer'
const PROBE_REASONING = 'probe-assistant-reasoning'
const PROBE_CACHE_MAX = 64

export class PromptBuilder {
  private readonly probes = new Map<string, Probe>()

  constructor(
    readonly tokenizer: ModelTokenizer,
    readonly template: ChatTemplate,
  ) {}

  /** Full render of `messages` with the generation prompt: the text (for checks and first turns). */
  renderFull(messages: readonly ChatMessage[], ctx: TemplateContext = {}): string {
    return this.template.render(messages, { tools: ctx.tools, kwargs: ctx.kwargs, addGenerationPrompt: true })
  }

  /** Full render and tokenization (first turn of a sample, or after a history rewrite). */
  full(messages: readonly ChatMessage[], ctx: TemplateContext = {}): number[] {
    return this.tokenizer.encode(this.renderFull(messages, ctx))
  }

  /**
   * The tokens that follow the previous turn's output when `newMessages` are appended after it.
   * `prevHadReasoning`: the previous assistant turn carried reasoning (a `<think>` block) — templates
   * treat such turns differently, so the probe mirrors it. `outputEndsWithEos`: the previous output
   * ended with an eos id (otherwise the eos the template would have written is added as a prompt token).
   */
  delta(
    newMessages: readonly ChatMessage[],
    ctx: TemplateContext,
    opts: { prevHadReasoning: boolean; outputEndsWithEos: boolean },
  ): DeltaResult {
    const probe = this.probe(ctx, opts.prevHadReasoning)
    if (probe.suffix === null) {
      return { kind: 'rewrite', reason: 'template does not end assistant turns with the eos token' }
    }
    const h2 = this.template.render([PROBE_USER, probeAssistant(opts.prevHadReasoning), ...newMessages], {
      tools: ctx.tools,
      kwargs: ctx.kwargs,
      addGenerationPrompt: true,
    })
    if (!h2.startsWith(probe.h1)) {
      return { kind: 'rewrite', reason: 'template re-renders the earlier assistant turn' }
    }
    const text =
      (opts.outputEndsWithEos ? '' : this.tokenizer.eosToken) + probe.suffix + h2.slice(probe.h1.length)
    return { kind: 'extend', ids: this.tokenizer.encode(text), text }
  }

  private probe(ctx: TemplateContext, reasoning: boolean): Probe {
    const key = `${reasoning ? 1 : 0}|${ctx.tools ? JSON.stringify(ctx.tools) : ''}|${ctx.kwargs ? JSON.stringify(ctx.kwargs) : ''}`
    const hit = this.probes.get(key)
    if (hit) return hit
    const h1 = this.template.render([PROBE_USER, probeAssistant(reasoning)], {
      tools: ctx.tools,
      kwargs: ctx.kwargs,
      addGenerationPrompt: false,
    })
    const at = h1.lastIndexOf(PROBE_CONTENT)
    const after = at < 0 ? '' : h1.slice(at + PROBE_CONTENT.length)
    const suffix =
      at >= 0 && after.startsWith(this.tokenizer.eosToken)
        ? after.slice(this.tokenizer.eosToken.length)
        : null
    const p: Probe = { h1, suffix }
    if (this.probes.size >= PROBE_CACHE_MAX) this.probes.delete(this.probes.keys().next().value!)
    this.probes.set(key, p)
    return p
  }
}

function probeAssistant(reasoning: boolean): ChatMessage {
  return reasoning
    ? { role: 'assistant', content: PROBE_CONTENT, reasoning_content: PROBE_REASONING }
    : { role: 'assistant', content: PROBE_CONTENT }
}
