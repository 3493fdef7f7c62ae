/**
 * bin/demo [CONFIG.yaml] [key.path=value …] — the multi-actor demo job on this machine.
 * Starts a controller (directory + supervisor) and N worker processes, dispatches prime-counting
 * tasks to the least-loaded worker, shows progress, prints the total. Run dir: <fileroot>/<experiment>/<trial>
 * holds controller.addr (for bin/ps, bin/tap, bin/send) and logs/. Ctrl-C stops cleanly.
 */
import { mkdirSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { Actor } from '../runtime/actor.ts'
import { busSchema, toBusConfig } from '../runtime/bus-config.ts'
import { c, loadConfig } from '../runtime/config.ts'
import { Directory } from '../runtime/directory.ts'
import { writeJobAddress } from '../runtime/job.ts'
import { createLogger } from '../runtime/log.ts'
import { Progress } from '../runtime/progress.ts'
import { linkDirectory, Supervisor } from '../runtime/supervisor.ts'

const schema = c.obj({
  experiment_name: c.str('demo'),
  trial_name: c.str('t0'),
  fileroot: c.str('runs', { doc: 'run directories go under here' }),
  log_level: c.enum(['debug', 'info', 'warn', 'error'], 'info'),
  bus: busSchema,
  demo: c.obj({
    workers: c.int(2, { min: 1, max: 64 }),
    tasks: c.int(400, { min: 1 }),
    range: c.int(20000, { min: 1 }),
    inflight_per_worker: c.int(4, { min: 1 }),
    delay_ms: c.int(0, { min: 0, doc: 'extra delay per task (to watch with bin/ps and bin/tap)' }),
  }),
})

const args = process.argv.slice(2)
const file =
  args[0] && !args[0].includes('=') ? args.shift() : resolve(import.meta.dirname, '../configs/demo.yaml')
const cfg = loadConfig(schema, { file, overrides: args })
const runDir = resolve(cfg.fileroot, cfg.experiment_name, cfg.trial_name)
mkdirSync(join(runDir, 'logs'), { recursive: true })
const log = createLogger({ level: cfg.log_level, file: join(runDir, 'logs', 'controller.log') })
const ctl = new Actor({ id: 'controller', role: 'controller', log, bus: toBusConfig(cfg.bus) })
const dir = new Directory(ctl)
const sup = new Supervisor(log, { worker: { restart: 'transient', intensity: 3, periodMs: 60000 } })
let failure: Error | undefined

async function run(): Promise<void> {
  await ctl.start()
  dir.start()
  linkDirectory(sup, dir)
  writeJobAddress(runDir, ctl.addr)
  process.stderr.write(`controller ${ctl.addr} · run dir ${runDir}\n`)
  const n = cfg.demo.workers
  const ready = new Promise<void>((r) => {
    let up = 0
    dir.on('up', (e) => e.role === 'worker' && ++up === n && r())
  })
  for (let i = 0; i < n; i++) {
    sup.start({
      id: `worker/${i}`,
      role: 'worker',
      command: process.execPath,
      args: [...process.execArgv, resolve(import.meta.dirname, '../actors/demo/worker.ts')],
      env: { AREAL_CONTROLLER: ctl.addr, LOG_LEVEL: cfg.log_level, DEMO_DELAY_MS: String(cfg.demo.delay_ms) },
      logFile: join(runDir, 'logs', `worker-${i}.log`),
    })
  }
  sup.on('giveup', (e) => {
    failure = e.error
  })
  await ready
  const bar = new Progress('demo', cfg.demo.tasks)
  const load = new Map<string, number>()
  let next = 0
  let total = 0
  const t0 = Date.now()
  const pickWorker = () => {
    const alive = dir.select(undefined, ['worker']).filter((e) => e.state === 'alive')
    alive.sort((a, b) => (load.get(a.id) ?? 0) - (load.get(b.id) ?? 0))
    return alive[0]?.id
  }
  const lane = async (): Promise<void> => {
    while (next < cfg.demo.tasks && !failure && !stopping) {
      const t = next++
      const w = pickWorker()
      if (!w) throw new Error('no live worker')
      load.set(w, (load.get(w) ?? 0) + 1)
      try {
        const r = await ctl.ask(w, 'demo:work', { lo: t * cfg.demo.range, hi: (t + 1) * cfg.demo.range })
        total += r.primes
        bar.tick(1, `${total} primes`)
      } catch (e) {
        log.warn({ task: t, worker: w, err: (e as Error).message }, 'task failed; requeued')
        next = Math.min(next, t) // requeue: run it again
      } finally {
        load.set(w, (load.get(w) ?? 1) - 1)
      }
    }
  }
  await Promise.all(Array.from({ length: n * cfg.demo.inflight_per_worker }, lane))
  bar.finish()
  if (failure) throw failure
  if (!stopping) {
    const secs = (Date.now() - t0) / 1000
    process.stdout.write(
      `demo done: ${cfg.demo.tasks} tasks on ${n} workers in ${secs.toFixed(1)}s; primes below ${cfg.demo.tasks * cfg.demo.range}: ${total}\n`,
    )
  }
}

let stopping = false
process.once('SIGINT', () => {
  stopping = true
  process.stderr.write('\ndemo: stopping (Ctrl-C)\n')
})
try {
  await run()
} catch (e) {
  const err = e as { code?: string; message: string }
  process.stderr.write(`demo failed: ${err.code ?? 'error'}: ${err.message}\n`)
  process.exitCode = 1
} finally {
  await sup.stopAll(3000)
  dir.stop()
  await ctl.stop('done', 500)
}
