#!/usr/bin/env python3
"""The bf16 noise floor of one PPO update in plain PyTorch: what bench/gpu/parity.ts's update check
(native bf16 on the GPU vs float32 on the CPU, per parameter ‖Δbf16 − Δfp32‖ / ‖Δfp32‖) can expect
from bf16 rounding alone, with the same recipe:

  python3 bench/reference/update_noise.py [--config configs/models/qwen3-debug/config.json] [--seeds 3]

Model qwen3_ref (random init), sequences of 40, 64 and 100 random tokens, loss mask all but each first
token, advantages ~ U(−1, 1), prox = the float32 model's log-probs, behave = prox + U(−0.05, 0.05),
decoupled PPO loss (ε 0.2), grad-norm clip 1, first AdamW step with lr 1, eps 1 (Δ = −g / (|g| + 1),
linear in the gradient). Float32: the model as is. bf16: a copy with bfloat16 weights (what bf16 compute
over float32 masters sees), log-softmax in float32, gradients cast back to float32. Prints the per-tensor
relative error of Δ for each seed and the worst over seeds.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qwen3_ref import Qwen3Config, Qwen3ForCausalLM, init_weights  # noqa: E402

LENGTHS = (40, 64, 100)


def seq_logprobs(model: Qwen3ForCausalLM, ids: list[torch.Tensor]) -> torch.Tensor:
    out = []
    for seq in ids:
        logits = model(seq[None])[0]
        lp = logits[:-1].float().log_softmax(-1).gather(-1, seq[1:, None]).squeeze(-1)
        out.append(torch.cat([lp.new_zeros(1), lp]))
    return torch.cat(out)


def update(model: Qwen3ForCausalLM, ids, mask, adv, prox, behave) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    lp = seq_logprobs(model, ids)
    ratio = torch.exp(lp - prox)
    per_token = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.2))
    loss = (mask * torch.exp(prox - behave) * per_token).sum() / mask.sum()
    loss.backward()
    grads = {n: p.grad.float() for n, p in model.named_parameters()}
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values()))
    scale = min(1.0, 1.0 / (norm.item() + 1e-6))
    return {n: -(g * scale) / ((g * scale).abs() + 1.0) for n, g in grads.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument('--config', default='configs/models/qwen3-debug/config.json')
    p.add_argument('--seeds', type=int, default=3)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = p.parse_args()
    torch.set_float32_matmul_precision('highest')
    cfg = Qwen3Config.from_json(args.config)
    dev = torch.device(args.device)
    worst: dict[str, float] = {}
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        with dev:
            m32 = Qwen3ForCausalLM(cfg)
        init_weights(m32)
        m16 = copy.deepcopy(m32).to(torch.bfloat16)
        g = torch.Generator().manual_seed(100 + seed)
        ids = [torch.randint(0, cfg.vocab_size, (n,), generator=g).to(dev) for n in LENGTHS]
        mask = torch.cat([torch.cat([torch.zeros(1), torch.ones(n - 1)]) for n in LENGTHS]).to(dev)
        adv = (torch.rand(sum(LENGTHS), generator=g) * 2 - 1).to(dev)
        with torch.no_grad():
            prox = seq_logprobs(m32, ids)
        behave = prox + (torch.rand(sum(LENGTHS), generator=g) - 0.5).to(dev) * 0.1
        d32 = update(m32, ids, mask, adv, prox, behave)
        d16 = update(m16, ids, mask, adv, prox, behave)
        num = den = 0.0
        print(f'seed {seed}: {"parameter":<46} {"‖Δfp32‖":>10} {"rel bf16":>10}')
        for name, a in d32.items():
            b = d16[name]
            rel = ((b - a).norm() / a.norm()).item()
            num += ((b - a) ** 2).sum().item()
            den += (a**2).sum().item()
            worst[name] = max(worst.get(name, 0.0), rel)
            print(f'        {name:<46} {a.norm().item():>10.3e} {rel:>10.3e}')
        print(f'        global {(num / den) ** 0.5:.3e}')
    top = max(worst.values())
    print(f'NOISE worst_tensor_rel={top:.3e} ({max(worst, key=worst.get)})')


if __name__ == '__main__':
    main()
