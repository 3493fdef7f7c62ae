"""Qwen3 decoder-only transformer in eager PyTorch: the model of the PyTorch reference (ppo_ref.py).

Written from the architecture's description (Qwen3 technical report, HF config keys), not from HF's
modelling code:
  x = embed(ids)
  per layer:  h = x + o_proj(attn(rope(q_norm(q_proj(n1(x)))), rope(k_norm(k_proj(n1(x)))), v_proj(n1(x))))
              x = h + down_proj(silu(gate_proj(n2(h))) * up_proj(n2(h)))
  logits = lm_head(norm(x))            (lm_head tied to embed when tie_word_embeddings)
RMSNorm computes in float32 and returns the input dtype times its weight; RoPE tables are float32 and are
cast to the activations' dtype (rotate-half layout: the two halves of each head are the pair);
attention is grouped-query (num_key_value_heads ≤ num_attention_heads) with per-head RMSNorm on q and k,
causal, scale 1/sqrt(head_dim), through F.scaled_dot_product_attention on [S, heads, L, head_dim].

Module and parameter names are Hugging Face's (model.layers.N.self_attn.q_proj.weight, lm_head.weight, …)
so `hf_state_dict` saves a checkpoint that transformers' Qwen3ForCausalLM loads (parity_case.py).

Inputs are S sequences of one length L ([S, L] ids, positions 0..L-1 in each): the benchmark's packing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class Qwen3Config:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    initializer_range: float

    @staticmethod
    def from_json(path: str) -> Qwen3Config:
        """Reads an HF Qwen3 config.json (defaults as HF's Qwen3Config); refuses what this model lacks."""
        with open(path, encoding='utf-8') as f:
            raw = json.load(f)
        if raw.get('model_type', 'qwen3') != 'qwen3':
            raise SystemExit(f'{path}: model_type {raw.get("model_type")!r} is not qwen3')
        if raw.get('rope_scaling') is not None:
            raise SystemExit(f'{path}: rope_scaling is not supported by the reference model')
        if raw.get('use_sliding_window'):
            raise SystemExit(f'{path}: use_sliding_window is not supported by the reference model')
        if raw.get('attention_bias'):
            raise SystemExit(f'{path}: attention_bias is not supported by the reference model')
        heads = int(raw['num_attention_heads'])
        hidden = int(raw['hidden_size'])
        rope_theta = raw.get('rope_theta')
        if rope_theta is None:  # transformers 5 may write it under rope_parameters
            rope_theta = (raw.get('rope_parameters') or {}).get('rope_theta', 10000.0)
        cfg = Qwen3Config(
            vocab_size=int(raw['vocab_size']),
            hidden_size=hidden,
            intermediate_size=int(raw['intermediate_size']),
            num_hidden_layers=int(raw['num_hidden_layers']),
            num_attention_heads=heads,
            num_key_value_heads=int(raw.get('num_key_value_heads') or heads),
            head_dim=int(raw.get('head_dim') or hidden // heads),
            rms_norm_eps=float(raw.get('rms_norm_eps', 1e-6)),
            rope_theta=float(rope_theta),
            tie_word_embeddings=bool(raw.get('tie_word_embeddings', False)),
            initializer_range=float(raw.get('initializer_range', 0.02)),
        )
        if cfg.num_attention_heads % cfg.num_key_value_heads:
            raise SystemExit(f'{path}: num_attention_heads must be a multiple of num_key_value_heads')
        if cfg.head_dim % 2:
            raise SystemExit(f'{path}: head_dim must be even (RoPE pairs)')
        return cfg


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_tables(cfg: Qwen3Config, seqlen: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [seqlen, head_dim] in float32 for positions 0..seqlen-1 (frequency i repeated in both halves)."""
    hd = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, device=device, dtype=torch.int64).float() / hd))
    freqs = torch.outer(torch.arange(seqlen, device=device, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [S, L, heads, hd]; cos/sin [L, hd]. Pairs (i, i + hd/2) rotate by position·freq_i."""
    half = x.shape[-1] // 2
    cos = cos[:, None, :].to(x.dtype)
    sin = sin[:, None, :].to(x.dtype)
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        h, hd = cfg.hidden_size, cfg.head_dim
        self.n_heads, self.n_kv, self.hd = cfg.num_attention_heads, cfg.num_key_value_heads, hd
        self.q_proj = nn.Linear(h, self.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(h, self.n_kv * hd, bias=False)
        self.v_proj = nn.Linear(h, self.n_kv * hd, bias=False)
        self.o_proj = nn.Linear(self.n_heads * hd, h, bias=False)
        self.q_norm = RMSNorm(hd, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(hd, cfg.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        s, n, _ = x.shape
        q = apply_rope(self.q_norm(self.q_proj(x).view(s, n, self.n_heads, self.hd)), cos, sin)
        k = apply_rope(self.k_norm(self.k_proj(x).view(s, n, self.n_kv, self.hd)), cos, sin)
        v = self.v_proj(x).view(s, n, self.n_kv, self.hd)
        o = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            is_causal=True,
            enable_gqa=self.n_kv != self.n_heads,
        )
        return self.o_proj(o.transpose(1, 2).reshape(s, n, self.n_heads * self.hd))


class MLP(nn.Module):
    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        h, i = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = nn.Linear(h, i, bias=False)
        self.up_proj = nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        h = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return h + self.mlp(self.post_attention_layernorm(h))


class Qwen3Model(nn.Module):
    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.activation_checkpointing = False
        self.checkpoint_layers = -1  # with checkpointing: only the first N layers (-1: all)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(ids)
        cos, sin = rope_tables(self.cfg, ids.shape[1], ids.device)
        for i, layer in enumerate(self.layers):
            if (self.activation_checkpointing and torch.is_grad_enabled()
                    and (self.checkpoint_layers < 0 or i < self.checkpoint_layers)):
                x = checkpoint(layer, x, cos, sin, use_reentrant=False)
            else:
                x = layer(x, cos, sin)
        return self.norm(x)


class Qwen3ForCausalLM(nn.Module):
    """forward(ids [S, L]) → logits [S, L, V] in the compute dtype."""

    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = Qwen3Model(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.model(ids))


@torch.no_grad()
def init_weights(model: Qwen3ForCausalLM) -> None:
    """HF's init: every matrix (linear and embedding) ~ normal(0, initializer_range), norm weights 1.
    Uses the global torch RNG: seed it the same on every rank."""
    std = model.cfg.initializer_range
    for _, p in model.named_parameters():  # tied lm_head/embed appears once
        if p.dim() == 1:
            p.fill_(1.0)
        else:
            p.normal_(0.0, std)


def hf_state_dict(model: Qwen3ForCausalLM) -> dict[str, torch.Tensor]:
    """Parameters by HF name, contiguous; a tied lm_head.weight is left out (HF's checkpoints omit it)."""
    out = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.cfg.tie_word_embeddings:
        out.pop('lm_head.weight', None)
    return out
