/**
 * bench:engine — the embedded engine actor's continuous batching against serving the same requests one
 * at a time, in one run on the quick-start model (random init), through the bus as the proxy calls it.
 *
 *   N callers ask engine:generate at once (prompts of P tokens, M new tokens each, seeded sampling)
 *   sequential: the same engine with max_batch 1 (one request per chunk)
 *   batched:    max_batch N, at chunk_tokens 16 and 64 (each chunk re-prefills prompt + partial output)
 * Every configuration must produce the same tokens (checked). Last line:
 *   RESULT engine batched_tok_s=… sequential_tok_s=… speedup=… chunk16_tok_s=…
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { engineSchema, startEngine } from '../actors/engine/actor.ts'
import { Actor } from '../runtime/actor.ts'
import { loadConfig } from '../runtime/config.ts'
import { silentLogger } from '../runtime/log.ts'

const N = Number(process.env.BENCH_N ?? 16)
const P = Number(process.env.BENCH_PROMPT ?? 200)
const M = Number(process.env.BENCH_NEW ?? 64)
const log = silentLogger()

const dir = mkdtempSync(join(tmpdir(), 'bench-engine-'))
const base = JSON.parse(
  readFileSync(new URL('../configs/models/quickstart/config.json', import.meta.url), 'utf8'),
)
writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...base, initializer_range: 0.3 }))
const vocab = base.vocab_size as number
const prompts = Array.from({ length: N }, (_, i) =>
  Int32Array.from({ length: P }, (_, t) => (t * 31 + i * 7) % (vocab - 40)),
)

async function run(maxBatch: number, chunkTokens: number): Promise<{ tokS: number; outs: string[] }> {
  const cfg = loadConfig(engineSchema, {
    raw: { model: { path: dir, seed: 1 }, max_batch: maxBatch, chunk_tokens: chunkTokens, threads: 1 },
  })
  const engine = await startEngine(cfg, { id: 'engine/bench', log })
  const caller = await new Actor({ id: 'bench', role: 'bench', log, inbox: false }).start()
  const t0 = performance.now()
  const res = await Promise.all(
    prompts.map((p, i) =>
      caller.ask(
        engine.addr,
        'engine:generate',
        {
          rid: `r${i}`,
          inputIds: p,
          sampling: { maxNewTokens: M, temperature: 1, topP: 1, stopTokenIds: [], seed: i },
        },
        { timeoutMs: 600_000 },
      ),
    ),
  )
  const s = (performance.now() - t0) / 1000
  await caller.stop('bench done', 100)
  await engine.close()
  const tokens = res.reduce((a, r) => a + r.outputIds.length, 0)
  return { tokS: tokens / s, outs: res.map((r) => Array.from(r.outputIds).join(',')) }
}

try {
  const seq = await run(1, M)
  const b64 = await run(N, 64)
  const b16 = await run(N, 16)
  for (const [name, r] of [
    ['batched chunk 64', b64],
    ['batched chunk 16', b16],
  ] as const)
    if (r.outs.some((o, i) => o !== seq.outs[i])) throw new Error(`${name}: tokens differ from sequential`)
  console.log(`${N} requests × ${M} new tokens after ${P}-token prompts (quick-start model, 1 thread)`)
  console.log(`sequential (max_batch 1)        ${seq.tokS.toFixed(0)} tok/s`)
  console.log(`batched max_batch ${N}, chunk 64  ${b64.tokS.toFixed(0)} tok/s`)
  console.log(`batched max_batch ${N}, chunk 16  ${b16.tokS.toFixed(0)} tok/s`)
  console.log(
    `RESULT engine batched_tok_s=${b64.tokS.toFixed(0)} sequential_tok_s=${seq.tokS.toFixed(0)} speedup=${(b64.tokS / seq.tokS).toFixed(2)} chunk16_tok_s=${b16.tokS.toFixed(0)}`,
  )
} finally {
  rmSync(dir, { recursive: true, force: true })
}
