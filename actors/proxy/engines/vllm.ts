/**
 * vLLM server backend, through its OpenAI completions endpoint with token-id prompts:
 *   POST /v1/completions {model, prompt: [ids], max_tokens, logprobs: 0, return_tokens_as_token_ids: true,
 *                         stop_token_ids, skip_special_tokens: false}
 *        → {choices: [{text, finish_reason, logprobs: {tokens: ['token_id:123', …], token_logprobs: […]}}]}
 *   POST /pause?mode=abort · POST /resume (vLLM's RL endpoints) · GET /health
 * vLLM upstream has no "load weights from disk" endpoint; `update_path` names the extension that does
 * (default /update_weights_from_disk, body {model_path, weight_version}).
 */
import { fail } from '../../../runtime/errors.ts'
import { jsonWithIds, postJson } from './http.ts'
import type { Engine, FinishReason, GenerateRequest, GenerateResult } from './types.ts'

export interface VllmOptions {
  url: string
  timeoutMs: number
  model: string
  updatePath?: string
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
    const body = {
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
      stream: false,
    }
    const reply = (await postJson(
      `${this.opts.url}/v1/completions`,
      jsonWithIds('prompt', req.inputIds, body),
      {
        timeoutMs: this.opts.timeoutMs,
        signal: req.signal,
      },
    )) as VllmReply
    const c = reply.choices?.[0]
    const toks = c?.logprobs?.tokens
    const lps = c?.logprobs?.token_logprobs
    if (!c || !Array.isArray(toks) || !Array.isArray(lps) || toks.length !== lps.length) {
      throw fail(
        'PRX_ERR_UPSTREAM',
        `${this.name}: completion reply has no aligned logprobs.tokens/token_logprobs`,
      )
    }
    const n = toks.length
    const outputIds = new Int32Array(n)
    const logprobs = new Float32Array(n)
    for (let i = 0; i < n; i++) {
      const m = /^token_id:(\d+)$/.exec(toks[i]!)
      if (!m)
        throw fail('PRX_ERR_UPSTREAM', `${this.name}: token ${JSON.stringify(toks[i])} is not token_id:N`)
      outputIds[i] = Number(m[1])
      logprobs[i] = lps[i] ?? 0
    }
    const fr = c.finish_reason
    let finishReason: FinishReason
    if (fr === 'stop' || fr === 'length' || fr === 'abort') finishReason = fr
    else throw fail('PRX_ERR_UPSTREAM', `${this.name}: unknown finish_reason ${JSON.stringify(fr)}`)
    return { outputIds, logprobs, versions: new Int32Array(n).fill(version), finishReason }
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
