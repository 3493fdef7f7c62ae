/**
 * SGLang server backend (its native HTTP API, not the OpenAI one):
 *   POST /generate {input_ids, sampling_params, return_logprob: true, stream}
 *        → {text, meta_info: {finish_reason: {type: 'stop'|'length'|'abort', …},
 *                             output_token_logprobs: [[logprob, id, text|null], …], weight_version?}}
 *   POST /pause_generation {mode: 'abort'}   in-flight requests come back with finish_reason abort
 *   POST /continue_generation
 *   POST /update_weights_from_disk {model_path, weight_version, abort_all_requests} → {success, message}
 *   POST /abort_request {rid} (when the agent disconnects or the request times out)
 *   POST /flush_cache · GET /health
 * Weight publishing by broadcast (the trainer is rank 0 of an update group the server joins; see
 * actors/trainer/publish-distributed.ts), each answering {success, message} (HTTP 400 when not successful):
 *   POST /init_weights_update_group {master_address, master_port, rank_offset, world_size, group_name, backend}
 *   POST /update_weights_from_distributed {names, dtypes, shapes, group_name, flush_cache, weight_version?}
 *   POST /destroy_weights_update_group {group_name}
 *   POST /get_weights_by_name {name, truncate_size} → the parameter's first truncate_size rows (nested lists)
 * Streaming (SSE `data: {…}` … `data: [DONE]`) is used when the caller wants tokens as they come; chunks
 * carry cumulative output_token_logprobs by default, incremental ones with --incremental-streaming-output.
 * Tokens are labelled with the version of the weights the server holds: `meta_info.weight_version` when it
 * reports one, else the version this backend last loaded (pause → update → resume keeps that exact).
 */
import { fail } from '../../../runtime/errors.ts'
import { jsonWithIds, postJson, postSse } from './http.ts'
import type { Engine, FinishReason, GenerateRequest, GenerateResult } from './types.ts'
import { request as wireRequest } from './wire.ts'

export interface SglangOptions {
  url: string
  timeoutMs: number
  /** stream tokens from /generate when the caller wants them as they come (default true) */
  stream?: boolean
}

/** POST /init_weights_update_group: join the update group whose rank 0 (the trainer) hosts the store. */
export interface InitWeightsUpdateGroup {
  /** where rank 0's TCPStore listens */
  masterAddress: string
  masterPort: number
  /** the server's first rank in the group (its tp ranks follow) */
  rankOffset: number
  /** 1 (the trainer) + the tp sizes of every engine in the group */
  worldSize: number
  groupName: string
  /** 'nccl' on GPUs (SGLang's default); 'gloo' for CPU stand-ins */
  backend: 'nccl' | 'gloo'
  /** this request's own limit (rendezvous can take a while); default the engine's timeoutMs */
  timeoutMs?: number
}

/** POST /update_weights_from_distributed: receive these tensors, broadcast by rank 0 one by one, in order. */
export interface UpdateWeightsFromDistributed {
  names: string[]
  /** torch dtype names ('bfloat16', 'float16', 'float32'), one per tensor */
  dtypes: string[]
  shapes: number[][]
  groupName: string
  /** flush the radix cache once loaded (the last bucket of a publish) */
  flushCache: boolean
  /** the version the server reports for tokens from these weights (the last bucket of a publish) */
  weightVersion?: number
  /** this request's own limit (it answers once the broadcast is over); default the engine's timeoutMs */
  timeoutMs?: number
}

