#!/usr/bin/env python3
"""The PyTorch reference of `npm run bench:gpu`: one PPO update (forward + backward + AdamW) of a random
Qwen3 in eager PyTorch, sharded with FSDP2, timed the same way as the native trainer.

  python3 bench/reference/ppo_ref.py --config configs/models/qwen3-1.7b/config.json \
      --tokens 16384 --seqlen 2048 --steps 5 --warmup 2 --ckpt [--seed 0] [--out result.json]
  python3 -m torch.distributed.run --standalone --nproc_per_node N bench/reference/ppo_ref.py …

What it does (the common way, nothing fused by hand):
  - model: qwen3_ref.Qwen3ForCausalLM from config.json, init normal(0, initializer_range) (same seed on
    every rank), fp32 parameters, FSDP2: fully_shard per decoder layer, then the root (embedding, final
    norm, lm_head), MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32);
  - attention: F.scaled_dot_product_attention(is_causal=True, enable_gqa=True) on [S, heads, L, hd],
    restricted to the flash backend (--sdpa auto lets PyTorch choose);
  - --ckpt: per-layer activation checkpointing (torch.utils.checkpoint, use_reentrant=False);
  - log-probs: full logits [S, L, V] from lm_head in bf16, `.float().log_softmax(-1)`, gather;
  - loss: decoupled PPO (DESIGN §5): ρ = exp(lp − prox), L = max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)), ε = 0.2,
    w = exp(prox − behave) uncapped, loss = Σ mask·w·L / Σ mask; FSDP averages gradients over ranks
    (each rank has the same number of loss tokens, so that is the global token mean);
  - clip_grad_norm_(1.0), torch.optim.AdamW(lr=1e-6, fused=True).
Inputs per rank (seed + rank): S = tokens/seqlen sequences of random ids, loss mask all tokens but each
sequence's first, advantages ~ N(0, 1), prox = behave ~ U(−3, −0.1).

Timing: `--warmup` untimed steps, then `--steps` steps each between torch.cuda.synchronize() calls
(perf_counter); the slowest rank's time per step, median over steps. tok_s is per GPU (tokens / step_s).
MFU: mfu.py. Prints progress on stderr, then the JSON (also to --out), last line
`REF tok_s=… mfu=… step_s=…`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mfu import H100_BF16_PEAK, matmul_params, mfu, step_flops  # noqa: E402
from qwen3_ref import Qwen3Config, Qwen3ForCausalLM, init_weights  # noqa: E402

EPS_CLIP = 0.2
LR = 1e-6
MAX_GRAD_NORM = 1.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--config', required=True, help='HF Qwen3 config.json')
    p.add_argument('--tokens', type=int, default=16384, help='tokens per GPU per step')
    p.add_argument('--seqlen', type=int, default=2048, help='length of each packed sequence')
    p.add_argument('--steps', type=int, default=5, help='timed steps')
    p.add_argument('--warmup', type=int, default=2, help='untimed steps first')
    p.add_argument('--ckpt', action='store_true', help='activation checkpointing per decoder layer')
    p.add_argument('--ckpt-layers', type=int, default=-1,
                   help='with --ckpt: checkpoint only the first N decoder layers (-1: all)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--sdpa', choices=['flash', 'auto'], default='flash', help='SDPA backend')
    p.add_argument('--out', help='also write the JSON result here')
    a = p.parse_args()
    if a.tokens <= 0 or a.seqlen <= 1 or a.tokens % a.seqlen:
        p.error(f'--tokens ({a.tokens}) must be a positive multiple of --seqlen ({a.seqlen} > 1)')
    if a.steps < 1 or a.warmup < 0:
        p.error('--steps must be ≥ 1 and --warmup ≥ 0')
    return a


def log(rank: int, msg: str) -> None:
    if rank == 0:
        print(f'[ref {time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def init_distributed() -> tuple[int, int, torch.device]:
    """Under torchrun the environment names rank and world; run plainly, this process is a world of 1."""
    if 'RANK' not in os.environ:
        os.environ.update(
            RANK='0', WORLD_SIZE='1', LOCAL_RANK='0', MASTER_ADDR='127.0.0.1', MASTER_PORT=str(free_port())
        )
    if not torch.cuda.is_available():
        raise SystemExit('ppo_ref.py needs a CUDA device (torch.cuda.is_available() is False)')
    local = int(os.environ.get('LOCAL_RANK', '0'))
    device = torch.device('cuda', local)
    torch.cuda.set_device(device)
    dist.init_process_group('nccl', device_id=device)
    return dist.get_rank(), dist.get_world_size(), device


def fsdp_api():
    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    except ImportError:  # PyTorch < 2.6 kept FSDP2 under _composable
        from torch.distributed._composable.fsdp import MixedPrecisionPolicy, fully_shard
    return fully_shard, MixedPrecisionPolicy


def build_model(cfg: Qwen3Config, seed: int, ckpt: bool, device: torch.device,
                ckpt_layers: int = -1) -> Qwen3ForCausalLM:
    fully_shard, MixedPrecisionPolicy = fsdp_api()
    torch.manual_seed(seed)  # same weights on every rank before sharding
    with device:
        model = Qwen3ForCausalLM(cfg)
    init_weights(model)
    model.model.activation_checkpointing = ckpt
    model.model.checkpoint_layers = ckpt_layers
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for layer in model.model.layers:
        fully_shard(layer, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    return model


def make_inputs(cfg: Qwen3Config, tokens: int, seqlen: int, seed: int, device: torch.device) -> dict:
    """One rank's batch, [S, L] each, drawn on the CPU (same numbers on any card)."""
    g = torch.Generator().manual_seed(seed)
    shape = (tokens // seqlen, seqlen)
    ids = torch.randint(0, cfg.vocab_size, shape, generator=g)
    mask = torch.ones(shape)
    mask[:, 0] = 0  # a sequence's first token has no prediction
    adv = torch.randn(shape, generator=g)
    prox = -3.0 + 2.9 * torch.rand(shape, generator=g)  # U(−3, −0.1)
    return {
        'ids': ids.to(device),
        'mask': mask.to(device),
        'adv': adv.to(device),
        'prox': prox.to(device),
        'behave': prox.clone().to(device),
    }


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """lp[s, i] = log p(ids[s, i] | ids[s, :i]) in fp32, 0 at i = 0 (the native layout)."""
    lsm = logits[:, :-1].float().log_softmax(-1)
    lp = lsm.gather(-1, ids[:, 1:, None]).squeeze(-1)
    return F.pad(lp, (1, 0))


def ppo_loss(
    lp: torch.Tensor, prox: torch.Tensor, behave: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    ratio = torch.exp(lp - prox)
    clipped = ratio.clamp(1.0 - EPS_CLIP, 1.0 + EPS_CLIP)
    per_token = torch.maximum(-adv * ratio, -adv * clipped)
    weight = torch.exp(prox - behave)  # decoupled behaviour weight πprox/πbehave, uncapped
    return (mask * weight * per_token).sum() / mask.sum()


def main() -> None:
    args = parse_args()
    cfg = Qwen3Config.from_json(args.config)
    rank, world, device = init_distributed()
    card = torch.cuda.get_device_name(device)
    log(rank, f'{card}, torch {torch.__version__}, world {world}, config {args.config}')

    t0 = time.perf_counter()
    model = build_model(cfg, args.seed, args.ckpt, device, args.ckpt_layers)
    n_params = sum(p.numel() for p in model.parameters())  # DTensor numel is the global size
    opt = torch.optim.AdamW(model.parameters(), lr=LR, fused=True)
    batch = make_inputs(cfg, args.tokens, args.seqlen, args.seed + rank, device)
    log(rank, f'model {n_params / 1e9:.3f}B params built and sharded in {time.perf_counter() - t0:.1f} s')

    if args.sdpa == 'flash':
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = sdpa_kernel([SDPBackend.FLASH_ATTENTION])
    else:
        import contextlib

        backend = contextlib.nullcontext()

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        logits = model(batch['ids'])
        lp = token_logprobs(logits, batch['ids'])
        del logits
        loss = ppo_loss(lp, batch['prox'], batch['behave'], batch['adv'], batch['mask'])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        opt.step()
        return loss.detach()

    times: list[float] = []
    losses: list[float] = []
    with backend:
        for i in range(args.warmup + args.steps):
            torch.cuda.synchronize(device)
            t = time.perf_counter()
            loss = step()
            torch.cuda.synchronize(device)
            dt = time.perf_counter() - t
            timed = i >= args.warmup
            if timed:
                times.append(dt)
            losses.append(float(loss))
            log(rank, f'{"step" if timed else "warmup"} {i + 1}/{args.warmup + args.steps}: {dt:.3f} s')

    # the slowest rank bounds each step
    t = torch.tensor(times, device=device, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    peak = torch.tensor([torch.cuda.max_memory_allocated(device) / 2**30], device=device, dtype=torch.float64)
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    step_times = t.tolist()
    step_s = statistics.median(step_times)
    seq_lens = [args.seqlen] * (args.tokens // args.seqlen)
    p_mm = matmul_params(cfg)
    flops = step_flops(p_mm, args.tokens, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.head_dim, seq_lens)
    result = {
        'tok_s': args.tokens / step_s,
        'step_s': step_s,
        'mfu': mfu(flops, step_s),
        'peak_mem_gib': peak.item(),
        'world': world,
        'tokens': args.tokens,
        'params': n_params,
        'matmul_params': p_mm,
        'flops_per_step': flops,
        'peak_flops': H100_BF16_PEAK,
        'seqlen': args.seqlen,
        'ckpt': args.ckpt,
        'sdpa': args.sdpa,
        'step_times': step_times,
        'losses': losses,
        'card': card,
        'torch': torch.__version__,
        'config': args.config,
    }
    if rank == 0:
        print(json.dumps(result, indent=2))
        if args.out:
            with open(args.out, 'w', encoding='utf-8') as f:
                json.dump(result, f, indent=2)
        print(f'REF tok_s={result["tok_s"]:.1f} mfu={result["mfu"]:.4f} step_s={step_s:.4f}', flush=True)
    dist.destroy_process_group()


if __name__ == '__main__':
    main()
