/**
 * The Slurm scheduler on the submitting host: write the batch script into the run directory, `sbatch` it,
 * follow the job until it leaves the queue, and cancel it (`scancel`) on Ctrl-C.
 *
 *   bin/launch (here) ──sbatch <run dir>/slurm/job.sbatch──▶ allocation ──batch script──▶ bin/launch
 *        │ polls squeue; streams logs/controller.{out,err}                 (controller, inside: roles
 *        │ Ctrl-C / SIGTERM → scancel <job>                                  as srun steps, see slurm-steps.ts)
 *        └ exit code: the inner launcher's (slurm/exit-<job>), else from the job state
 *
 * The controller runs inside the allocation, not here: it then lives as long as the job (a closed
 * terminal or a rebooted login node does not end the run), it sits next to the actors it talks to
 * (compute nodes often cannot reach login nodes), and srun steps are started from within the
 * allocation as Slurm intends. This process only submits and watches; with it gone the job runs on.
 */
import { execFile } from 'node:child_process'
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { fail } from '../errors.ts'
import type { SchedulerConfig } from './config.ts'

const run = promisify(execFile)
const LAUNCH = resolve(import.meta.dirname, '../../bin/launch')

export interface BatchOptions {
  slurm: SchedulerConfig['slurm']
  jobName: string
  runDir: string
  configPath: string
  nNodes: number
  nGpusPerNode: number
  /** working directory of the job (where relative paths of the config resolve) */
  cwd: string
  /** the launcher to run inside (default: this checkout's bin/launch) */
  launch?: string
}

/** Single-quote for bash. */
export function sq(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`
}

/** The batch script: one allocation for the whole job; the controller (bin/launch) is its process. */
export function batchScript(o: BatchOptions): string {
  const s = o.slurm
  const logs = join(o.runDir, 'logs')
  const lines = [
    '#!/bin/bash',
    `#SBATCH --job-name=${o.jobName}`,
    `#SBATCH --nodes=${o.nNodes}`,
    '#SBATCH --ntasks-per-node=1',
    `#SBATCH --chdir=${o.cwd}`,
    `#SBATCH --output=${join(logs, 'controller.out')}`,
    `#SBATCH --error=${join(logs, 'controller.err')}`,
    ...(s.exclusive ? ['#SBATCH --exclusive'] : []),
    ...(o.nGpusPerNode > 0 ? [`#SBATCH --gres=gpu:${o.nGpusPerNode}`] : []),
    ...(s.partition ? [`#SBATCH --partition=${s.partition}`] : []),
    ...(s.account ? [`#SBATCH --account=${s.account}`] : []),
    ...(s.time_limit ? [`#SBATCH --time=${s.time_limit}`] : []),
    ...s.extra_sbatch.map((l) => `#SBATCH ${l.replace(/^#SBATCH\s+/, '')}`),
    '# written by bin/launch (scheduler.type=slurm); the controller runs here and starts the roles as srun steps',
    // a failing setup command ends the job at once (with its message in logs/controller.err)
    'set -e',
    ...s.setup,
    'set +e',
    'export AREAL_SLURM_INSIDE=1',
    `${sq(o.launch ?? LAUNCH)} ${sq(o.configPath)}`,
    'rc=$?',
    `echo "$rc" > ${sq(join(o.runDir, 'slurm'))}/exit-"$SLURM_JOB_ID"`,
    'exit "$rc"',
    '',
  ]
  return lines.join('\n')
}

/** Submit; resolves with the job id. */
export async function submit(scriptPath: string): Promise<string> {
  try {
    const { stdout } = await run('sbatch', ['--parsable', scriptPath])
    const id = stdout.trim().split(';')[0]
    if (!/^\d+$/.test(id)) throw new Error(`sbatch printed ${JSON.stringify(stdout.trim())}`)
    return id
  } catch (e) {
    const err = e as { code?: string; stderr?: string; message: string }
    if (err.code === 'ENOENT') throw fail('LCH_ERR_SLURM', 'sbatch not found in PATH')
    throw fail('LCH_ERR_SUBMIT', (err.stderr || err.message).trim(), { script: scriptPath })
  }
}

/** The job's state from squeue (PENDING, RUNNING, …), or undefined once it left the queue. */
export async function queueState(jobId: string): Promise<string | undefined> {
  try {
    const { stdout } = await run('squeue', ['-h', '-j', jobId, '-o', '%T'])
    return stdout.trim().split('\n')[0] || undefined
  } catch (e) {
    const err = e as { stderr?: string }
    if (/Invalid job id/i.test(err.stderr ?? '')) return undefined
    throw fail('LCH_ERR_SLURM', `squeue -j ${jobId}: ${(err.stderr ?? (e as Error).message).trim()}`)
  }
}

