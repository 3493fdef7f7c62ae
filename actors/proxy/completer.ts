/**
 * One completion, start to finish: build the prompt (incrementally when the request continues an earlier
 * completion of the session), generate on the engine pool, parse the reply, record the exact tokens.
 * Owned by ProxyService; HTTP and streaming live in routes/.
 */
import { randomBytes } from 'node:crypto'
import { fail } from '../../runtime/errors.ts'
import type { Logger } from '../../runtime/log.ts'
import type { ChatMessage } from '../tokenizer/chat-template.ts'
import { contextKey, type PromptBuilder, type TemplateContext } from '../tokenizer/incremental.ts'
import type { ModelTokenizer } from '../tokenizer/tokenizer.ts'
import {
  IncrementalDecoder,
  type MessageKey,
  messageKey,
  sameJson,
  stripEos,
  toChatMessage,
} from './chat-messages.ts'
import type { ProxyConfig } from './config.ts'
import type { EnginePool } from './engines/pool.ts'
import type { FinishReason, Sampling } from './engines/types.ts'
import type { ChatRequest, CompletionRequest } from './openai.ts'
import { CompletionRecord, type Session, TokenChain } from './session.ts'
import {
  cutAtStop,
  type ParsedOutput,
  type ParsedToolCall,
  parseOutput,
  StreamingParser,
} from './tool-parser.ts'

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

/** A prompt placed in a token chain (see chatPrompt). */
interface Prompt {
  chain: TokenChain
  promptLen: number
  parent: CompletionRecord | null
  follows: string | null
  /** text at the end of the prompt (the rendered delta or full render; '' when not rendered) */
  tail: string
  /** take the prompt back off the chain (the generation failed) */
  undo: () => void
}

export class Completer {
  /** completions in flight (bounded by proxy.max_inflight) */
  inflight = 0
  readonly counters = { completions: 0, malformedToolCalls: 0, historyRewrites: 0 }

