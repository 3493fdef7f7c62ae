/**
 * bench/e2e — the quick-start workload trained asynchronously (η = 2) and synchronously (η = 0), same
 * config and resources, one after the other in this run; alternated over ROUNDS so machine noise hits
 * both. Reports trajectories/s (episodes of trained groups per second of training wall time) and trained
 * tokens/s, and their ratio async/sync.
 * Last line: RESULT e2e async_speedup=… traj_s_async=… traj_s_sync=… tok_s_async=… tok_s_sync=…
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const LAUNCH = new URL('../bin/launch', import.meta.url).pathname
const CONFIG = process.env.BENCH_CONFIG ?? new URL('../configs/quickstart.yaml', import.meta.url).pathname
const STEPS = Number(process.env.BENCH_STEPS ?? 8)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 1)

interface Line {
  step: number
  time_s: number
  trained_tokens: number
  counters: { trained: number }
}

async function run(eta: number, root: string, tag: string): Promise<{ trajS: number; tokS: number }> {
  const args = [
    CONFIG,
    `fileroot=${root}`,
    `trial_name=${tag}`,
    `total_train_steps=${STEPS}`,
    `rollout.max_head_offpolicyness=${eta}`,
    'recover.mode=disabled',
    'saver.freq_steps=0',
  ]
  const code = await new Promise<number | null>((r) =>
    spawn(LAUNCH, args, { stdio: ['ignore', 'ignore', 'inherit'] }).once('exit', r),
  )
  if (code !== 0) throw new Error(`launch η=${eta} exited with ${code}`)
  const exp = /experiment_name:\s*(\S+)/.exec(readFileSync(CONFIG, 'utf8'))?.[1] ?? 'run'
  const lines = readFileSync(join(root, exp, tag, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Line)
  // from the end of step 1 (warm-up: process start, first weights) to the end of the last step
  const first = lines[0]
  const last = lines[lines.length - 1]
  const secs = last.time_s - first.time_s
  const nSamples = Number(/n_samples:\s*(\d+)/.exec(readFileSync(CONFIG, 'utf8'))?.[1] ?? 1)
  const groups = last.counters.trained - first.counters.trained
  const tokens = lines.slice(1).reduce((a, l) => a + l.trained_tokens, 0)
  return { trajS: (groups * nSamples) / secs, tokS: tokens / secs }
}

const root = mkdtempSync(join(tmpdir(), 'bench-e2e-'))
const res = { async: [] as { trajS: number; tokS: number }[], sync: [] as { trajS: number; tokS: number }[] }
try {
  for (let r = 0; r < ROUNDS; r++) {
    res.async.push(await run(2, root, `async-${r}`))
    res.sync.push(await run(0, root, `sync-${r}`))
    process.stderr.write(
      `round ${r + 1}/${ROUNDS}: η=2 ${res.async[r].trajS.toFixed(2)} traj/s ${res.async[r].tokS.toFixed(0)} tok/s · η=0 ${res.sync[r].trajS.toFixed(2)} traj/s ${res.sync[r].tokS.toFixed(0)} tok/s\n`,
    )
  }
} finally {
  rmSync(root, { recursive: true, force: true })
}
const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length
const ta = avg(res.async.map((x) => x.trajS))
const ts = avg(res.sync.map((x) => x.trajS))
const ka = avg(res.async.map((x) => x.tokS))
const ks = avg(res.sync.map((x) => x.tokS))
console.log(
  `RESULT e2e async_speedup=${(ka / ks).toFixed(2)} traj_s_async=${ta.toFixed(2)} traj_s_sync=${ts.toFixed(2)} tok_s_async=${ka.toFixed(0)} tok_s_sync=${ks.toFixed(0)}`,
)