interface SglangReply {
  meta_info?: {
    completion_tokens?: number
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
    const stream = !!req.onTokens && this.opts.stream !== false
    const body = jsonWithIds(
      'input_ids',
      req.inputIds,
      {
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
        stream,
        ...(req.rid ? { rid: req.rid } : {}),
      },
      req.inputJson?.(),
    )
    const ids: number[] = []
    const lps: number[] = []
    let meta: NonNullable<SglangReply['meta_info']> | undefined
    const take = (m: SglangReply['meta_info'], streaming: boolean) => {
      const list = m?.output_token_logprobs
      if (!m || !Array.isArray(list)) {
        throw fail('PRX_ERR_UPSTREAM', `${this.name}: /generate reply has no meta_info.output_token_logprobs`)
      }
      // SGLang streams cumulative lists by default (incremental with --incremental-streaming-output):
      // a list as long as completion_tokens is cumulative.
      const cumulative =
        !streaming || m.completion_tokens === undefined || list.length === m.completion_tokens
      const fresh = cumulative ? list.slice(ids.length) : list
      const at = ids.length
      for (let i = 0; i < fresh.length; i++) {
        const e = fresh[i]!
        if (!Array.isArray(e) || typeof e[0] !== 'number' || !Number.isInteger(e[1])) {
          throw fail(
            'PRX_ERR_UPSTREAM',
            `${this.name}: output_token_logprobs[${at + i}] is not [logprob, id, …]`,
          )
        }
        lps.push(e[0])
        ids.push(e[1])
      }
      meta = m
      if (streaming && fresh.length > 0)
        req.onTokens!(Int32Array.from(ids.slice(at)), Float32Array.from(lps.slice(at)))
    }
    const opts = { timeoutMs: this.opts.timeoutMs, signal: req.signal }
    try {
      if (stream) {
        await postSse(`${this.opts.url}/generate`, body, opts, (msg) => {
          const m = msg as SglangReply & { error?: unknown }
          if (m.error !== undefined)
            throw fail('PRX_ERR_UPSTREAM', `${this.name}: ${JSON.stringify(m.error).slice(0, 300)}`)
          take(m.meta_info, true)
        })
      } else {
        take(((await postJson(`${this.opts.url}/generate`, body, opts)) as SglangReply).meta_info, false)
      }
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
    if (!meta) throw fail('PRX_ERR_UPSTREAM', `${this.name}: /generate stream ended without output`)
    const reported = Number(meta.weight_version)
    const v = meta.weight_version !== undefined && Number.isInteger(reported) ? reported : version
    const fr = typeof meta.finish_reason === 'string' ? meta.finish_reason : meta.finish_reason?.type
    return {
      outputIds: Int32Array.from(ids),
      logprobs: Float32Array.from(lps),
      versions: new Int32Array(ids.length).fill(v),
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

  /**
   * Asks the server to join the update group (it answers once it has joined, so do not await this
   * before joining as rank 0 yourself). Not successful → PRX_ERR_ENGINE_REFUSED with SGLang's message.
   */
  async initWeightsUpdateGroup(g: InitWeightsUpdateGroup): Promise<void> {
    await this.control(
      '/init_weights_update_group',
      {
        master_address: g.masterAddress,
        master_port: g.masterPort,
        rank_offset: g.rankOffset,
        world_size: g.worldSize,
        group_name: g.groupName,
        backend: g.backend,
      },
      g.timeoutMs,
    )
  }

  /**
   * Asks the server to receive the named tensors from the group's rank 0 (it answers once they are
   * received and loaded, so send them while this is in flight). Records `weightVersion` as the version of
   * the tokens generated afterwards. Not successful → PRX_ERR_ENGINE_REFUSED with SGLang's message.
   */
  async updateWeightsFromDistributed(u: UpdateWeightsFromDistributed): Promise<void> {
    await this.control(
      '/update_weights_from_distributed',
      {
        names: u.names,
        dtypes: u.dtypes,
        shapes: u.shapes,
        group_name: u.groupName,
        flush_cache: u.flushCache,
        ...(u.weightVersion !== undefined ? { weight_version: String(u.weightVersion) } : {}),
      },
      u.timeoutMs,
    )
    if (u.weightVersion !== undefined) this.version = u.weightVersion
  }

  /** Leaves the update group (servers that predate this endpoint answer 404: PRX_ERR_UPSTREAM). */
  async destroyWeightsUpdateGroup(groupName: string): Promise<void> {
    await this.control('/destroy_weights_update_group', { group_name: groupName })
  }

  /**
   * A parameter as the server holds it, for checks: its first `truncateSize` rows (a list of numbers for
   * a vector, a list of rows for a matrix), as SGLang's /get_weights_by_name answers.
   */
  async getWeightsByName(name: string, truncateSize = 100): Promise<unknown[]> {
    const r = await postJson(
      `${this.opts.url}/get_weights_by_name`,
      { name, truncate_size: truncateSize },
      { timeoutMs: this.opts.timeoutMs },
    )
    if (!Array.isArray(r))
      throw fail('PRX_ERR_UPSTREAM', `${this.name}: /get_weights_by_name ${name} is not a list`)
    return r
  }

  /**
   * POST a control request whose answer is {success, message}, with SGLang's HTTP 400 for an unsuccessful
   * one read as a refusal (the message says why) rather than as a broken server.
   */
  private async control(path: string, body: unknown, timeoutMs = this.opts.timeoutMs): Promise<string> {
    const url = `${this.opts.url}${path}`
    const res = await wireRequest(url, {
      method: 'POST',
      body: [Buffer.from(JSON.stringify(body), 'utf8')],
      timeoutMs,
    })
    const text = res.body.toString('utf8')
    let r: { success?: unknown; message?: unknown } | undefined
    try {
      r = JSON.parse(text) as typeof r
    } catch {
      r = undefined
    }
    if (r && typeof r === 'object' && typeof r.success === 'boolean') {
      const message = typeof r.message === 'string' ? r.message : ''
      if (r.success && res.status >= 200 && res.status < 300) return message
      throw fail('PRX_ERR_ENGINE_REFUSED', `${this.name} ${path}: ${message}`, {
        engine: this.opts.url,
        path,
        status: res.status,
        engineMessage: message,
      })
    }
    throw fail('PRX_ERR_UPSTREAM', `${url} answered ${res.status}: ${text.slice(0, 300)}`, {
      url,
      status: res.status,
    })
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
