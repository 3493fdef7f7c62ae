/**
 * SGLang server backend (its native HTTP API, not the OpenAI one):
 *   POST /generate {input_ids, sampling_params, return_logprob: true}
 *        → {text, meta_info: {finish_reason: {type: 'stop'|'length'|'abort', …},
 *                             output_token_logprobs: [[logprob, id, text|null], …], weight_version?}}
 *   POST /pause_generation {mode: 'abort'}   in-flight requests come back with finish_reason abort
 *   POST /continue_generation
 *   POST /update_weights_from_disk {model_path, weight_version, abort_all_requests} → {success, message}
 *   POST /abort_request {rid} (when the agent disconnects or the request times out)
 *   POST /flush_cache · GET /health
 * Tokens are labelled with the version of the weights the server holds: `meta_info.weight_version` when it
 * reports one, else the version this backend last loaded (pause → update → resume keeps that exact).
 */
import { fail } from '../../../runtime/errors.ts'
import { jsonWithIds, postJson } from './http.ts'
import type { Engine, FinishReason, GenerateRequest, GenerateResult } from './types.ts'

export interface SglangOptions {
  url: string
  timeoutMs: number
}

interface SglangReply {
  meta_info?: {
    finish_reason?: { type?: string } | string | null
    output_token_logprobs?: [number, number, unknown][]
    weight_version?: string | number
  }
}

export class SglangEngine implements Engine {
  readonly name: string
  private version = 0

  constructor(private readonly opts: SglangOptions) {
    this.name = `sglang@${opts.url}`
  }

  async generate(req: GenerateRequest): Promise<GenerateResult> {
    const s = req.sampling
    const version = this.version
    const body = {
      sampling_params: {
        max_new_tokens: s.maxNewTokens,
        temperature: s.temperature,
        top_p: s.topP,
        ...(s.topK !== undefined ? { top_k: s.topK } : {}),
        stop_token_ids: s.stopTokenIds,
        ...(s.stop?.length ? { stop: s.stop } : {}),
        ...(s.seed !== undefined ? { sampling_seed: s.seed } : {}),
        // the stop token is part of what the model sampled: keep it in the output
        no_stop_trim: true,
      },
      return_logprob: true,
      stream: false,
      ...(req.rid ? { rid: req.rid } : {}),
    }
    let reply: SglangReply
    try {
      reply = (await postJson(`${this.opts.url}/generate`, jsonWithIds('input_ids', req.inputIds, body), {
        timeoutMs: this.opts.timeoutMs,
        signal: req.signal,
      })) as SglangReply
    } catch (err) {
      // the caller gave up or the engine is too slow: stop the generation there too
      const code = (err as { code?: string }).code
      if (req.rid && (req.signal?.aborted || code === 'PRX_ERR_UPSTREAM_TIMEOUT')) {
        postJson(`${this.opts.url}/abort_request`, { rid: req.rid }, { timeoutMs: 5000, text: true }).catch(
          () => {},
        )
      }
      throw err
    }
    const meta = reply.meta_info
    const lps = meta?.output_token_logprobs
    if (!meta || !Array.isArray(lps)) {
      throw fail('PRX_ERR_UPSTREAM', `${this.name}: /generate reply has no meta_info.output_token_logprobs`)
    }
    const n = lps.length
    const outputIds = new Int32Array(n)
    const logprobs = new Float32Array(n)
    for (let i = 0; i < n; i++) {
      const e = lps[i]!
      if (!Array.isArray(e) || typeof e[0] !== 'number' || !Number.isInteger(e[1])) {
        throw fail('PRX_ERR_UPSTREAM', `${this.name}: output_token_logprobs[${i}] is not [logprob, id, …]`)
      }
      logprobs[i] = e[0]
      outputIds[i] = e[1]
    }
    const reported = Number(meta.weight_version)
    const v = meta.weight_version !== undefined && Number.isInteger(reported) ? reported : version
    const fr = typeof meta.finish_reason === 'string' ? meta.finish_reason : meta.finish_reason?.type
    return {
      outputIds,
      logprobs,
      versions: new Int32Array(n).fill(v),
      finishReason: finishReason(fr, this.name),
    }
  }

  async pause(): Promise<void> {
    await postJson(
      `${this.opts.url}/pause_generation`,
      { mode: 'abort' },
      { timeoutMs: this.opts.timeoutMs, text: true },
    )
  }

  async resume(): Promise<void> {
    await postJson(`${this.opts.url}/continue_generation`, {}, { timeoutMs: this.opts.timeoutMs, text: true })
  }

  async updateWeights(path: string, version: number): Promise<void> {
    const r = (await postJson(
      `${this.opts.url}/update_weights_from_disk`,
      { model_path: path, weight_version: String(version), abort_all_requests: true },
      { timeoutMs: this.opts.timeoutMs },
    )) as { success?: boolean; message?: string }
    if (r.success === false)
      throw fail('PRX_ERR_UPSTREAM', `${this.name}: weight update refused: ${r.message ?? ''}`)
    await postJson(`${this.opts.url}/flush_cache`, {}, { timeoutMs: this.opts.timeoutMs, text: true })
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

function finishReason(t: string | undefined, name: string): FinishReason {
  if (t === 'stop' || t === 'length' || t === 'abort') return t
  throw fail('PRX_ERR_UPSTREAM', `${name}: unknown finish_reason ${JSON.stringify(t)}`)
}
