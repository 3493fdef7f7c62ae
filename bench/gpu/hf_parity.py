#!/usr/bin/env python3
"""Native log-probs vs Hugging Face transformers' Qwen3 on the same weights.

  python3 bench/gpu/hf_parity.py --dir D [--out D/parity.json] [--device cuda]

D (written by bench/gpu/parity.ts, or by bench/reference/parity_case.py for the PyTorch reference):
  model/                 config.json + model.safetensors (native save(dir, {dtype: 'float32'}))
  batch.json             {"inputIds": [...], "cuSeqlens": [...]}  (packed sequences)
  native-float32.f32     little-endian float32 [T]: native log-probs, computeDtype float32
  native-bfloat16.f32    the same with computeDtype bfloat16
Alignment of every [T] array: lp[i] = log p(ids[i] | earlier ids of the same sequence), 0 at each
sequence's first token.

Checks (exit 1 if any fails):
  - the checkpoint loads in transformers with no missing, unexpected or mismatched keys;
  - ‖native_fp32 − hf_fp32‖ / ‖hf_fp32‖ ≤ 1e-4   (HF in float32, eager attention, no TF32);
  - ‖native_bf16 − hf_bf16‖ / ‖hf_bf16‖ ≤ 1e-2   (HF with its weights cast to bfloat16).
Printed for information: native bf16 vs HF fp32 and HF bf16 vs HF fp32 (the bf16 noise floor).
HF runs each sequence on its own (positions from 0), so this also checks the native packing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch

TOL_FP32 = 1e-4
TOL_BF16 = 1e-2


def read_f32(path: str, n: int) -> torch.Tensor:
    with open(path, 'rb') as f:
        raw = f.read()
    if len(raw) != 4 * n:
        raise SystemExit(f'{path}: {len(raw)} bytes, expected {4 * n} (float32 × {n} tokens)')
    return torch.frombuffer(bytearray(raw), dtype=torch.float32).clone()


def load_hf(model_dir: str, device: torch.device):
    import transformers
    from transformers import AutoModelForCausalLM

    kwargs = {'attn_implementation': 'eager', 'output_loading_info': True}
    try:  # transformers ≥ 4.56 / 5.x: dtype=
        model, info = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, **kwargs)
    except TypeError:  # older: torch_dtype=
        model, info = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, **kwargs)
    model = model.to(device).float().eval()
    return model, info, transformers.__version__


@torch.no_grad()
def hf_logprobs(model, ids: torch.Tensor, cu: list[int], device: torch.device) -> torch.Tensor:
    out = torch.zeros(ids.numel(), dtype=torch.float64)
    for a, b in zip(cu[:-1], cu[1:]):
        seq = ids[a:b].to(device)[None]
        logits = model(input_ids=seq, use_cache=False).logits[0]
        lp = logits[:-1].float().log_softmax(-1).gather(-1, seq[0, 1:, None]).squeeze(-1)
        out[a + 1 : b] = lp.double().cpu()
    return out


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.double(), ref.double()
    den = ref.norm().item()
    return (a - ref).norm().item() / den if den > 0 else math.inf


def main() -> int:
    p = argparse.ArgumentParser(description='native log-probs vs HF transformers Qwen3')
    p.add_argument('--dir', required=True)
    p.add_argument('--out', help='JSON result (default DIR/parity.json)')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = p.parse_args()
    out_path = args.out or os.path.join(args.dir, 'parity.json')
    torch.set_float32_matmul_precision('highest')  # fp32 reference means fp32 matmuls, not TF32
    device = torch.device(args.device)

    with open(os.path.join(args.dir, 'batch.json'), encoding='utf-8') as f:
        batch = json.load(f)
    ids = torch.tensor(batch['inputIds'], dtype=torch.long)
    cu = [int(x) for x in batch['cuSeqlens']]
    n = ids.numel()
    if cu[0] != 0 or cu[-1] != n or any(b <= a for a, b in zip(cu[:-1], cu[1:])):
        raise SystemExit(f'batch.json: cuSeqlens {cu} does not partition {n} tokens')
    native = {
        'float32': read_f32(os.path.join(args.dir, 'native-float32.f32'), n),
        'bfloat16': read_f32(os.path.join(args.dir, 'native-bfloat16.f32'), n),
    }

    model, info, tf_version = load_hf(os.path.join(args.dir, 'model'), device)
    loading = {k: sorted(map(str, info.get(k) or [])) for k in ('missing_keys', 'unexpected_keys', 'mismatched_keys')}
    loading_ok = not any(loading.values())
    print(f'transformers {tf_version}, torch {torch.__version__}, device {device}'
          + (f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''))
    print(f'{len(cu) - 1} sequences, {n} tokens; checkpoint loads cleanly: {loading_ok}'
          + ('' if loading_ok else f' {loading}'))

    hf32 = hf_logprobs(model, ids, cu, device)
    model.to(torch.bfloat16)
    hf16 = hf_logprobs(model, ids, cu, device)

    rows = [
        ('native fp32 vs hf fp32', native['float32'], hf32, TOL_FP32),
        ('native bf16 vs hf bf16', native['bfloat16'], hf16, TOL_BF16),
        ('native bf16 vs hf fp32', native['bfloat16'], hf32, None),
        ('hf bf16 vs hf fp32', hf16, hf32, None),
    ]
    checks = []
    print(f'{"comparison":<24} {"rel err":>10} {"max abs":>10} {"tol":>8}  result')
    for name, a, ref, tol in rows:
        err = rel_err(a, ref)
        max_abs = (a.double() - ref.double()).abs().max().item()
        ok = None if tol is None else bool(err <= tol)
        verdict = 'info' if ok is None else ('ok' if ok else 'FAIL')
        tol_s = '-' if tol is None else f'{tol:.0e}'
        print(f'{name:<24} {err:>10.3e} {max_abs:>10.3e} {tol_s:>8}  {verdict}')
        if ok is False:
            i = int((a.double() - ref.double()).abs().argmax())
            pairs = ', '.join(f'{a[j].item():.6f} vs {ref[j].item():.6f}' for j in range(1, min(6, n)))
            print(f'  first pairs: {pairs}; worst at token {i}: {a[i].item():.6f} vs {ref[i].item():.6f}')
        checks.append({'name': name, 'relErr': err, 'maxAbs': max_abs, 'tol': tol, 'ok': ok})

    ok = loading_ok and all(c['ok'] is not False for c in checks)
    result = {
        'ok': ok,
        'loading': loading,
        'loadingOk': loading_ok,
        'checks': checks,
        'tokens': n,
        'sequences': len(cu) - 1,
        'transformers': tf_version,
        'torch': torch.__version__,
        'device': str(device),
        'card': torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu',
    }
    with open(out_path, 'w', encoding='utf-8') as f:
        json.dump(result, f, indent=2)
    print(f'PARITY ok={str(ok).lower()} fp32={checks[0]["relErr"]:.3e} bf16={checks[1]["relErr"]:.3e}')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