  constructor(
    private readonly config: ProxyConfig,
    private readonly tokenizer: ModelTokenizer,
    private readonly builder: PromptBuilder,
    private readonly pool: EnginePool,
    private readonly log: Logger,
    private readonly now: () => number,
  ) {}

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
    const ctxKey = this.contextKeyOf(s, ctx)
    ctx.key = ctxKey
    const msgKeys = messages.map(messageKey)
    const p = this.chatPrompt(s, messages, msgKeys, ctx, ctxKey)
    if (p.parent?.chat) {
      // keep the parent's keys for the shared history: a session stores each message's key (and content) once
      const pk = p.parent.chat.msgKeys
      for (let i = 0; i < pk.length; i++) msgKeys[i] = pk[i]!
      msgKeys[pk.length] = p.parent.chat.replyKey
    }
    const prompt = p.chain.view(0, p.promptLen)
    const toolsOn = this.config.tool_parser !== 'none' && !!ctx.tools && req.tool_choice !== 'none'
    const reasoningOn = this.config.reasoning_parser !== 'none'
    // the text the prompt ends with: the rendered delta (or full render) unless too short to tell
    const promptTail =
      p.tail.length >= 16 ? p.tail : this.tokenizer.decode(prompt.subarray(Math.max(0, prompt.length - 4)))
    const id = `chatcmpl-${randomHex(24)}`
    const parseOpts = {
      tools: toolsOn,
      reasoning: reasoningOn,
      reasoningOpen: reasoningOn && /<think>\n?$/.test(promptTail),
      idPrefix: `call_${id.slice(9, 21)}_`,
      stop: stopList(req.stop),
    }
    const stream = o.onDelta ? new StreamingParser(parseOpts) : null
    const decoder = new IncrementalDecoder(this.tokenizer)
    const gen = await this.generate(s, id, p, this.sampling(req, prompt.length, req.max_completion_tokens), {
      signal: o.signal,
      onTokens: stream
        ? (ids) => {
            const d = stream.update(decoder.push(ids))
            if (d.reasoning || d.content) o.onDelta!(d)
          }
        : undefined,
    })
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
      prompt: p,
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
    this.checkPromptLength(ids.length)
    const chain = TokenChain.of(ids)
    const p: Prompt = { chain, promptLen: chain.len, parent: null, follows: null, tail: '', undo: () => {} }
    const prompt = chain.view(0, chain.len)
    const id = `cmpl-${randomHex(24)}`
    const gen = await this.generate(s, id, p, this.sampling(req, prompt.length), o)
    this.record(s, { id, prompt: p, gen })
    return {
      id,
      created: Math.floor(Date.now() / 1000),
      model: this.config.model_name,
      text: cutAtStop(
        this.tokenizer.decode(stripEos(gen.outputIds, this.tokenizer)),
        stopList(req.stop),
        true,
      ),
      finishReason: gen.finishReason === 'length' ? 'length' : 'stop',
      promptTokens: prompt.length,
      completionTokens: gen.outputIds.length,
      outputIds: gen.outputIds,
      logprobs: gen.logprobs,
    }
  }

  /**
   * The context key of a chat request: the session's previous key while its tools and template arguments
   * are unchanged (the same string object: no kilobytes of tools serialised, hashed and compared again
   * each turn), else a fresh one.
   */
  private contextKeyOf(s: Session, ctx: TemplateContext): string {
    const last = s.lastContext
    if (last && sameJson(last.tools, ctx.tools) && sameJson(last.kwargs, ctx.kwargs)) return last.key
    const key = contextKey(ctx)
    s.lastContext = { tools: ctx.tools, kwargs: ctx.kwargs, key }
    return key
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

  /**
   * The prompt of a chat request and the chain it lives in: the parent's chain extended in place when the
   * parent is its idle tip, a copy when another completion already grows from it, a new chain after a
   * full render. `undo` takes the prompt back off a shared chain if the generation fails.
   */
  private chatPrompt(
    s: Session,
    messages: ChatMessage[],
    msgKeys: MessageKey[],
    ctx: TemplateContext,
    ctxKey: string,
  ): Prompt {
    const prev = this.config.incremental ? s.findParent(msgKeys, ctxKey) : undefined
    if (prev?.chat) {
      const d = this.builder.delta(messages.slice(prev.chat.msgKeys.length + 1), ctx, {
        prevReasoning: prev.chat.reasoning,
        outputEndsWithEos: prev.chat.endsWithEos,
      })
      if (d.kind === 'extend') {
        const end = prev.promptLen + prev.outputLen
        this.checkPromptLength(end + d.ids.length)
        if (prev.chain.len === end && !prev.chain.busy) {
          const chain = prev.chain
          chain.append(d.ids)
          return {
            chain,
            promptLen: chain.len,
            parent: prev,
            follows: prev.id,
            tail: d.text,
            undo: () => chain.truncate(end),
          }
        }
        const chain = TokenChain.of(prev.chain.view(0, end), d.ids)
        return { chain, promptLen: chain.len, parent: prev, follows: prev.id, tail: d.text, undo: () => {} }
      }
      this.counters.historyRewrites++
      this.log.debug({ session: s.id, reason: d.reason }, 'template rewrites history: new sample')
    }
    const text = this.builder.renderFull(messages, ctx)
    const chain = TokenChain.of(this.builder.encodeFull(text))
    this.checkPromptLength(chain.len)
    return {
      chain,
      promptLen: chain.len,
      parent: null,
      follows: prev?.id ?? null,
      tail: text,
      undo: () => {},
    }
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
      stop: stopList(req.stop),
      // for engines that stop on ids only (embedded): the tokens whose text completes a stop string
      stopStringIds: (stopList(req.stop) ?? []).flatMap((t) => this.tokenizer.idsCompleting(t)),
      seed: req.seed,
    }
  }

  private async generate(
    s: Session,
    rid: string,
    p: Prompt,
    sampling: Sampling,
    o: { signal?: AbortSignal; onTokens?: (ids: Int32Array, lps: Float32Array) => void },
  ) {
    if (this.inflight >= this.config.max_inflight) {
      p.undo()
      throw fail('PRX_ERR_FULL', `${this.inflight} completions in flight (proxy.max_inflight)`)
    }
    this.inflight++
    p.chain.busy = true
    const run = this.pool.generate(s.id, p.chain.view(0, p.promptLen), sampling, {
      signal: o.signal,
      rid,
      promptJson: () => p.chain.json(p.promptLen),
      onTokens: o.onTokens,
    })
    s.pending.add(run)
    try {
      return await run
    } catch (err) {
      p.undo()
      throw err
    } finally {
      p.chain.busy = false
      s.pending.delete(run)
      this.inflight--
    }
  }

  private record(
    s: Session,
    r: {
      id: string
      prompt: Prompt
      gen: { outputIds: Int32Array; logprobs: Float32Array; versions: Int32Array; finishReason: FinishReason }
      chat?: CompletionRecord['chat']
    },
  ): void {
    this.counters.completions++
    r.prompt.chain.append(r.gen.outputIds)
    s.add(
      new CompletionRecord({
        id: r.id,
        index: s.completions.length,
        parent: r.prompt.parent,
        follows: r.prompt.follows,
        chain: r.prompt.chain,
        promptLen: r.prompt.promptLen,
        outputLen: r.gen.outputIds.length,
        logprobs: r.gen.logprobs,
        versions: r.gen.versions,
        finishReason: r.gen.finishReason,
        created: this.now(),
        chat: r.chat,
      }),
    )
  }
}

/** random bytes drawn in blocks: one crypto call per 128 ids rather than one per id */
let pool = Buffer.alloc(0)
let poolAt = 0

/** `chars` random hex characters (chars even, at most 256). */
function randomHex(chars: number): string {
  const n = chars / 2
  if (poolAt + n > pool.length) {
    pool = randomBytes(4096)
    poolAt = 0
  }
  poolAt += n
  return pool.toString('hex', poolAt - n, poolAt)
}

function stopList(stop: string | string[] | null | undefined): string[] | undefined {
  return stop == null ? undefined : Array.isArray(stop) ? stop : [stop]
}
