#!/usr/bin/env python3
"""Writes a parity case for bench/gpu/hf_parity.py from the PyTorch reference model instead of the native
trainer: checks that qwen3_ref.py is the Qwen3 that transformers implements (and exercises hf_parity.py
without the addon).

  python3 bench/reference/parity_case.py --config configs/models/qwen3-50m/config.json --dir D \
      [--lengths 37,200,511] [--seed 0]
  python3 bench/gpu/hf_parity.py --dir D

Writes the layout of bench/gpu/parity.ts: D/model (config.json + model.safetensors, float32, HF names),
D/batch.json {inputIds, cuSeqlens}, D/native-float32.f32 and D/native-bfloat16.f32 (little-endian float32
[T], lp[i] = log p(ids[i] | earlier ids of its sequence), 0 at each sequence's first token). The bf16 case
runs the model with its weights cast to bfloat16 (what bf16 compute of fp32 master weights sees).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qwen3_ref import Qwen3Config, Qwen3ForCausalLM, hf_state_dict, init_weights  # noqa: E402


@torch.no_grad()
def packed_logprobs(model: Qwen3ForCausalLM, ids: torch.Tensor, cu: list[int]) -> torch.Tensor:
    out = torch.zeros(ids.numel(), dtype=torch.float32)
    for a, b in zip(cu[:-1], cu[1:]):
        seq = ids[a:b][None]
        logits = model(seq)[0]
        lp = logits[:-1].float().log_softmax(-1).gather(-1, seq[0, 1:, None]).squeeze(-1)
        out[a + 1 : b] = lp.cpu()
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument('--config', required=True)
    p.add_argument('--dir', required=True)
    p.add_argument('--lengths', default='37,200,511')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = p.parse_args()
    torch.set_float32_matmul_precision('highest')  # fp32 means fp32, not TF32
    cfg = Qwen3Config.from_json(args.config)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    with device:
        model = Qwen3ForCausalLM(cfg)
    init_weights(model)
    model.eval()

    os.makedirs(os.path.join(args.dir, 'model'), exist_ok=True)
    from safetensors.torch import save_file

    save_file(
        {k: v.cpu() for k, v in hf_state_dict(model).items()},
        os.path.join(args.dir, 'model', 'model.safetensors'),
        metadata={'format': 'pt'},
    )
    with open(args.config, encoding='utf-8') as f:
        hf_cfg = json.load(f)
    hf_cfg['torch_dtype'] = 'float32'
    with open(os.path.join(args.dir, 'model', 'config.json'), 'w', encoding='utf-8') as f:
        json.dump(hf_cfg, f, indent=2)

    lengths = [int(x) for x in args.lengths.split(',')]
    g = torch.Generator().manual_seed(args.seed + 1)
    ids = torch.randint(0, cfg.vocab_size, (sum(lengths),), generator=g)
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    with open(os.path.join(args.dir, 'batch.json'), 'w', encoding='utf-8') as f:
        json.dump({'inputIds': ids.tolist(), 'cuSeqlens': cu}, f)

    ids_dev = ids.to(device)
    for dtype, name in ((torch.float32, 'float32'), (torch.bfloat16, 'bfloat16')):
        model.to(dtype)
        lp = packed_logprobs(model, ids_dev, cu)
        lp.numpy().astype('<f4').tofile(os.path.join(args.dir, f'native-{name}.f32'))
    print(f'parity case written to {args.dir}: {len(lengths)} sequences, {ids.numel()} tokens')


if __name__ == '__main__':
    main()