/** The final state of a job that left the queue (scontrol, then sacct), e.g. 'COMPLETED', 'CANCELLED'. */
export async function finalState(jobId: string): Promise<string> {
  try {
    const { stdout } = await run('scontrol', ['show', 'job', '-o', jobId])
    const m = /JobState=(\S+)/.exec(stdout)
    if (m) return m[1]
  } catch {
    // purged from the controller's memory: ask accounting
  }
  try {
    const { stdout } = await run('sacct', ['-n', '-X', '-P', '-j', jobId, '-o', 'State'])
    const st = stdout.trim().split('\n')[0]?.split(' ')[0]
    if (st) return st
  } catch {
    // no accounting
  }
  return 'UNKNOWN'
}

/** Append-only file follower (the job's stdout/stderr written on the shared file system). */
class Tail {
  private pos = 0
  constructor(
    private readonly file: string,
    private readonly out: NodeJS.WritableStream,
  ) {}
  pump(): void {
    if (!existsSync(this.file)) return
    const size = statSync(this.file).size
    if (size <= this.pos) return
    const fd = openSync(this.file, 'r')
    try {
      const buf = Buffer.alloc(size - this.pos)
      const n = readSync(fd, buf, 0, buf.length, this.pos)
      this.pos += n
      this.out.write(buf.subarray(0, n))
    } finally {
      closeSync(fd)
    }
  }
}

export interface FollowOptions extends BatchOptions {
  /** called once submitted */
  onSubmit?: (jobId: string) => void
  /** stream the controller's stdout/stderr here (default: this process's) */
  stdout?: NodeJS.WritableStream
  stderr?: NodeJS.WritableStream
}

/**
 * Write the batch script, submit it and follow the job to its end. Resolves with the exit code: the
 * inner launcher's, 130 when cancelled from here, 1 when the job ended otherwise (its state is printed).
 */
export async function submitAndFollow(o: FollowOptions): Promise<number> {
  const stdout = o.stdout ?? process.stdout
  const stderr = o.stderr ?? process.stderr
  const sdir = join(o.runDir, 'slurm')
  mkdirSync(sdir, { recursive: true })
  mkdirSync(join(o.runDir, 'logs'), { recursive: true })
  const script = join(sdir, 'job.sbatch')
  writeFileSync(script, batchScript(o), { mode: 0o755 })
  const jobId = await submit(script)
  writeFileSync(join(sdir, 'job_id'), `${jobId}\n`)
  o.onSubmit?.(jobId)
  stderr.write(`launch: submitted Slurm job ${jobId} (${script}); Ctrl-C cancels it\n`)
  const tails = [
    new Tail(join(o.runDir, 'logs', 'controller.out'), stdout),
    new Tail(join(o.runDir, 'logs', 'controller.err'), stderr),
  ]
  let cancelled = false
  let wake: () => void = () => {}
  const cancel = () => {
    if (cancelled) return
    cancelled = true
    stderr.write(`\nlaunch: cancelling Slurm job ${jobId}\n`)
    run('scancel', [jobId]).catch((e) => stderr.write(`launch: scancel ${jobId}: ${(e as Error).message}\n`))
    wake()
  }
  process.on('SIGINT', cancel)
  process.on('SIGTERM', cancel)
  try {
    let last = ''
    let errors = 0
    for (;;) {
      let st: string | undefined
      try {
        st = await queueState(jobId)
        errors = 0
      } catch (e) {
        // slurmctld restarting or busy: keep following for a while; the job itself is not touched
        if (++errors >= 10) throw e
        stderr.write(`launch: ${(e as Error).message} (retrying)\n`)
        st = last || 'UNKNOWN'
      }
      for (const t of tails) t.pump()
      if (!st) break
      if (st !== last) {
        stderr.write(`launch: job ${jobId} ${st}\n`)
        last = st
      }
      await new Promise<void>((r) => {
        const t = setTimeout(r, o.slurm.poll_ms)
        wake = () => {
          clearTimeout(t)
          r()
        }
      })
    }
    for (const t of tails) t.pump()
    const exitFile = join(sdir, `exit-${jobId}`)
    if (cancelled) {
      stderr.write(`launch: Slurm job ${jobId} cancelled\n`)
      return 130
    }
    if (existsSync(exitFile)) return Number(readFileSync(exitFile, 'utf8').trim()) || 0
    const state = await finalState(jobId)
    {
      const e = fail('LCH_ERR_JOB', `Slurm job ${jobId} ended ${state}; see ${join(o.runDir, 'logs')}`)
      stderr.write(`launch failed: ${e.code}: ${e.message}\n`)
    }
    return 1
  } finally {
    process.off('SIGINT', cancel)
    process.off('SIGTERM', cancel)
  }
}
