/**
 * Model FLOPs utilisation of one PPO step (forward + backward): the one formula of the TypeScript side.
 * bench/reference/mfu.py (with qwen3_ref.matmul_params) is its Python twin; keep them identical
 * (test/native/gpu-scripts.test.ts checks both against a hand computation).
 *
 *   flops per step per GPU = 6·P·T + 12·L·nH·hd·Σ_s s_len·(s_len+1)/2
 *     P   matmul parameters: every decoder-layer weight matrix + the lm_head matrix V·H (counted when
 *         tied too); embedding lookup and norms excluded
 *     T   tokens per GPU per step
 *     L   layers, nH query heads, hd head dim; the sum runs over this GPU's packed sequences (causal
 *         attention: query i sees i+1 keys; QKᵀ and AV are 2 matmuls × 2 flops × hd per pair and head,
 *         forward + backward = 3×, hence 12)
 *   mfu = flops / step_s / peak,  peak = 989e12 (H100 SXM bf16 dense; the H200 has the same SMs/clocks)
 */
import type { HfQwen3Config } from '../../native/index.ts'

/** H100 SXM bf16 dense peak, FLOP/s; used for the H200 as well. */
export const H100_BF16_PEAK = 989e12

/** P of the formula for an HF Qwen3 config (defaults as HF's: kv heads = heads, hd = hidden / heads). */
export function matmulParams(cfg: HfQwen3Config): number {
  const h = cfg.hidden_size
  const heads = cfg.num_attention_heads
  const hd = cfg.head_dim ?? h / heads
  const q = heads * hd
  const kv = (cfg.num_key_value_heads ?? heads) * hd
  const perLayer = h * q + 2 * h * kv + q * h + 3 * h * cfg.intermediate_size
  return cfg.num_hidden_layers * perLayer + cfg.vocab_size * h
}

/** FLOPs of one step on one GPU that trains `tokens` tokens packed as sequences of `seqLens`. */
export function stepFlops(cfg: HfQwen3Config, tokens: number, seqLens: readonly number[]): number {
  const hd = cfg.head_dim ?? cfg.hidden_size / cfg.num_attention_heads
  let pairs = 0
  for (const s of seqLens) pairs += (s * (s + 1)) / 2
  return 6 * matmulParams(cfg) * tokens + 12 * cfg.num_hidden_layers * cfg.num_attention_heads * hd * pairs
}

/** Fraction of the peak that `flops` per `stepSeconds` reach. */
export function mfu(flops: number, stepSeconds: number, peak = H100_BF16_PEAK): number {
  return flops / stepSeconds / peak
}
