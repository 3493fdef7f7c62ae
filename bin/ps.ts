/**
 * bin/ps [JOB] [--json] — list the actors of a running job: role, id, address, state, heartbeat age.
 * JOB: the controller address, a run directory, or nothing (newest run under ./runs).
 */
import { hostname } from 'node:os'
import { parseArgs } from 'node:util'
import { Actor } from '../runtime/actor.ts'
import { resolveJob } from '../runtime/job.ts'
import { createLogger } from '../runtime/log.ts'

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { json: { type: 'boolean' }, timeout: { type: 'string', default: '5000' } },
})
const client = new Actor({
  id: `ps/${hostname()}/${process.pid}`,
  role: 'cli',
  inbox: false,
  log: createLogger({ level: 'error' }),
})

async function run(): Promise<void> {
  const addr = resolveJob(positionals[0])
  await client.start()
  const res = await client.ask(addr, 'dir:list', {}, { timeoutMs: Number(values.timeout) })
  if (values.json) {
    process.stdout.write(`${JSON.stringify(res)}\n`)
    return
  }
  const rows = res.entries
    .sort((a, b) => a.role.localeCompare(b.role) || a.id.localeCompare(b.id))
    .map((e) => [
      e.role,
      e.id,
      e.addr,
      e.state,
      e.state === 'dead' ? '-' : `${(e.heartbeatAgeMs / 1000).toFixed(1)}s`,
      String(e.pid),
      e.host,
    ])
  const head = ['ROLE', 'ID', 'ADDRESS', 'STATE', 'HEARTBEAT', 'PID', 'HOST']
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)))
  const line = (r: string[]) =>
    r
      .map((x, i) => x.padEnd(w[i]))
      .join('  ')
      .trimEnd()
  process.stdout.write(
    `job ${res.controller} · up ${((Date.now() - res.startedAt) / 1000).toFixed(0)}s · ${rows.length} actors\n`,
  )
  process.stdout.write(`${[line(head), ...rows.map(line)].join('\n')}\n`)
}

try {
  await run()
} catch (e) {
  const err = e as { code?: string; message: string; hint?: string }
  process.stderr.write(`ps: ${err.code ?? 'error'}: ${err.message}${err.hint ? ` → ${err.hint}` : ''}\n`)
  process.exitCode = 1
} finally {
  await client.stop('done', 0)
}
