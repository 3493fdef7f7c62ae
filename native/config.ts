/**
 * Hugging Face Qwen3 `config.json` → the native model config. Only what the native model implements is
 * accepted; anything it would silently get wrong (RoPE scaling, sliding windows, another architecture)
 * fails with TRN_ERR_CONFIG naming the key.
 */
import { readFileSync } from 'node:fs'
import { fail } from '../runtime/errors.ts'

/** The HF keys read (snake_case, as in config.json). Other keys are kept and written back on save. */
export interface HfQwen3Config {
  model_type?: string
  architectures?: string[]
  vocab_size: number
  hidden_size: number
  intermediate_size: number
  num_hidden_layers: number
  num_attention_heads: number
  num_key_value_heads?: number
  head_dim?: number
  rms_norm_eps?: number
  rope_theta?: number
  rope_scaling?: unknown
  tie_word_embeddings?: boolean
  attention_bias?: boolean
  max_position_embeddings?: number
  initializer_range?: number
  use_sliding_window?: boolean
  eos_token_id?: number | number[]
  torch_dtype?: string
  [key: string]: unknown
}

/** What the addon takes (camelCase); defaults already applied. */
export interface NativeModelConfig {
  vocabSize: number
  hiddenSize: number
  intermediateSize: number
  numHiddenLayers: number
  numAttentionHeads: number
  numKeyValueHeads: number
  headDim: number
  rmsNormEps: number
  ropeTheta: number
  tieWordEmbeddings: boolean
  attentionBias: boolean
  maxPositionEmbeddings: number
  initializerRange: number
}

function int(cfg: HfQwen3Config, key: string, def?: number): number {
  const v = cfg[key] ?? def
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
    throw fail('TRN_ERR_CONFIG', `${key}: expected a positive integer, got ${JSON.stringify(v)}`)
  }
  return v
}

function pos(cfg: HfQwen3Config, key: string, def: number): number {
  const v = cfg[key] ?? def
  if (typeof v !== 'number' || !(v > 0))
    throw fail('TRN_ERR_CONFIG', `${key}: expected a number > 0, got ${v}`)
  return v
}

/** Validates an HF config and maps it to the native one. */
export function toNativeConfig(cfg: HfQwen3Config): NativeModelConfig {
  if (cfg.model_type !== undefined && cfg.model_type !== 'qwen3') {
    throw fail('TRN_ERR_CONFIG', `model_type '${cfg.model_type}' is not supported (qwen3 is)`)
  }
  if (cfg.rope_scaling !== undefined && cfg.rope_scaling !== null) {
    throw fail('TRN_ERR_CONFIG', 'rope_scaling is not supported by the native model; remove it or set null')
  }
  if (cfg.use_sliding_window === true) {
    throw fail('TRN_ERR_CONFIG', 'use_sliding_window=true is not supported by the native model')
  }
  const heads = int(cfg, 'num_attention_heads')
  const hidden = int(cfg, 'hidden_size')
  const kv = int(cfg, 'num_key_value_heads', heads)
  if (heads % kv !== 0) {
    throw fail(
      'TRN_ERR_CONFIG',
      `num_attention_heads (${heads}) must be a multiple of num_key_value_heads (${kv})`,
    )
  }
  const headDim = int(cfg, 'head_dim', Math.floor(hidden / heads))
  if (headDim % 2 !== 0) throw fail('TRN_ERR_CONFIG', `head_dim (${headDim}) must be even for RoPE`)
  return {
    vocabSize: int(cfg, 'vocab_size'),
    hiddenSize: hidden,
    intermediateSize: int(cfg, 'intermediate_size'),
    numHiddenLayers: int(cfg, 'num_hidden_layers'),
    numAttentionHeads: heads,
    numKeyValueHeads: kv,
    headDim,
    rmsNormEps: pos(cfg, 'rms_norm_eps', 1e-6),
    ropeTheta: pos(cfg, 'rope_theta', 1_000_000),
    tieWordEmbeddings: cfg.tie_word_embeddings ?? false,
    attentionBias: cfg.attention_bias ?? false,
    maxPositionEmbeddings: int(cfg, 'max_position_embeddings', 32768),
    initializerRange: pos(cfg, 'initializer_range', 0.02),
  }
}

/** Reads and validates `config.json` (a file, or a directory holding one). */
export function readHfConfig(path: string): HfQwen3Config {
  const file = path.endsWith('.json') ? path : `${path}/config.json`
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (e) {
    throw fail('TRN_ERR_CONFIG', `cannot read ${file}`, { file }, e)
  }
  let cfg: HfQwen3Config
  try {
    cfg = JSON.parse(text) as HfQwen3Config
  } catch (e) {
    throw fail('TRN_ERR_CONFIG', `${file} is not valid JSON`, { file }, e)
  }
  toNativeConfig(cfg)
  return cfg
}

/** The model's end-of-sequence ids (from eos_token_id), the default stop ids for generation. */
export function eosIds(cfg: HfQwen3Config): number[] {
  const e = cfg.eos_token_id
  return e === undefined ? [] : Array.isArray(e) ? e : [e]
}
