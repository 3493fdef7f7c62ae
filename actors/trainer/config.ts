/**
 * The trainer's config (`actor:` in configs/*.yaml, AReaL's name for the policy being trained), as a
 * schema of runtime/config.ts. PPO knobs mirror native PpoLossConfig, the optimizer native
 * OptimizerConfig (the LR schedule is evaluated here per optimizer step, so it survives a restart).
 */
import type { OptimizerConfig, PpoLossConfig, SaveDtype } from '../../native/index.ts'
import { type ConfigOf, c } from '../../runtime/config.ts'
import { modelSourceSchema } from './model-source.ts'

export const trainerSchema = c.obj({
  model: modelSourceSchema,
  threads: c.int(0, { min: 0, doc: 'libtorch intra-op threads per rank (0 = libtorch default)' }),
  world_size: c.int(1, { min: 1, doc: 'trainer ranks (the launcher sets it from allocation_mode)' }),
  tp_size: c.int(1, {
    min: 1,
    doc: 'tensor-parallel ranks per data-parallel replica (archon:dXtY: t; the launcher sets it)',
  }),
  rendezvous: c.str('', {
    doc: "FileStore path for the ranks' Gloo group (fresh per job; the launcher sets it)",
  }),
  collective_timeout_ms: c.int(300_000, { min: 1000, doc: 'rendezvous and collective timeout' }),
  fetch_timeout_ms: c.int(120_000, { min: 1, doc: 'timeout of proxy:fetch' }),
  step_timeout_ms: c.int(3_600_000, { min: 1, doc: "timeout of a rank's share of a step (trainer:shard)" }),
  publish_dtype: c.enum(['float32', 'bfloat16', 'float16'] as const, 'float32', {
    doc: 'dtype of published weights (float32 keeps engine and trainer log-probs identical on CPU)',
  }),
  publish_mode: c.enum(['disk', 'broadcast'] as const, 'disk', {
    doc: 'disk: safetensors the engines load; broadcast: SGLang update_weights_from_distributed (NCCL/Gloo)',
  }),
  broadcast: c.obj({
    group_name: c.str('areal_weight_update', { doc: 'update group name (also its store-key prefix)' }),
    master_address: c.str('127.0.0.1', { doc: "address the servers reach trainer rank 0's TCPStore at" }),
    bucket_mb: c.int(512, { min: 1, doc: 'at most this many MB per bucket (one HTTP request per bucket)' }),
    timeout_ms: c.int(300_000, { min: 1000, doc: 'rendezvous and per-broadcast limit' }),
  }),
  ppo: c.obj({
    eps_clip: c.num(0.2, { min: 0 }),
    eps_clip_higher: c.opt(c.num(undefined, { min: 0 }), { doc: 'upper clip ε_high (default eps_clip)' }),
    dual_clip: c.num(0, { min: 0, doc: 'dual-clip c > 1; 0 = off' }),
    behav_imp_weight_cap: c.num(5, { min: 0, doc: 'cap of πprox/πbehave; 0 = no cap' }),
    behav_imp_weight_mode: c.enum(['mask', 'clamp'] as const, 'mask'),
    sequence_level: c.bool(false, { doc: 'GSPO: one ratio per sequence' }),
    entropy_coef: c.num(0, { min: 0, doc: 'entropy bonus: loss −= c · mean entropy over loss tokens' }),
    temperature: c.num(1, { min: 0, doc: 'must equal the sampling temperature (gconfig.temperature)' }),
    minibatches: c.int(1, { min: 1, doc: 'optimizer steps per train step (the batch split by tokens)' }),
    mb_max_tokens: c.int(8192, { min: 2, doc: 'token budget of one micro-batch (forward/backward unit)' }),
  }),
  optimizer: c.obj({
    lr: c.num(1e-5, { min: 0 }),
    betas: c.list(c.num(), [0.9, 0.999]),
    eps: c.num(1e-8, { min: 0 }),
    weight_decay: c.num(0, { min: 0 }),
    max_grad_norm: c.num(1, { min: 0, doc: '0 = no clipping' }),
    schedule: c.enum(['constant', 'linear', 'cosine'] as const, 'constant'),
    warmup_steps: c.int(0, { min: 0 }),
    total_steps: c.int(0, { min: 0, doc: 'end of the linear/cosine decay, in optimizer steps' }),
    min_lr_ratio: c.num(0, { min: 0, max: 1 }),
  }),
  reward: c.obj({
    bias: c.num(0, { doc: "r' = clip((r + bias)·scale, ±clip)" }),
    scale: c.num(1),
    clip: c.num(0, { min: 0, doc: '0 = no clipping' }),
  }),
  adv: c.obj({
    norm: c.enum(['batch', 'group', 'none'] as const, 'batch', {
      doc: 'normalise advantages over the loss tokens of the batch or of each group (mean/std, eps 1e-5)',
    }),
    gamma: c.num(1, {
      min: 0,
      max: 1,
      doc: "discount over a sample's output tokens (1: each gets the reward)",
    }),
    lam: c.num(1, { min: 0, max: 1, doc: 'GAE λ (critic-free: multiplies gamma)' }),
  }),
})

export type TrainerConfig = ConfigOf<typeof trainerSchema>

export function lossConfig(cfg: TrainerConfig): PpoLossConfig {
  const p = cfg.ppo
  return {
    epsClip: p.eps_clip,
    epsClipHigher: p.eps_clip_higher,
    dualClip: p.dual_clip,
    behavImpWeightCap: p.behav_imp_weight_cap,
    behavImpWeightMode: p.behav_imp_weight_mode,
    sequenceLevel: p.sequence_level,
    entropyCoef: p.entropy_coef,
    // greedy sampling (0) reports log-probs at temperature 1
    temperature: p.temperature > 0 ? p.temperature : 1,
  }
}

export function optimizerConfig(cfg: TrainerConfig): OptimizerConfig {
  const o = cfg.optimizer
  return {
    lr: o.lr,
    betas: [o.betas[0] ?? 0.9, o.betas[1] ?? 0.999],
    eps: o.eps,
    weightDecay: o.weight_decay,
    maxGradNorm: o.max_grad_norm,
    schedule: {
      kind: o.schedule,
      warmupSteps: o.warmup_steps,
      totalSteps: o.total_steps,
      minLrRatio: o.min_lr_ratio,
    },
  }
}

export const publishDtype = (cfg: TrainerConfig): SaveDtype => cfg.publish_dtype
