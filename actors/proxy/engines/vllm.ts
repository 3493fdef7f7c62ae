/**
 * vLLM server backend, through its OpenAI completions endpoint with token-id prompts:
 *   POST /v1/completions {model, prompt: [ids], max_tokens, logprobs: 0, return_tokens_as_token_ids: true,
 *                         stop_token_ids, skip_special_tokens: false, stream}
 *        → {choices: [{text, finish_reason, logprobs: {tokens: ['token_id:123', …], token_logprobs: […]}}]}
 *   (stream: OpenAI SSE chunks, each with the new tokens, then `data: [DONE]`)
 *   POST /pause?mode=abort · POST /resume (vLLM's RL endpoints) · GET /health
 * vLLM upstream has no "load weights from disk" endpoint; `update_path` names the extension that does
 * (default /update_weights_from_disk, body {model_path, weight_version}).
 */
import { fail } from '../../../runtime/errors.ts'
import { jsonWithIds, postJson, postSse } from './http.ts'
import type { Engine, FinishReason, GenerateRequest, GenerateResult } from './types.ts'

export interface VllmOptions {
  url: string
  timeoutMs: number
  model: string
  updatePath?: string
  /** stream tokens when the caller wants them as they come (default true) */
  stream?: boolean
}

interface VllmReply {
  choices?: {
    finish_reason?: string | null
    logprobs?: { tokens?: string[]; token_logprobs?: (number | null)[] } | null
  }[]
}

export class VllmEngine implements Engine {
  readonly name: string
  private version = 0

  constructor(private readonly opts: VllmOptions) {
    this.name = `vllm@${opts.url}`
  }

  async generate(req: GenerateRequest): Promise<GenerateResult> {
    const s = req.sampling
    const version = this.version
    const stream = !!req.onTokens && this.opts.stream !== false
    const body = jsonWithIds(
      'prompt',
      req.inputIds,
      {
        model: this.opts.model,
        max_tokens: s.maxNewTokens,
        temperature: s.temperature,
        top_p: s.topP,
        ...(s.topK !== undefined ? { top_k: s.topK } : {}),
        ...(s.stop?.length ? { stop: s.stop } : {}),
        ...(s.seed !== undefined ? { seed: s.seed } : {}),
        stop_token_ids: s.stopTokenIds,
        logprobs: 0,
        return_tokens_as_token_ids: true,
        skip_special_tokens: false,
        stream,
      },
      req.inputJson?.(),
    )
    const ids: number[] = []
    const lps: number[] = []
    let fr: string | null | undefined
    // one choice: the whole reply, or (streaming) the tokens since the previous chunk
    const take = (reply: VllmReply, streaming: boolean) => {
      const c = reply.choices?.[0]
      if (!c) {
        if (streaming) return // e.g. the usage chunk
        throw fail('PRX_ERR_UPSTREAM', `${this.name}: completion reply has no choices`)
      }
      const toks = c.logprobs?.tokens ?? (streaming && !c.logprobs ? [] : undefined)
      const values = c.logprobs?.token_logprobs ?? (streaming && !c.logprobs ? [] : undefined)
      if (!Array.isArray(toks) || !Array.isArray(values) || toks.length !== values.length) {
        throw fail(
          'PRX_ERR_UPSTREAM',
          `${this.name}: completion reply has no aligned logprobs.tokens/token_logprobs`,
        )
      }
      const at = ids.length
      for (let i = 0; i < toks.length; i++) {
        const m = /^token_id:(\d+)$/.exec(toks[i]!)
        if (!m)
          throw fail('PRX_ERR_UPSTREAM', `${this.name}: token ${JSON.stringify(toks[i])} is not token_id:N`)
        ids.push(Number(m[1]))
        lps.push(values[i] ?? 0)
      }
      if (c.finish_reason) fr = c.finish_reason
      if (streaming && ids.length > at)
        req.onTokens!(Int32Array.from(ids.slice(at)), Float32Array.from(lps.slice(at)))
    }
    const url = `${this.opts.url}/v1/completions`
    const opts = { timeoutMs: this.opts.timeoutMs, signal: req.signal }
    if (stream) await postSse(url, body, opts, (msg) => take(msg as VllmReply, true))
    else take((await postJson(url, body, opts)) as VllmReply, false)
    let finishReason: FinishReason
    if (fr === 'stop' || fr === 'length' || fr === 'abort') finishReason = fr
    else throw fail('PRX_ERR_UPSTREAM', `${this.name}: unknown finish_reason ${JSON.stringify(fr)}`)
    const n = ids.length
    return {
      outputIds: Int32Array.from(ids),
      logprobs: Float32Array.from(lps),
      versions: new Int32Array(n).fill(version),
      finishReason,
    }
  }

  async pause(): Promise<void> {
    await postJson(`${this.opts.url}/pause?mode=abort`, {}, { timeoutMs: this.opts.timeoutMs, text: true })
  }

  async resume(): Promise<void> {
    await postJson(`${this.opts.url}/resume`, {}, { timeoutMs: this.opts.timeoutMs, text: true })
  }

  async updateWeights(path: string, version: number): Promise<void> {
    await postJson(
      `${this.opts.url}${this.opts.updatePath ?? '/update_weights_from_disk'}`,
      { model_path: path, weight_version: String(version) },
      { timeoutMs: this.opts.timeoutMs },
    )
    this.version = version
  }

  setVersion(version: number): void {
    this.version = version
  }

  async health(): Promise<boolean> {
    try {
      await postJson(`${this.opts.url}/health`, undefined, { timeoutMs: 5000, method: 'GET', text: true })
      return true
    } catch {
      return false
    }
  }

  async close(): Promise<void> {}
}
