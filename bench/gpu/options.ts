/** Options of `npm run bench:gpu` (bench/gpu.ts), checked: bad values fail with a coded error. */
import { parseArgs } from 'node:util'
import { fail } from '../../runtime/errors.ts'

export interface GpuBenchOptions {
  config: string
  tokens: number
  seqlen: number
  steps: number
  warmup: number
  ckpt: boolean
  /** With ckpt: only the first this many decoder layers are recomputed (--ckpt-layers N|all; -1: all). */
  ckptLayers: number
  /** The reference's own --ckpt-layers (default: ckptLayers), to compare each side at the setting that
   * suits it on the card (e.g. the reference slows down near the memory limit). */
  refCkptLayers: number
  gpus: number
  /** With gpus > 1: no 1-GPU native run (a model that does not fit one GPU), so no dp_scaling. */
  skipSingle: boolean
  seed: number
}

function int(name: string, v: string, min: number): number {
  const n = Number(v)
  if (!Number.isInteger(n) || n < min) {
    throw fail('CFG_ERR_VALUE', `--${name} ${v}: expected an integer ≥ ${min}`, { key: name })
  }
  return n
}

/** A layer count, or 'all' (-1). */
function layers(name: string, v: string): number {
  return v === 'all' ? -1 : int(name, v, 0)
}

/** Parses and checks the options (CFG_ERR_VALUE / CFG_ERR_UNKNOWN_KEY on bad input). */
export function parseOptions(argv: string[]): GpuBenchOptions {
  let values: Record<string, string | boolean | undefined>
  try {
    values = parseArgs({
      args: argv,
      options: {
        config: { type: 'string', default: 'configs/models/qwen3-1.7b/config.json' },
        tokens: { type: 'string', default: '16384' },
        seqlen: { type: 'string', default: '2048' },
        steps: { type: 'string', default: '5' },
        warmup: { type: 'string', default: '2' },
        ckpt: { type: 'boolean', default: false },
        'ckpt-layers': { type: 'string', default: 'all' },
        'ref-ckpt-layers': { type: 'string' },
        gpus: { type: 'string', default: '1' },
        seed: { type: 'string', default: '0' },
        'skip-single': { type: 'boolean', default: false },
      },
    }).values
  } catch (e) {
    throw fail('CFG_ERR_UNKNOWN_KEY', (e as Error).message, undefined, e)
  }
  const o: GpuBenchOptions = {
    config: values.config as string,
    tokens: int('tokens', values.tokens as string, 2),
    seqlen: int('seqlen', values.seqlen as string, 2),
    steps: int('steps', values.steps as string, 1),
    warmup: int('warmup', values.warmup as string, 0),
    ckpt: values.ckpt as boolean,
    ckptLayers: layers('ckpt-layers', values['ckpt-layers'] as string),
    refCkptLayers: -1,
    gpus: int('gpus', values.gpus as string, 1),
    seed: int('seed', values.seed as string, 0),
    skipSingle: values['skip-single'] as boolean,
  }
  o.refCkptLayers =
    values['ref-ckpt-layers'] === undefined
      ? o.ckptLayers
      : layers('ref-ckpt-layers', values['ref-ckpt-layers'] as string)
  for (const [key, v] of [
    ['ckpt-layers', o.ckptLayers],
    ['ref-ckpt-layers', o.refCkptLayers],
  ] as const) {
    if (v !== -1 && !o.ckpt) throw fail('CFG_ERR_VALUE', `--${key} needs --ckpt`, { key })
  }
  if (o.tokens % o.seqlen !== 0) {
    throw fail('CFG_ERR_VALUE', `--tokens ${o.tokens} is not a multiple of --seqlen ${o.seqlen}`, {
      key: 'tokens',
    })
  }
  return o
}
