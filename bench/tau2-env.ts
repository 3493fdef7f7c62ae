/**
 * bench:tau2-env — 64 concurrent retail episodes of replayed gold tool calls plus evaluation, with the
 * environment in piscina worker threads vs. the same work on the main thread, in one run. Reports the
 * main thread's event-loop lag p99 (what every other socket and timer of a rollout actor would feel) and
 * episodes/s. Goal: lag p99 ≤ 20 ms with workers.
 *
 *   npm run bench:tau2-env     (TAU2_DATA_DIR overrides ../shared/tau2; BENCH_EPISODES, BENCH_WORKERS)
 */
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { loadTasks } from '../actors/rollout/tau2/data.ts'
import { EnvPool } from '../actors/rollout/tau2/env-pool.ts'
import type { Message, Task } from '../actors/rollout/tau2/types.ts'
import { silentLogger } from '../runtime/log.ts'

const DATA_DIR = process.env.TAU2_DATA_DIR || fileURLToPath(new URL('../../shared/tau2', import.meta.url))
const CONCURRENCY = 64
const EPISODES = Number(process.env.BENCH_EPISODES ?? 128)
const WORKERS = Number(process.env.BENCH_WORKERS ?? 2)
const log = silentLogger()

/** One episode: open, replay the gold tool calls one message at a time, close, evaluate. */
async function episode(pool: EnvPool, task: Task, id: string): Promise<number> {
  const ep = await pool.open(DATA_DIR, 'retail', task.id, false, id)
  const traj: Message[] = [{ role: 'assistant', content: 'Hi! How can I help you today?' }]
  try {
    let i = 0
    for (const a of task.evaluation_criteria?.actions ?? []) {
      const call = {
        id: `${id}_${i++}`,
        name: a.name,
        arguments: a.arguments,
        requestor: 'assistant' as const,
      }
      traj.push({ role: 'assistant', content: null, tool_calls: [call] })
      traj.push(...(await pool.tools(ep.episodeId, [call])))
    }
  } finally {
    await pool.close(ep.episodeId)
  }
  traj.push({ role: 'assistant', content: 'Done.' })
  const ev = await pool.evaluate(DATA_DIR, 'retail', task.id, false, traj, 'user_stop')
  return ev.components.DB?.reward ?? 0
}

async function measure(label: string, pool: EnvPool, tasks: Task[]) {
  // warm-up: every thread loads the data once
  await Promise.all(tasks.slice(0, 8).map((t, i) => episode(pool, t, `warm-${label}-${i}`)))
  const h = monitorEventLoopDelay({ resolution: 1 })
  h.enable()
  const t0 = performance.now()
  let next = 0
  let dbOk = 0
  const lane = async () => {
    while (next < EPISODES) {
      const k = next++
      const ok = await episode(pool, tasks[k % tasks.length], `${label}-${k}`)
      dbOk += ok
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, lane))
  const secs = (performance.now() - t0) / 1000
  h.disable()
  const r = { label, lagP99: h.percentile(99) / 1e6, lagMax: h.max / 1e6, episodesS: EPISODES / secs, dbOk }
  console.log(
    `${label.padEnd(12)} episodes=${EPISODES} concurrency=${CONCURRENCY} time=${secs.toFixed(2)}s episodes/s=${r.episodesS.toFixed(1)} lag p99=${r.lagP99.toFixed(1)}ms max=${r.lagMax.toFixed(1)}ms db_match=${dbOk}/${EPISODES}`,
  )
  return r
}

async function main() {
  const tasks = loadTasks(DATA_DIR, 'retail', 'train')
  const inline = new EnvPool({ workers: 0, log })
  const main = await measure('main-thread', inline, tasks)
  await inline.destroy()
  const pool = new EnvPool({ workers: WORKERS, log })
  const piscina = await measure(`piscina(${WORKERS})`, pool, tasks)
  await pool.destroy()
  console.log(
    `RESULT tau2-env lag_p99_ms=${piscina.lagP99.toFixed(1)} episodes_s=${piscina.episodesS.toFixed(1)} mainthread_lag_p99_ms=${main.lagP99.toFixed(1)}`,
  )
}

await main()
