/**
 * The debug system under a real Slurm (single node, CPU only; test/slurm/cluster.ts starts it):
 * bin/launch scheduler.type=slurm submits one job whose roles run as srun steps, follows it to the end,
 * takes a rollout actor joining as a new step, and cancels the whole job on SIGINT.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { expect } from 'chai'
import { freePort } from '../../runtime/net.ts'
import { queue, type SlurmCluster, slurmUnavailable, startSlurm, steps } from '../slurm/cluster.ts'

const run = promisify(execFile)
const BIN = new URL('../../bin/', import.meta.url).pathname
const DEBUG = new URL('../../configs/debug.yaml', import.meta.url).pathname
const PYTHON = new URL('../slurm/python-standin', import.meta.url).pathname

interface Launched {
  proc: ChildProcess
  done: Promise<{ code: number | null; out: string; err: string }>
  err: () => string
}

function launch(root: string, trial: string, extra: string[]): Launched {
  const proc = spawn(
    join(BIN, 'launch'),
    [
      DEBUG,
      `fileroot=${root}`,
      `trial_name=${trial}`,
      'scheduler.type=slurm',
      'scheduler.slurm.poll_ms=300',
      ...extra,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let out = ''
  let err = ''
  proc.stdout!.on('data', (d: Buffer) => {
    out += d.toString()
  })
  proc.stderr!.on('data', (d: Buffer) => {
    err += d.toString()
  })
  const done = new Promise<{ code: number | null; out: string; err: string }>((r) =>
    proc.once('exit', (code) => r({ code, out, err })),
  )
  return { proc, done, err: () => err }
}

/** Poll a condition (Slurm and the job are other processes: nothing to await on). */
async function until<T>(
  what: string,
  fn: () => Promise<T | undefined> | T | undefined,
  ms = 120000,
): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 250))
  }
}

const jobIdOf = (runDir: string) =>
  existsSync(join(runDir, 'slurm', 'job_id'))
    ? readFileSync(join(runDir, 'slurm', 'job_id'), 'utf8').trim()
    : undefined

function metrics(runDir: string): {
  step: number
  groups_by_rollout: Record<string, number>
  counters: { failed: number; trained: number }
}[] {
  const f = join(runDir, 'metrics.jsonl')
  if (!existsSync(f)) return []
  return readFileSync(f, 'utf8')
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l))
}

