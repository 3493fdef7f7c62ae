/**
 * A model's chat template (Jinja, from tokenizer_config.json) compiled once with @huggingface/jinja and
 * rendered with the variables Hugging Face's `apply_chat_template` provides: `messages`, `tools`,
 * `add_generation_prompt` and the special tokens, plus any `chat_template_kwargs` (e.g. Qwen3's
 * `enable_thinking`). `raise_exception` and `strftime_now` are @huggingface/jinja built-ins; whatever a
 * template raises becomes PRX_ERR_TEMPLATE.
 */
import { Template } from '@huggingface/jinja'
import { fail } from '../../runtime/errors.ts'
import type { ModelTokenizer } from './tokenizer.ts'

/** One function call inside an assistant message (OpenAI shape; arguments is a JSON string). */
export interface ChatToolCall {
  id?: string
  type?: 'function'
  function: { name: string; arguments: string }
}

/** A chat message as templates see it (OpenAI request shape, content flattened to a string). */
export interface ChatMessage {
  role: string
  content: string
  name?: string
  tool_calls?: ChatToolCall[]
  tool_call_id?: string
  reasoning_content?: string
}

/** A tool definition (OpenAI shape: `{type: 'function', function: {name, description, parameters}}`). */
export type ChatTool = Record<string, unknown>

export interface RenderOptions {
  tools?: ChatTool[]
  addGenerationPrompt?: boolean
  /** extra template variables (`chat_template_kwargs`), e.g. `{ enable_thinking: false }` */
  kwargs?: Record<string, unknown>
}

export class ChatTemplate {
  private readonly template: Template
  private readonly base: Record<string, unknown>

  constructor(source: string, specials: { bos?: string; eos?: string; pad?: string } = {}) {
    try {
      this.template = new Template(source)
    } catch (err) {
      throw fail(
        'PRX_ERR_TOKENIZER',
        `chat_template does not parse: ${(err as Error).message}`,
        undefined,
        err,
      )
    }
    this.base = {
      bos_token: specials.bos ?? '',
      eos_token: specials.eos ?? '',
      pad_token: specials.pad ?? '',
    }
  }

  static forTokenizer(tok: ModelTokenizer): ChatTemplate {
    if (!tok.chatTemplate) throw fail('PRX_ERR_TOKENIZER', 'tokenizer_config.json has no chat_template')
    return new ChatTemplate(tok.chatTemplate, { bos: tok.bosToken, eos: tok.eosToken, pad: tok.padToken })
  }

  /** The parsed template (@huggingface/jinja's syntax tree), for analyses such as contentRules. */
  get program(): unknown {
    return this.template.parsed
  }

  render(messages: readonly ChatMessage[], opts: RenderOptions = {}): string {
    const vars: Record<string, unknown> = {
      ...this.base,
      ...opts.kwargs,
      messages,
      add_generation_prompt: opts.addGenerationPrompt ?? false,
    }
    if (opts.tools && opts.tools.length > 0) vars.tools = opts.tools
    try {
      return this.template.render(vars)
    } catch (err) {
      throw fail('PRX_ERR_TEMPLATE', (err as Error).message, undefined, err)
    }
  }
}
