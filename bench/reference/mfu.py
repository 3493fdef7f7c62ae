"""Model FLOPs utilisation of one PPO step (forward + backward), the one formula of the Python side.

bench/gpu/mfu.ts is the TypeScript twin; keep the two identical (test/native/gpu-scripts.test.ts checks
both against a hand computation).

  flops per step per GPU = 6·P·T + 12·L·nH·hd·Σ_s s_len·(s_len+1)/2
    P  matmul parameters (qwen3_ref.matmul_params: decoder-layer matrices + lm_head V·H)
    T  tokens per GPU per step
    L  layers, nH query heads, hd head dim; the sum runs over this GPU's packed sequences
       (causal attention: query i sees i+1 keys; QKᵀ and AV are 2 matmuls × 2 flops × hd per pair per
       head, forward + backward = 3×, hence 12)
  mfu = flops / step_s / peak, peak = 989e12 (H100 SXM bf16 dense; H200 has the same SMs and clocks)
"""

from __future__ import annotations

H100_BF16_PEAK = 989e12


def step_flops(
    matmul_params: int, tokens: int, layers: int, heads: int, head_dim: int, seq_lens: list[int]
) -> float:
    attn_pairs = sum(s * (s + 1) // 2 for s in seq_lens)
    return 6.0 * matmul_params * tokens + 12.0 * layers * heads * head_dim * attn_pairs


def mfu(flops: float, step_s: float, peak: float = H100_BF16_PEAK) -> float:
    return flops / step_s / peak


if __name__ == '__main__':  # hand check, used by the mocha test: prints the flops of a given case
    import sys

    p, t, layer, h, hd = (int(a) for a in sys.argv[1:6])
    lens = [int(a) for a in sys.argv[6].split(',')]
    print(repr(step_flops(p, t, layer, h, hd, lens)))
