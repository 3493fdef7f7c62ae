/**
 * Native trainer on CPU: PPO update tokens/s and generation tokens/s, on the tiny debug config and the
 * ~50M-parameter Qwen3-shaped config (configs/models/qwen3-50m). Generation is measured with the KV cache
 * and, side by side as the baseline, with the recompute-from-scratch reference path.
 *
 *   npm run bench:native-cpu            (a few minutes on 2 cores)
 *
 * Last line: RESULT native-cpu train_tok_s=… gen_tok_s=… (the ~50M config) plus the tiny-config and
 * baseline numbers as extra keys. No target on CPU: this is the baseline later (GPU) work compares to.
 */
import { readFileSync } from 'node:fs'
import {
  buildInfo,
  createModel,
  type HfQwen3Config,
  type Model,
  numThreads,
  type PpoMicroBatch,
  setNumThreads,
} from '../native/index.ts'

function loadConfig(name: string): HfQwen3Config {
  return JSON.parse(readFileSync(new URL(`../configs/models/${name}/config.json`, import.meta.url), 'utf8'))
}

/** Seeded sequences of `len` tokens, the last `out` of each in the loss mask. */
function batch(seqs: number, len: number, out: number, vocab: number, seed: number): PpoMicroBatch {
  let x = seed
  const next = () => {
    x = (x * 1103515245 + 12345) >>> 0
    return x
  }
  const T = seqs * len
  const inputIds = Int32Array.from({ length: T }, () => next() % vocab)
  const cuSeqlens = Int32Array.from({ length: seqs + 1 }, (_, i) => i * len)
  const lossMask = new Uint8Array(T)
  const advantages = new Float32Array(T)
  const proxLogprobs = new Float32Array(T).fill(-Math.log(vocab))
  for (let s = 0; s < seqs; s++) {
    for (let i = s * len + (len - out); i < (s + 1) * len; i++) {
      lossMask[i] = 1
      advantages[i] = s % 2 ? 1 : -1
    }
  }
  return { inputIds, cuSeqlens, lossMask, advantages, proxLogprobs, behaveLogprobs: proxLogprobs }
}

async function timed(minSeconds: number, fn: () => Promise<number>, warmup = true): Promise<number> {
  if (warmup) await fn() // allocator, first-touch pages
  let tokens = 0
  const t0 = performance.now()
  do tokens += await fn()
  while (performance.now() - t0 < minSeconds * 1000)
  return tokens / ((performance.now() - t0) / 1000)
}

interface Row {
  train: number
  gen: number
  genRef: number
}

async function measure(
  name: string,
  m: Model,
  b: PpoMicroBatch,
  genBatch: number,
  genNew: number,
  seconds: number,
): Promise<Row> {
  const vocab = m.config.vocab_size
  const tokens = b.inputIds.length
  const train = await timed(seconds, async () => {
    await m.ppoStep([b], { epsClip: 0.2 }, { lr: 1e-5 })
    return tokens
  })
  const reqs = Array.from({ length: genBatch }, (_, i) => ({
    prompt: Int32Array.from({ length: 32 }, (_, j) => (i * 977 + j * 131) % vocab),
    maxNewTokens: genNew,
  }))
  const run = (kvCache: boolean) => async () => {
    // RL sampling: temperature 1, no top-p/top-k (the trainer's log-probs must match the sampler's)
    const out = await m.generate(reqs, { temperature: 1, stopIds: [], kvCache })
    return out.reduce((s, g) => s + g.tokens.length, 0)
  }
  const gen = await timed(seconds, run(true))
  const genRef = await timed(seconds, run(false), false)
  console.log(
    `${name}: ${(m.numParams / 1e6).toFixed(1)}M params, train ${train.toFixed(0)} tok/s (${tokens} tokens/step), ` +
      `generate ${gen.toFixed(1)} tok/s with KV cache vs ${genRef.toFixed(1)} tok/s recomputing (batch ${genBatch})`,
  )
  return { train, gen, genRef }
}

async function main(): Promise<void> {
  setNumThreads(Number(process.env.THREADS ?? 2))
  const info = buildInfo()
  console.log(`libtorch ${info.torchVersion}, gloo=${info.gloo}, cuda=${info.cuda}, threads=${numThreads()}`)
  const tinyCfg = loadConfig('qwen3-debug')
  const tiny = await createModel({ config: tinyCfg, seed: 1 })
  const t = await measure('tiny (qwen3-debug)', tiny, batch(4, 64, 48, tinyCfg.vocab_size, 1), 8, 32, 5)
  tiny.dispose()
  const bigCfg = loadConfig('qwen3-50m')
  const big = await createModel({ config: bigCfg, seed: 1 })
  const b = await measure('~50M (qwen3-50m)', big, batch(2, 64, 48, bigCfg.vocab_size, 2), 4, 16, 5)
  big.dispose()
  const f = (x: number) => x.toFixed(1)
  console.log(
    `RESULT native-cpu train_tok_s=${f(b.train)} gen_tok_s=${f(b.gen)} gen_nocache_tok_s=${f(b.genRef)} ` +
      `train_tok_s_tiny=${f(t.train)} gen_tok_s_tiny=${f(t.gen)} gen_nocache_tok_s_tiny=${f(t.genRef)}`,
  )
}

await main()
