/**
 * Rollout actors joining and leaving a running job (local scheduler): bin/add-rollout starts one more,
 * the controller dispatches to it at once and counts its groups; bin/drain-rollout removes it after its
 * in-flight groups are done, losing nothing.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { expect } from 'chai'

const run = promisify(execFile)
const BIN = new URL('../../bin/', import.meta.url).pathname
const DEBUG = new URL('../../configs/debug.yaml', import.meta.url).pathname

interface Metrics {
  step: number
  groups_by_rollout: Record<string, number>
  counters: { admitted: number; trained: number; failed: number }
}

function metrics(runDir: string): Metrics[] {
  const f = join(runDir, 'metrics.jsonl')
  if (!existsSync(f)) return []
  return readFileSync(f, 'utf8')
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Metrics)
}

/** Poll a condition on the run's files (the job is another process: nothing to await on). */
async function until<T>(what: string, fn: () => T | undefined, ms = 120000): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const v = fn()
    if (v) return v
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

describe('a running job (local scheduler) when a rollout actor joins and leaves', function () {
  this.timeout(240000)
  let root: string
  let runDir: string
  let job: ChildProcess
  let done: Promise<{ code: number | null; err: string }>

  before(() => {
    root = mkdtempSync(join(tmpdir(), 'areal-join-'))
    runDir = join(root, 'debug', 'join')
    job = spawn(
      join(BIN, 'launch'),
      [
        DEBUG,
        `fileroot=${root}`,
        'trial_name=join',
        'total_train_steps=60',
        'rollout.max_head_offpolicyness=1',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    )
    let err = ''
    job.stderr!.on('data', (d: Buffer) => {
      err += d.toString()
    })
    done = new Promise((r) => job.once('exit', (code) => r({ code, err })))
  })

  after(async () => {
    if (job.exitCode === null) job.kill('SIGKILL')
    await done
    rmSync(root, { recursive: true, force: true })
  })

  let completed = -1

  it('should dispatch groups to an actor added with bin/add-rollout and count them', async () => {
    await until('the first step', () => metrics(runDir).length >= 1)
    const { stdout } = await run(join(BIN, 'add-rollout'), [runDir, '-n', '1'])
    expect(stdout.trim()).to.equal('joined rollout/1')
    const ps = await run(join(BIN, 'ps'), [runDir])
    expect(ps.stdout).to.match(/^rollout\s+rollout\/1\s+tcp:\/\/\S+\s+alive/m)
    const m = await until('a group of rollout/1', () =>
      metrics(runDir).find((x) => (x.groups_by_rollout['rollout/1'] ?? 0) >= 1),
    )
    expect(m.groups_by_rollout['rollout/0']).to.be.greaterThan(0)
  })

  it('should drain it with bin/drain-rollout, counting every group it ran', async () => {
    const { stdout } = await run(join(BIN, 'drain-rollout'), [runDir, 'rollout/1'])
    const mm = /^drained rollout\/1: (\d+) groups completed, removed$/.exec(stdout.trim())
    expect(mm, stdout).to.not.equal(null)
    completed = Number(mm![1])
    expect(completed).to.be.at.least(1)
    const ps = await run(join(BIN, 'ps'), [runDir])
    expect(ps.stdout).to.not.match(/^rollout\s+rollout\/1\s+\S+\s+alive/m)
  })

  it('should stop cleanly with no failed group and no group for the drained actor after it left', async () => {
    // one more step after the drain, so its metrics line includes everything rollout/1 did
    const at = metrics(runDir).length
    await until('a step after the drain', () => metrics(runDir).length > at)
    job.kill('SIGINT')
    const r = await done
    expect(r.code, r.err).to.equal(0)
    const m = metrics(runDir)
    const last = m[m.length - 1]
    expect(last.counters.failed).to.equal(0)
    expect(last.counters.trained).to.equal(last.step * 2)
    // the controller's count for rollout/1 is exactly what the actor completed before leaving
    expect(last.groups_by_rollout['rollout/1']).to.equal(completed)
  })
})
