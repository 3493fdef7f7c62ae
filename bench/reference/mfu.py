"""Model FLOPs utilisation of one PPO step (forward + backward), the one formula of the Python side
(standard library only, so CI can run it without torch).

bench/gpu/mfu.ts is the TypeScript twin; keep the two identical (test/native/gpu-scripts.test.ts checks
both against a hand computation).

  flops per step per GPU = 6·P·T + 12·L·nH·hd·Σ_s s_len·(s_len+1)/2
    P  matmul parameters (matmul_params: every decoder-layer weight matrix + the lm_head matrix V·H,
       counted when tied too; embedding lookup and norms excluded)
    T  tokens per GPU per step
    L  layers, nH query heads, hd head dim; the sum runs over this GPU's packed sequences
       (causal attention: query i sees i+1 keys; QKᵀ and AV are 2 matmuls × 2 flops × hd per pair per
       head, forward + backward = 3×, hence 12)
  mfu = flops / step_s / peak, peak = 989e12 (H100 SXM bf16 dense; H200 has the same SMs and clocks)

  python3 bench/reference/mfu.py CONFIG.json TOKENS SEQLEN   → {"matmul_params": P, "flops": F} (JSON)
"""

from __future__ import annotations

H100_BF16_PEAK = 989e12


def matmul_params(cfg) -> int:
    """P for a config object with HF Qwen3 attribute names (qwen3_ref.Qwen3Config, defaults applied)."""
    h, q, kv = cfg.hidden_size, cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * cfg.intermediate_size
    return cfg.num_hidden_layers * per_layer + cfg.vocab_size * h


def step_flops(
    matmul_params: int, tokens: int, layers: int, heads: int, head_dim: int, seq_lens: list[int]
) -> float:
    attn_pairs = sum(s * (s + 1) // 2 for s in seq_lens)
    return 6.0 * matmul_params * tokens + 12.0 * layers * heads * head_dim * attn_pairs


def mfu(flops: float, step_s: float, peak: float = H100_BF16_PEAK) -> float:
    return flops / step_s / peak


if __name__ == '__main__':
    import json
    import sys
    from types import SimpleNamespace

    with open(sys.argv[1], encoding='utf-8') as f:
        raw = json.load(f)
    heads = raw['num_attention_heads']
    cfg = SimpleNamespace(
        hidden_size=raw['hidden_size'],
        intermediate_size=raw['intermediate_size'],
        num_hidden_layers=raw['num_hidden_layers'],
        num_attention_heads=heads,
        num_key_value_heads=raw.get('num_key_value_heads') or heads,
        head_dim=raw.get('head_dim') or raw['hidden_size'] // heads,
        vocab_size=raw['vocab_size'],
    )
    tokens, seqlen = int(sys.argv[2]), int(sys.argv[3])
    p = matmul_params(cfg)
    flops = step_flops(p, tokens, cfg.num_hidden_layers, heads, cfg.head_dim, [seqlen] * (tokens // seqlen))
    print(json.dumps({'matmul_params': p, 'flops': flops}))
