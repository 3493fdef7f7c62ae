/**
 * The native trainer addon (native/build/trainer.node, C++17 over libtorch): every export, with shapes,
 * dtypes and threading contracts. This is the only file that loads the addon.
 *
 * Threading. Every method that returns a Promise runs off the JS thread (a libuv worker). One call at a
 * time per model handle: a second call while one is running rejects with TRN_ERR_BUSY (await the first;
 * the trainer and engine actors serialise their calls). Calls that use a process group are collective:
 * every rank of the group must make the same calls in the same order, and one group runs one call at a
 * time (TRN_ERR_BUSY otherwise). Failures reject with a CodedError (`err.code` from runtime/errors.ts,
 * `err.details.file/line` naming the C++ check); the process never aborts.
 *
 * Packed batches. Several variable-length sequences back to back in one row: `inputIds` Int32Array [T],
 * `cuSeqlens` Int32Array [S+1] with cuSeqlens[0] = 0, cuSeqlens[S] = T, strictly increasing. Tokens attend
 * only within their own sequence; positions restart at 0 in each.
 *
 * Alignment. Every per-token array is aligned with the token it scores: `logprobs[i]` is
 * log p(inputIds[i] | earlier tokens of the same sequence). The first token of each sequence has no
 * prediction: its log-prob and entropy are 0 and it must not be in a loss mask. This is the proxy's export
 * layout (`input_ids = prompt ++ output`, `logprobs = 0…0 ++ engine logprobs`, `loss_mask = 0…0 1…1`),
 * so trainer batches go in unshifted.
 *
 * Numbers. Master dtype float32 (default) or float64 (for gradient checks); compute dtype the same or, over
 * float32 masters, bfloat16/float16 (RunOptions). Log-probs and entropies come back as Float32Array, the
 * PPO loss is computed in float64. Logits are computed in chunks (about 2^22 values on the CPU, 2^28 on a
 * GPU), so the full [T × vocab] logits never exist at once (also in the backward pass).
 *
 * Devices. `device: 'cuda:N'` runs the same API on a GPU (addon built against a CUDA libtorch); sharding
 * over several GPUs uses an NCCL process group (initProcessGroup({backend: 'nccl'})), over CPU processes a
 * Gloo one. Arrays cross the JS boundary on the host either way.
 */

import { mkdirSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { type ErrCode, fail, isErrCode } from '../runtime/errors.ts'
import { eosIds, type HfQwen3Config, type NativeModelConfig, readHfConfig, toNativeConfig } from './config.ts'
import { checkpointTensors, readSafetensorsFile, type TensorLocation } from './safetensors.ts'

export type { HfQwen3Config, NativeModelConfig } from './config.ts'
export { eosIds, readHfConfig, toNativeConfig } from './config.ts'

/** Master dtype of a model: its weights, gradient accumulator and AdamW state. */
export type ModelDtype = 'float32' | 'float64'
/** Dtype of saved safetensors. */
export type SaveDtype = 'float32' | 'bfloat16' | 'float16'

/** Sequences packed in one row (see the file header). */
export interface PackedBatch {
  /** Int32Array [T], token ids in [0, vocab_size). */
  inputIds: Int32Array
  /** Int32Array [S+1], sequence boundaries. */
  cuSeqlens: Int32Array
}

/** Per-token scores, aligned with `inputIds` (0 at each sequence's first token). */
export interface TokenScores {
  /** Float32Array [T]: log softmax(logits / temperature) of the token. */
  logprobs: Float32Array
  /** Float32Array [T]: entropy of the distribution that predicted the token (same temperature). */
  entropy: Float32Array
}

/** One micro-batch of a PPO step: a packed batch plus per-token arrays (all [T], aligned as above). */
export interface PpoMicroBatch extends PackedBatch {
  /** Uint8Array [T]: 1 where the token is trained on (never a sequence's first token). */
  lossMask: Uint8Array
  /** Advantages A per token. */
  advantages: Float32Array | Float64Array
  /** log πprox: log-probs recomputed by this model before the update (the PPO ratio's denominator). */
  proxLogprobs: Float32Array | Float64Array
  /** log πbehave: the engine's log-probs; gives the decoupled weight πprox/πbehave. Omitted: weight 1. */
  behaveLogprobs?: Float32Array | Float64Array
}

/**
 * The decoupled PPO loss (DESIGN §5). Per loss token, ρ = exp(logπθ − logπprox):
 * L = max(−A·ρ, −A·clip(ρ, 1−epsClip, 1+epsClipHigher)); with dualClip c: min(L, c·|A|); times
 * w = πprox/πbehave (capped: "mask" zeroes tokens with w > cap, "clamp" uses min(w, cap));
 * loss = Σ w·L / (loss tokens of the global batch). `sequenceLevel` (GSPO): ρ of every token of a
 * sequence is exp(mean over its loss tokens of logπθ − logπprox).
 */
export interface PpoLossConfig {
  /** ε, default 0.2. */
  epsClip?: number
  /** ε_high for the upper bound, default = epsClip. */
  epsClipHigher?: number
  /** Dual-clip c (> 1); 0 or absent = off. */
  dualClip?: number
  /** Behaviour importance-weight cap; 0 or absent = no cap. */
  behavImpWeightCap?: number
  /** How the cap applies: drop the token ("mask", default) or clamp its weight ("clamp"). */
  behavImpWeightMode?: 'mask' | 'clamp'
  /** Sequence-level ratio (GSPO), default false. */
  sequenceLevel?: boolean
  /**
   * Entropy bonus c ≥ 0: loss −= c · Σ_mask H / (loss tokens), H the entropy of the distribution that
   * predicted each loss token (at `temperature`); reported inside `loss`. Default 0 (off). Uses the chunked
   * head backward (not keepSoftmax's).
   */
  entropyCoef?: number
  /** Temperature of the log-probs; must equal the sampling temperature. Default 1. */
  temperature?: number
}

/** Learning-rate schedule over optimizer steps (0-based step t). */
export interface LrSchedule {
  /** constant; linear or cosine decay from lr to lr·minLrRatio between warmupSteps and totalSteps. */
  kind: 'constant' | 'linear' | 'cosine'
  /** Linear warm-up: lr·(t+1)/warmupSteps for t < warmupSteps. Default 0. */
  warmupSteps?: number
  /** End of the decay (required for linear/cosine, > warmupSteps). */
  totalSteps?: number
  /** Floor of the decay as a fraction of lr, default 0. */
  minLrRatio?: number
}

/** AdamW (decoupled weight decay on matrices only, as torch.optim.AdamW) with grad-norm clipping. */
export interface OptimizerConfig {
  lr: number
  /** Default [0.9, 0.999]. */
  betas?: [number, number]
  /** Default 1e-8. */
  eps?: number
  /** Default 0. Not applied to norms and biases. */
  weightDecay?: number
  /** Clip the global grad norm to this (0 = off). Default 1. */
  maxGradNorm?: number
  schedule?: LrSchedule
}

/** Loss statistics over the loss tokens of the whole (global) batch. */
export interface LossStats {
  /** The loss value (Σ w·L / tokens). */
  loss: number
  /** Number of loss tokens. */
  tokens: number
  /** Fraction of loss tokens where the clipped branch was taken. */
  clipFraction: number
  /** Fraction where the dual clip was taken. */
  dualClipFraction: number
  /** Fraction whose behaviour weight exceeded the cap (masked or clamped). */
  behavCappedFraction: number
  ratioMean: number
  ratioMax: number
  /** k3 estimator of KL(prox ‖ θ): mean of (ρ − 1) − log ρ with the token-level ρ. */
  approxKl: number
  /** Mean entropy of the predicting distributions at the loss tokens. */
  entropy: number
}

/** What one optimizer step reports. */
export interface StepStats extends LossStats {
  /** Global gradient norm before clipping. */
  gradNorm: number
  /** Learning rate used by this step. */
  lr: number
  /** True when the gradient was not finite: nothing was updated. */
  skipped: boolean
  /** Optimizer steps taken so far (after this one). */
  step: number
  /**
   * Only with TRN_STEP_TIMINGS=1 in the environment: milliseconds of each phase, the device synchronised at
   * every boundary — gather (materialize the parameters), forwardBackward (every micro-batch), reduce (tp
   * sums and the data-parallel reduce-scatter), optimizer (norm, clipping, AdamW).
   */
  timingsMs?: { gather: number; forwardBackward: number; reduce: number; optimizer: number }
  /**
   * Sharded (streamed ZeRO-3) steps only: the most parameter units — the embedding, a decoder layer, the
   * final norm with the head — this rank held gathered or had in flight at once (layers keeping their
   * activations stay gathered until their backward; checkpointed ones are gathered twice, briefly).
   */
  gatheredUnitsPeak?: number
}

/** One generation request. */
export interface GenerationRequest {
  /** Int32Array [P], P ≥ 1. */
  prompt: Int32Array
  /** Budget of new tokens, counting any `resume` tokens. Default: sampling.maxNewTokens (one is required). */
  maxNewTokens?: number
  /** Sampling seed; default sampling.seed + request index. Pass the same seed when resuming. */
  seed?: number
  /** A partial output of this request (e.g. returned with finish 'abort'): generation continues after it. */
  resume?: Pick<Generation, 'tokens' | 'logprobs'>
}

/** Sampling parameters shared by a batch of requests. */
export interface SamplingParams {
  /** 0 = greedy. Default 1. */
  temperature?: number
  /** Nucleus sampling mass in (0, 1]. Default 1. */
  topP?: number
  /** Keep the k most likely tokens; 0 = off. Default 0. */
  topK?: number
  /** Default budget per request. */
  maxNewTokens?: number
  /** Token ids that end a request (included in its output). Default: the config's eos_token_id. */
  stopIds?: number[]
  /** Base seed. Default 0. */
  seed?: number
  /** false: recompute every step from scratch (the reference for the KV-cache path). Default true. */
  kvCache?: boolean
}

/** One request's output. */
export interface Generation {
  /** Int32Array: the new tokens (a stop id, when hit, is the last one). */
  tokens: Int32Array
  /** Float32Array: log p of each token under softmax(logits / temperature) before top-k/top-p
   * filtering (temperature 1 when greedy) — what the trainer recomputes. */
  logprobs: Float32Array
  finish: 'stop' | 'length' | 'abort'
}

export interface GenerateOptions {
  /** Aborting stops at the next decode step; unfinished requests come back with finish 'abort'. */
  signal?: AbortSignal
  /** Called on the JS thread with the number of decode steps done (calls may be coalesced). */
  onProgress?: (steps: number) => void
}

/** Forward/backward dtype: the master dtype, or bfloat16/float16 over float32 master weights. */
export type ComputeDtype = 'float32' | 'float64' | 'bfloat16' | 'float16'

/** Where a model computes: 'cpu', 'cuda' (device 0) or 'cuda:N'. */
export type DeviceName = 'cpu' | 'cuda' | `cuda:${number}`

/** How and where a model computes (createModel/loadModel). */
export interface RunOptions {
  /** Default 'cpu'. A CUDA device needs an addon built against a CUDA libtorch (TRN_ERR_DEVICE otherwise). */
  device?: DeviceName
  /**
   * Default: the master dtype. 'bfloat16' keeps float32 master weights and AdamW state, materialises the
   * parameters in bf16 for the forward/backward (flash attention over the packed sequences on CUDA), and
   * accumulates every micro-batch's gradients in float32. Log-probs/entropies are float32 either way.
   */
  computeDtype?: ComputeDtype
  /** Recompute each decoder layer's activations in the backward pass (memory for compute). Default false. */
  activationCheckpointing?: boolean
  /**
   * With activationCheckpointing: recompute only the first this many decoder layers and keep the others'
   * activations (a memory budget between none and all). Default -1: every layer.
   */
  checkpointLayers?: number
  /** Logits per chunk of the log-prob computation; default 2^22 on the CPU, 2^28 on a GPU. */
  logitsChunk?: number
  /**
   * Training on CUDA in bf16/fp16: keep the scoring pass's softmax ([loss tokens × vocab] in the compute
   * dtype — 5 GB for 16k tokens of Qwen3's 152k vocabulary) so the head's backward is two whole-batch
   * matrix products without recomputing the logits (one fewer pass through the head: about 30 ms of a
   * 0.45 s step on the Qwen3-1.7B shape at 16k tokens, by the kernel profile). Default false:
   * logits exist one chunk at a time, forward and backward.
   */
  keepSoftmax?: boolean
}

/**
 * Rendezvous for a process group: a FileStore path (fresh per group) or a TCPStore host:port. Backend
 * 'gloo' (CPU tensors, default) or 'nccl' (CUDA tensors; each rank names its GPU with `device`).
 */
export interface ProcessGroupOptions {
  rank: number
  worldSize: number
  /** FileStore rendezvous file (on a filesystem all ranks see; must not exist from an earlier group). */
  storePath?: string
  /** TCPStore: rank 0 listens on host:port, the others connect. */
  host?: string
  port?: number
  /** Local address for Gloo's transport (default: libtorch's choice from the hostname). */
  glooHostname?: string
  /** Rendezvous and collective timeout, default 300000 ms. */
  timeoutMs?: number
  /** Default 'gloo'. Models on CUDA need 'nccl', models on the CPU 'gloo'. */
  backend?: 'gloo' | 'nccl'
  /** NCCL: this rank's GPU (default cuda:(rank mod device count)). */
  device?: DeviceName
  /** This group's keys in the store live under this prefix (c10d PrefixStore), e.g. a group name. */
  storePrefix?: string
  /**
   * NCCL: run a one-element all-reduce when the group is made, so a bad rendezvous fails here rather than
   * at the first real collective (default true). False for a group whose other ranks are not ours and run
   * no such collective — SGLang's weight-update group, which torch.distributed builds lazily.
   */
  eagerConnect?: boolean
}

/** What publishParameters/receiveParameters send: which parameters, in which dtype, from which rank. */
export interface ParameterTransfer {
  /** HF names, in the order they travel (default: every parameter, in the model's order). */
  names?: string[]
  /** Dtype on the wire. Default 'bfloat16'. */
  dtype?: SaveDtype
  /** The sending rank of the update group. Default 0. */
  root?: number
}

/** What the addon was built against. */
export interface BuildInfo {
  torchVersion: string
  gloo: boolean
  /** c10d NCCL process groups compiled in. */
  nccl: boolean
  cuda: boolean
  /** The hand-written CUDA kernels (native/src/kernels.cu, built by nvcc) serve CUDA float32/bf16/fp16. */
  kernels: boolean
  cxx11Abi: boolean
}

// ---- the raw addon -------------------------------------------------------------------------------------

interface NativeModelInfo {
  numParams: number
  shardNumel: number
  dtype: ModelDtype
  computeDtype: ComputeDtype
  device: string
  activationCheckpointing: boolean
  checkpointLayers: number
  tpRank: number
  tpSize: number
  rank: number
  worldSize: number
  step: number
  busy: boolean
  params: { name: string; shape: number[] }[]
}

interface NativeModel {
  info(): NativeModelInfo
  logprobs(batch: PackedBatch, opts: { temperature: number }): Promise<TokenScores>
  gradients(
    mbs: PpoMicroBatch[],
    loss: PpoLossConfig,
  ): Promise<{ grads: Record<string, Float32Array | Float64Array>; stats: LossStats }>
  ppoStep(mbs: PpoMicroBatch[], loss: PpoLossConfig, optim: OptimizerConfig): Promise<StepStats>
  generate(
    reqs: { prompt: Int32Array; maxNewTokens: number; seed?: number }[],
    sampling: SamplingParams,
    control: Int32Array | null,
    onProgress: ((steps: number) => void) | null,
  ): Promise<Generation[]>
  save(dir: string, opts: { dtype: SaveDtype; maxShardBytes: number }): Promise<string[]>
  parameters(): Promise<Record<string, Float32Array | Float64Array>>
  saveState(path: string): Promise<void>
  loadState(
    tensors: TensorLocation[],
    meta: { step: number; rank: number; worldSize: number; numParams: number },
  ): Promise<void>
  setParameter(name: string, data: Float32Array | Float64Array): void
  publishParameters(opts: {
    group?: NativeGroup
    names?: string[]
    dtype: SaveDtype
    root: number
  }): Promise<void>
  receiveParameters(opts: {
    group: NativeGroup
    names?: string[]
    dtype: SaveDtype
    root: number
  }): Promise<void>
  dispose(): void
}

interface NativeGroup {
  info(): { rank: number; worldSize: number; backend: 'gloo' | 'nccl' }
  allreduceSum(data: Float64Array): Promise<Float64Array>
  barrier(): Promise<void>
}

interface Addon {
  createModel(
    config: NativeModelConfig,
    opts: {
      seed: number
      dtype: ModelDtype
      processGroup?: NativeGroup
      tensorParallel?: NativeGroup
    } & RunOptions,
  ): Promise<NativeModel>
  loadModel(
    config: NativeModelConfig,
    tensors: TensorLocation[],
    opts: { dtype: ModelDtype; processGroup?: NativeGroup; tensorParallel?: NativeGroup } & RunOptions,
  ): Promise<NativeModel>
  ppoLoss(inputs: PpoLossInputs, loss: PpoLossConfig, denom?: number): PpoLossResult
  lrAt(optim: OptimizerConfig, step: number): number
  initProcessGroup(opts: ProcessGroupOptions): Promise<NativeGroup>
  setNumThreads(n: number): void
  numThreads(): number
  buildInfo(): BuildInfo
  cudaDeviceCount(): number
  cudaMemory(device: string, resetPeak: boolean): CudaMemory
}

const addonPath = join(dirname(fileURLToPath(import.meta.url)), 'build', 'trainer.node')
let addon: Addon | undefined

function native(): Addon {
  if (addon) return addon
  try {
    addon = createRequire(import.meta.url)(addonPath) as Addon
  } catch (e) {
    throw fail('TRN_ERR_NOT_BUILT', `${addonPath}: ${(e as Error).message}`, { path: addonPath }, e)
  }
  return addon
}

/** Native errors carry `code` (+ file/line); make them catalogue CodedErrors. */
function coded(e: unknown): Error {
  const err = e as { code?: unknown; message?: string; file?: string; line?: number }
  if (err && typeof err === 'object' && isErrCode(err.code) && !('status' in err)) {
    const details = err.file ? { file: err.file, line: err.line } : undefined
    return fail(err.code as ErrCode, err.message, details, e)
  }
  return e instanceof Error ? e : fail('TRN_ERR_TORCH', String(e))
}

async function call<T>(fn: () => Promise<T> | T): Promise<T> {
  try {
    return await fn()
  } catch (e) {
    throw coded(e)
  }
}

// ---- public API ---------------------------------------------------------------------------------------

/** A Gloo (CPU) or NCCL (CUDA) process group. Collective methods must be called by every rank. */
export class ProcessGroup {
  /** @internal */
  readonly handle: NativeGroup
  readonly rank: number
  readonly worldSize: number
  readonly backend: 'gloo' | 'nccl'
  /** @internal */
  constructor(handle: NativeGroup) {
    this.handle = handle
    const i = handle.info()
    this.rank = i.rank
    this.worldSize = i.worldSize
    this.backend = i.backend
  }
  /** Element-wise sum over ranks (collective). */
  allreduceSum(data: Float64Array): Promise<Float64Array> {
    return call(() => this.handle.allreduceSum(data))
  }
  /** Returns when every rank has called it (collective). */
  barrier(): Promise<void> {
    return call(() => this.handle.barrier())
  }
}

/** Joins (or, on rank 0 with TCP, hosts) a group; resolves once all `worldSize` ranks joined. */
export function initProcessGroup(opts: ProcessGroupOptions): Promise<ProcessGroup> {
  return call(async () => new ProcessGroup(await native().initProcessGroup(opts)))
}

/**
 * A Qwen3 model with its parameters, gradients and AdamW state (sharded across the ranks of its process
 * group, if any). Calls are serialised per model (TRN_ERR_BUSY otherwise); with a process group every
 * async method is collective.
 */
export class Model {
  readonly config: HfQwen3Config
  readonly dtype: ModelDtype
  readonly computeDtype: ComputeDtype
  /** Where it computes, as libtorch names it ('cpu', 'cuda:0', …). */
  readonly device: string
  readonly rank: number
  readonly worldSize: number
  /** This model's rank in its tensor-parallel group, and that group's size (1: none). */
  readonly tpRank: number
  readonly tpSize: number
  /** Total parameter count (not per shard). */
  readonly numParams: number
  /** Decoder layers recomputed in backward: the first `checkpointLayers` (-1: all) when on. */
  readonly activationCheckpointing: boolean
  readonly checkpointLayers: number
  /** Elements of this rank's parameter shard (≈ numParams / worldSize; optimizer state is 2× this). */
  readonly shardNumel: number
  /** HF tensor names and shapes, in the native order. */
  readonly params: readonly { name: string; shape: number[] }[]
  readonly #h: NativeModel

  /** @internal use createModel/loadModel */
  constructor(handle: NativeModel, config: HfQwen3Config) {
    this.#h = handle
    this.config = config
    const i = handle.info()
    this.dtype = i.dtype
    this.computeDtype = i.computeDtype
    this.device = i.device
    this.rank = i.rank
    this.worldSize = i.worldSize
    this.tpRank = i.tpRank
    this.tpSize = i.tpSize
    this.numParams = i.numParams
    this.activationCheckpointing = i.activationCheckpointing
    this.checkpointLayers = i.checkpointLayers
    this.shardNumel = i.shardNumel
    this.params = i.params
  }

  /** Optimizer steps taken so far. */
  get step(): number {
    try {
      return this.#h.info().step
    } catch (e) {
      throw coded(e)
    }
  }

  /** Per-token log-probs and entropies of a packed batch at a temperature (> 0, default 1). */
  logprobs(batch: PackedBatch, opts: { temperature?: number } = {}): Promise<TokenScores> {
    return call(() => this.#h.logprobs(batch, { temperature: opts.temperature ?? 1 }))
  }

  /** One optimizer step: PPO loss over all micro-batches (token-weighted), clip, AdamW, schedule. */
  ppoStep(microBatches: PpoMicroBatch[], loss: PpoLossConfig, optim: OptimizerConfig): Promise<StepStats> {
    return call(() => this.#h.ppoStep(microBatches, loss, optim))
  }

  /**
   * Gradients of the same loss as ppoStep, without updating anything: full tensors (summed over ranks),
   * by HF name, in the model dtype (Float64Array for float64 models).
   */
  gradients(
    microBatches: PpoMicroBatch[],
    loss: PpoLossConfig,
  ): Promise<{ grads: Record<string, Float32Array | Float64Array>; stats: LossStats }> {
    return call(() => this.#h.gradients(microBatches, loss))
  }

  /**
   * Batched sampling with a KV cache. Resolves with one Generation per request, in order; a request
   * with `resume` gets its full output (resumed tokens first).
   */
  generate(
    requests: GenerationRequest[],
    sampling: SamplingParams = {},
    opts: GenerateOptions = {},
  ): Promise<Generation[]> {
    return call(async () => {
      const stopIds = sampling.stopIds ?? eosIds(this.config)
      const base = sampling.maxNewTokens
      const reqs = requests.map((r, i) => {
        const budget = r.maxNewTokens ?? base
        if (budget === undefined) {
          throw fail('TRN_ERR_ARG', `requests[${i}]: give maxNewTokens (per request or in sampling)`)
        }
        const seed = r.seed ?? (sampling.seed ?? 0) + i
        if (!r.resume) return { prompt: r.prompt, maxNewTokens: budget, seed }
        if (r.resume.tokens.length > budget) {
          throw fail('TRN_ERR_ARG', `requests[${i}].resume has more tokens than maxNewTokens`)
        }
        const prompt = new Int32Array(r.prompt.length + r.resume.tokens.length)
        prompt.set(r.prompt)
        prompt.set(r.resume.tokens, r.prompt.length)
        return { prompt, maxNewTokens: budget - r.resume.tokens.length, seed }
      })
      const control = new Int32Array(new SharedArrayBuffer(4))
      const onAbort = () => Atomics.store(control, 0, 1)
      if (opts.signal?.aborted) onAbort()
      opts.signal?.addEventListener('abort', onAbort, { once: true })
      try {
        const out = await this.#h.generate(reqs, { ...sampling, stopIds }, control, opts.onProgress ?? null)
        return out.map((g, i) => {
          const prev = requests[i]!.resume
          if (!prev) return g
          const tokens = new Int32Array(prev.tokens.length + g.tokens.length)
          tokens.set(prev.tokens)
          tokens.set(g.tokens, prev.tokens.length)
          const logprobs = new Float32Array(prev.logprobs.length + g.logprobs.length)
          logprobs.set(prev.logprobs)
          logprobs.set(g.logprobs, prev.logprobs.length)
          return { tokens, logprobs, finish: g.finish }
        })
      } finally {
        opts.signal?.removeEventListener('abort', onAbort)
      }
    })
  }

  /**
   * Writes HF safetensors (names as HF Qwen3) and config.json into `dir` (created if missing): one
   * model.safetensors, or shards of at most `maxShardBytes` plus model.safetensors.index.json. Rank 0
   * writes; with a process group every rank must call it. Resolves with the file names written.
   */
  save(dir: string, opts: { dtype?: SaveDtype; maxShardBytes?: number } = {}): Promise<string[]> {
    return call(async () => {
      const dtype = opts.dtype ?? 'bfloat16'
      const writer = this.rank === 0 && this.tpRank === 0
      if (writer) mkdirSync(dir, { recursive: true })
      const files = await this.#h.save(dir, { dtype, maxShardBytes: opts.maxShardBytes ?? 0 })
      if (writer) {
        const cfg = { ...this.config, torch_dtype: dtype }
        writeFileSync(join(dir, 'config.json'), `${JSON.stringify(cfg, null, 2)}\n`)
        files.push('config.json')
      }
      return files
    })
  }

  /** Every parameter by HF name (full tensors, model dtype). Collective with a process group. */
  parameters(): Promise<Record<string, Float32Array | Float64Array>> {
    return call(() => this.#h.parameters())
  }

  /**
   * Writes this rank's training state — its shard of the master weights, the AdamW moments and the
   * optimizer step — to `<dir>/optimizer-rank<r>-of-<W>.safetensors` (dir created if missing). Every rank
   * calls it (it is not collective). With save() it makes a complete checkpoint: loadModel +
   * loadOptimizerState continues training exactly. Resolves with the file name.
   */
  saveOptimizerState(dir: string): Promise<string> {
    return call(async () => {
      mkdirSync(dir, { recursive: true })
      const name = optimizerFile(this.rank, this.worldSize, this.tpRank, this.tpSize)
      await this.#h.saveState(join(dir, name))
      return name
    })
  }

  /**
   * Restores what saveOptimizerState wrote for this rank (same model config and world size; the master
   * weights in it replace the current ones). TRN_ERR_CHECKPOINT when it does not match.
   */
  loadOptimizerState(dir: string): Promise<void> {
    return call(async () => {
      const file = optimizerFile(this.rank, this.worldSize, this.tpRank, this.tpSize)
      const { tensors, metadata } = readSafetensorsFile(join(dir, file))
      if (metadata.format !== 'trn-optimizer') {
        throw fail('TRN_ERR_CHECKPOINT', `${dir}: not an optimizer state file (format ${metadata.format})`)
      }
      const meta = {
        step: Number(metadata.step),
        rank: Number(metadata.rank),
        worldSize: Number(metadata.world_size),
        numParams: Number(metadata.num_params),
      }
      await this.#h.loadState(tensors, meta)
    })
  }

  /** Overwrite one parameter (full value, same on every rank; each keeps its shard). Synchronous. */
  setParameter(name: string, data: Float32Array | Float64Array): void {
    try {
      this.#h.setParameter(name, data)
    } catch (e) {
      throw coded(e)
    }
  }

  /**
   * Sends parameters over an update group (weight publishing by broadcast, e.g. to inference engines that
   * joined `group`): every rank of this model's own process group calls it (the full parameters are
   * gathered collectively); the one that passes `group` — its `root` — broadcasts each named parameter,
   * one tensor per broadcast, in `dtype`. The receivers call receiveParameters with the same names, order
   * and dtype (SGLang's update_weights_from_distributed does the same on its side).
   */
  publishParameters(opts: ParameterTransfer & { group?: ProcessGroup } = {}): Promise<void> {
    return call(() =>
      this.#h.publishParameters({
        ...transfer(opts),
        ...(opts.group ? { group: opts.group.handle } : {}),
      }),
    )
  }

  /**
   * Receives what a publishParameters on `group` sends (this model must have one rank) and keeps it. All
   * tensors arrive before any is applied: a failed transfer leaves the weights unchanged.
   */
  receiveParameters(opts: ParameterTransfer & { group: ProcessGroup }): Promise<void> {
    return call(() => this.#h.receiveParameters({ ...transfer(opts), group: opts.group.handle }))
  }

  /** Frees the parameters and optimizer state; later calls reject with TRN_ERR_DISPOSED. */
  dispose(): void {
    try {
      this.#h.dispose()
    } catch (e) {
      throw coded(e)
    }
  }
}

function transfer(o: ParameterTransfer): { names?: string[]; dtype: SaveDtype; root: number } {
  return { ...(o.names ? { names: o.names } : {}), dtype: o.dtype ?? 'bfloat16', root: o.root ?? 0 }
}

function optimizerFile(rank: number, worldSize: number, tpRank = 0, tpSize = 1): string {
  const tp = tpSize > 1 ? `-tp${tpRank}-of-${tpSize}` : ''
  return `optimizer-rank${rank}-of-${worldSize}${tp}.safetensors`
}

export interface CreateModelOptions extends RunOptions {
  /** HF config (as config.json). */
  config: HfQwen3Config
  /** Seed of the random init (HF's: normal(0, initializer_range) matrices, ones for norms). Default 0. */
  seed?: number
  dtype?: ModelDtype
  /** Shard parameters, gradients and optimizer state over this group (every rank calls with the same seed). */
  processGroup?: ProcessGroup
  /**
   * Tensor parallelism over this group (Megatron-style column/row split of attention heads and MLP; every
   * rank of it gets the same batches); combine with processGroup (the data-parallel group) for dp×tp.
   * Saving, parameters() and publishing gather full HF tensors. Not for generate().
   */
  tensorParallel?: ProcessGroup
}

/** A randomly initialised model; the same seed gives the same weights on every run and rank. */
export function createModel(opts: CreateModelOptions): Promise<Model> {
  return call(async () => {
    const nc = toNativeConfig(opts.config)
    const h = await native().createModel(nc, {
      ...runOptions(opts),
      seed: opts.seed ?? 0,
      dtype: opts.dtype ?? 'float32',
      processGroup: opts.processGroup?.handle,
      ...(opts.tensorParallel ? { tensorParallel: opts.tensorParallel.handle } : {}),
    })
    return new Model(h, opts.config)
  })
}

/** Loads an HF checkpoint directory (config.json + safetensors, sharded or not; F32/F16/BF16/F64). */
export function loadModel(
  dir: string,
  opts: { dtype?: ModelDtype; processGroup?: ProcessGroup; tensorParallel?: ProcessGroup } & RunOptions = {},
): Promise<Model> {
  return call(async () => {
    const config = readHfConfig(dir)
    const tensors = checkpointTensors(dir)
    const h = await native().loadModel(toNativeConfig(config), tensors, {
      ...runOptions(opts),
      dtype: opts.dtype ?? 'float32',
      processGroup: opts.processGroup?.handle,
      ...(opts.tensorParallel ? { tensorParallel: opts.tensorParallel.handle } : {}),
    })
    return new Model(h, config)
  })
}

/** The RunOptions keys that were given (absent keys keep the native defaults). */
function runOptions(o: RunOptions): RunOptions {
  const r: RunOptions = {}
  if (o.device !== undefined) r.device = o.device
  if (o.computeDtype !== undefined) r.computeDtype = o.computeDtype
  if (o.activationCheckpointing !== undefined) r.activationCheckpointing = o.activationCheckpointing
  if (o.checkpointLayers !== undefined) r.checkpointLayers = o.checkpointLayers
  if (o.logitsChunk !== undefined) r.logitsChunk = o.logitsChunk
  if (o.keepSoftmax !== undefined) r.keepSoftmax = o.keepSoftmax
  return r
}

/** Inputs of the standalone PPO loss (all [T]; float64 log-probs). */
export interface PpoLossInputs {
  logprobs: Float64Array
  proxLogprobs: Float64Array | Float32Array
  behaveLogprobs?: Float64Array | Float32Array
  advantages: Float64Array | Float32Array
  lossMask: Uint8Array
  /** Sequence boundaries (for the sequence-level ratio). */
  cuSeqlens: Int32Array
}

export interface PpoLossResult {
  loss: number
  /** Float64Array [T]: d loss / d logprobs. */
  grad: Float64Array
  stats: LossStats
}

/**
 * The exact PPO loss ppoStep uses, on given log-probs (float64, synchronous, small inputs): its value and
 * gradient w.r.t. the log-probs. `denom` defaults to the number of loss tokens.
 */
export function ppoLoss(inputs: PpoLossInputs, loss: PpoLossConfig, denom?: number): PpoLossResult {
  try {
    return native().ppoLoss(inputs, loss, denom)
  } catch (e) {
    throw coded(e)
  }
}

/** The learning rate the optimizer uses at 0-based step `step`. */
export function lrAt(optim: OptimizerConfig, step: number): number {
  try {
    return native().lrAt(optim, step)
  } catch (e) {
    throw coded(e)
  }
}

/** libtorch intra-op threads for this process (all models). */
export function setNumThreads(n: number): void {
  try {
    native().setNumThreads(n)
  } catch (e) {
    throw coded(e)
  }
}

export function numThreads(): number {
  return native().numThreads()
}

export function buildInfo(): BuildInfo {
  return native().buildInfo()
}

/** CUDA devices this process can use (0 with a CPU-only addon or no GPU). */
export function cudaDeviceCount(): number {
  return native().cudaDeviceCount()
}

/** Bytes of libtorch's CUDA caching allocator on one device. */
export interface CudaMemory {
  allocatedBytes: number
  /** Most allocated at once since the process started or the last reset. */
  peakBytes: number
  reservedBytes: number
}

/**
 * The caching allocator's counters for `device` ('cuda' | 'cuda:N'); `resetPeak` starts a new peak after
 * reading. TRN_ERR_DEVICE without CUDA, TRN_ERR_ARG for 'cpu'.
 */
export function cudaMemory(device: DeviceName, resetPeak = false): CudaMemory {
  try {
    return native().cudaMemory(device, resetPeak)
  } catch (e) {
    throw coded(e)
  }
}