describe('bin/launch with scheduler.type=slurm on a real Slurm', function () {
  this.timeout(240000)
  let cluster: SlurmCluster | undefined
  let root: string

  before(async function () {
    const why = slurmUnavailable()
    if (why) {
      console.warn(`    skipped: ${why}`)
      this.skip()
    }
    cluster = await startSlurm()
    root = mkdtempSync(join(tmpdir(), 'areal-slurm-run-'))
  })

  after(async () => {
    await cluster?.stop()
    if (root && !process.env.KEEP) rmSync(root, { recursive: true, force: true })
  })

  describe('when the debug config runs to completion', () => {
    let job: Launched
    let runDir: string
    let jobId: string

    before(() => {
      runDir = join(root, 'debug', 'slurm')
      job = launch(root, 'slurm', [
        'total_train_steps=4',
        'rollout.max_head_offpolicyness=1',
        'scheduler.slurm.setup=[echo areal-setup-ran]',
      ])
    })
    after(() => {
      if (job.proc.exitCode === null) job.proc.kill('SIGKILL')
    })

    it('should run every role as an srun step of one job, listed by squeue', async () => {
      jobId = await until('the job id', () => jobIdOf(runDir))
      const names = await until(`the steps of job ${jobId}\n${job.err()}`, async () => {
        const s = new Set((await steps(jobId)).values())
        return ['batch', 'trainer/0', 'engine/0', 'proxy/0', 'rollout/0'].every((n) => s.has(n))
          ? s
          : undefined
      })
      expect([...names].sort()).to.include.members(['batch', 'engine/0', 'proxy/0', 'rollout/0', 'trainer/0'])
      const script = readFileSync(join(runDir, 'slurm', 'job.sbatch'), 'utf8')
      expect(script).to.match(/^#SBATCH --nodes=1$/m)
      expect(script).to.contain('AREAL_SLURM_INSIDE=1')
    })

    it('should follow the job to its end and exit 0 with the run trained', async () => {
      const r = await job.done
      expect(r.code, r.err).to.equal(0)
      expect(r.err).to.contain(`submitted Slurm job ${jobId}`)
      expect(r.out).to.match(/reward: start \d\.\d{3} → end \d\.\d{3} over \d+ steps/)
      const m = metrics(runDir)
      expect(m[m.length - 1].step).to.equal(4)
      expect(m[m.length - 1].counters.failed).to.equal(0)
      // setup commands ran before the controller (its stdout is streamed here) and before every step
      expect(r.out).to.contain('areal-setup-ran')
      for (const f of ['trainer-0.log', 'engine-0.log', 'proxy-0.log', 'rollout-0.log'])
        expect(readFileSync(join(runDir, 'logs', f), 'utf8'), f).to.contain('areal-setup-ran')
      expect(await queue()).to.not.include(jobId)
    })
  })

  describe('when a rollout actor joins a long run, leaves, and bin/launch gets SIGINT', () => {
    let job: Launched
    let runDir: string
    let jobId: string
    let completed = 0

    before(async () => {
      runDir = join(root, 'debug', 'join')
      job = launch(root, 'join', ['total_train_steps=1000', 'rollout.max_head_offpolicyness=1'])
      jobId = await until('the job id', () => jobIdOf(runDir))
    })
    after(() => {
      if (job.proc.exitCode === null) job.proc.kill('SIGKILL')
    })

    it('should start a rollout actor added with bin/add-rollout as a new step that completes groups', async () => {
      await until(`the first step\n${job.err()}`, () => metrics(runDir).length >= 1)
      const { stdout } = await run(join(BIN, 'add-rollout'), [runDir])
      expect(stdout.trim()).to.equal('joined rollout/1')
      expect([...(await steps(jobId)).values()]).to.include('rollout/1')
      await until('a group of rollout/1', () =>
        metrics(runDir).find((m) => (m.groups_by_rollout['rollout/1'] ?? 0) >= 1),
      )
    })

    it('should drain it with bin/drain-rollout: its step ends and all its groups are counted', async () => {
      const { stdout } = await run(join(BIN, 'drain-rollout'), [runDir, 'rollout/1'])
      const mm = /^drained rollout\/1: (\d+) groups completed, removed$/.exec(stdout.trim())
      expect(mm, stdout).to.not.equal(null)
      completed = Number(mm![1])
      await until('the step of rollout/1 to end', async () =>
        [...(await steps(jobId)).values()].includes('rollout/1') ? undefined : true,
      )
      const at = metrics(runDir).length
      await until('a step after the drain', () => metrics(runDir).length > at)
      const m = metrics(runDir)
      expect(m[m.length - 1].groups_by_rollout['rollout/1']).to.equal(completed)
      expect(m[m.length - 1].counters.failed).to.equal(0)
    })

    it('should cancel the whole job on SIGINT: no job and no step left in the queue', async () => {
      job.proc.kill('SIGINT')
      const r = await job.done
      expect(r.code, r.err).to.equal(130)
      expect(r.err).to.contain(`cancelling Slurm job ${jobId}`)
      expect(await queue()).to.not.include(jobId)
      expect((await steps(jobId)).size).to.equal(0)
    })
  })

  describe('when the job fails', () => {
    it('should refuse a bad allocation_mode before submitting anything', async () => {
      const runDir = join(root, 'debug', 'badalloc')
      const r = await launch(root, 'badalloc', ['allocation_mode=sglang:d1x2+archon:d1']).done
      expect(r.code).to.equal(1)
      expect(r.err).to.match(/launch failed: CFG_ERR_VALUE: .*"sglang:d1x2"/)
      expect(jobIdOf(runDir)).to.equal(undefined)
    })

    it('should end the whole job and exit non-zero with the reason when a role cannot start', async () => {
      const runDir = join(root, 'debug', 'broken')
      const r = await launch(root, 'broken', ['actor.model.path=/nonexistent/model']).done
      const jobId = jobIdOf(runDir)!
      expect(r.code, r.err).to.equal(1)
      expect(r.err).to.match(/launch failed: RT_ERR_SPAWN: .*trainer\/0 exited/)
      expect(await queue()).to.not.include(jobId)
      expect((await steps(jobId)).size).to.equal(0)
    })
  })

  describe('when allocation_mode names SGLang servers', () => {
    it('should run the server as a step of the job and train through it', async () => {
      const runDir = join(root, 'debug', 'sglang')
      const job = launch(root, 'sglang', [
        'allocation_mode=sglang:d1+archon:d1',
        `scheduler.servers.python=${PYTHON}`,
        `scheduler.servers.port=${await freePort()}`,
        'total_train_steps=2',
        // the stand-in's deterministic toy model gives every episode of a group the same reward: train them anyway
        'rollout.filter_no_variance=false',
      ])
      const jobId = await until('the job id', () => jobIdOf(runDir))
      await until(`the server step of job ${jobId}\n${job.err()}`, async () =>
        [...(await steps(jobId)).values()].includes('server/0') ? true : undefined,
      )
      const r = await job.done
      expect(r.code, r.err).to.equal(0)
      expect(readFileSync(join(runDir, 'logs', 'server-0.log'), 'utf8')).to.contain(
        'sglang stand-in: -m sglang.launch_server --model-path configs/models/quickstart --host 0.0.0.0',
      )
      expect(metrics(runDir).map((m) => m.step)).to.deep.equal([1, 2])
    })
  })
})
