/**
 * The one interface every inference backend implements (SGLang HTTP, vLLM HTTP, the embedded engine on
 * the bus). Token ids in, token ids out: the proxy never sends text to an engine.
 *
 * Contract:
 * - `generate` resolves with the tokens produced, even when aborted by `pause()` (finishReason 'abort',
 *   possibly zero tokens); the caller resumes with prompt + partial output. It rejects with coded errors:
 *   PRX_ERR_ENGINE_DOWN (nothing reached the engine: safe to retry elsewhere), PRX_ERR_UPSTREAM,
 *   PRX_ERR_UPSTREAM_TIMEOUT, or the signal's abort.
 * - every output token carries the policy version of the weights that produced it (`versions`).
 * - `pause()` aborts in-flight generations and holds new ones until `resume()`.
 */

export interface Sampling {
  maxNewTokens: number
  temperature: number
  topP: number
  topK?: number
  /** ids that end generation (the model's eos ids); the stop id is included in the output */
  stopTokenIds: number[]
  stop?: string[]
  /**
   * Ids of tokens whose text completes one of `stop` (from the proxy's tokenizer). Engines that match stop
   * strings themselves (SGLang, vLLM) ignore it; the embedded engine, which stops on ids only, adds them to
   * stopTokenIds. A stop string spread over several tokens is not caught that way.
   */
  stopStringIds?: number[]
  seed?: number
}

export interface GenerateRequest {
  inputIds: Int32Array
  /**
   * `inputIds` as JSON array elements (`1,2,3`, ASCII), when the caller keeps them serialised (the
   * proxy's token chains do): HTTP backends send these bytes instead of serialising inputIds again. Call
   * it before the first await; it must give exactly inputIds.
   */
  inputJson?: () => Uint8Array
  sampling: Sampling
  signal?: AbortSignal
  /** request id (for logs and engine-side abort) */
  rid?: string
  /**
   * Tokens as they are generated (streaming backends call it once per arrival, in order); a backend that
   * does not stream never calls it and the caller takes the whole result.
   */
  onTokens?: (ids: Int32Array, logprobs: Float32Array) => void
}

export type FinishReason = 'stop' | 'length' | 'abort'

export interface GenerateResult {
  outputIds: Int32Array
  logprobs: Float32Array
  /** policy version per output token */
  versions: Int32Array
  finishReason: FinishReason
}

export interface Engine {
  /** for logs and load balancing ('sglang@http://…') */
  readonly name: string
  generate(req: GenerateRequest): Promise<GenerateResult>
  pause(): Promise<void>
  resume(): Promise<void>
  /** load weights saved at `path` and label what they produce with `version` */
  updateWeights(path: string, version: number): Promise<void>
  /** label tokens with `version` from now on (weights arrived some other way, e.g. NCCL) */
  setVersion(version: number): void
  health(): Promise<boolean>
  close(): Promise<void>
}
