/**
 * bin/add-rollout [JOB] [-n N] — N more rollout actors join a running job (default 1).
 * bin/add-rollout [JOB] --drain ID (also bin/drain-rollout [JOB] ID) — one leaves without losing work.
 *
 * JOB: a controller address, a run directory, or nothing (the newest run under ./runs). The controller
 * starts the actors through the job's scheduler (local: child processes; Slurm: srun steps in the
 * allocation) and replies once they registered: the training loop dispatches to them at once. A drained
 * actor gets no new groups, finishes the ones it runs (counted as usual), then is stopped.
 */
import { hostname } from 'node:os'
import { parseArgs } from 'node:util'
import { Actor } from '../runtime/actor.ts'
import { fail } from '../runtime/errors.ts'
import { resolveJob } from '../runtime/job.ts'
import { createLogger } from '../runtime/log.ts'

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    n: { type: 'string', short: 'n', default: '1' },
    drain: { type: 'string' },
    timeout: { type: 'string', default: '600000' },
  },
})
let client: Actor | undefined

async function run(): Promise<void> {
  const n = Number(values.n)
  if (!Number.isInteger(n) || n < 1)
    throw fail('CFG_ERR_VALUE', `-n ${values.n}: expected a whole number ≥ 1`)
  const ctl = resolveJob(positionals[0])
  client = new Actor({
    id: `add-rollout/${hostname()}/${process.pid}`,
    role: 'cli',
    inbox: false,
    log: createLogger({ level: 'error' }),
  })
  await client.start()
  const timeoutMs = Number(values.timeout)
  if (values.drain) {
    const res = await client.ask(ctl, 'ctl:drain', { id: values.drain }, { timeoutMs })
    process.stdout.write(`drained ${res.id}: ${res.completed} groups completed, removed\n`)
    return
  }
  const { ids } = await client.ask(ctl, 'ctl:spawn', { role: 'rollout', n }, { timeoutMs })
  process.stdout.write(`joined ${ids.join(' ')}\n`)
}

try {
  await run()
} catch (e) {
  const err = e as { code?: string; message: string; hint?: string }
  process.stderr.write(
    `add-rollout: ${err.code ?? 'error'}: ${err.message}${err.hint ? ` → ${err.hint}` : ''}\n`,
  )
  process.exitCode = 1
} finally {
  await client?.stop('done', 0)
}
