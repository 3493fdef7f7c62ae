/**
 * A real single-node, CPU-only Slurm for tests: munged, slurmctld and slurmd started as root with a
 * slurm.conf written into a temp dir (state, spool, logs and the munge socket there too; free ports).
 * Tests point the Slurm commands at it through SLURM_CONF (set in this process, inherited by children).
 *
 *   startSlurm() ─▶ munged -S <tmp>/munge.sock ─▶ slurmctld -f conf ─▶ slurmd -f conf ─▶ sinfo says idle
 *   stop()       ─▶ scontrol shutdown (ctld + slurmd) ─▶ munged --stop ─▶ rm -r <tmp>
 *
 * Skips (with the reason) only when not root or the binaries are missing: CI installs slurm-wlm and munge.
 */
import { execFile, execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, hostname, tmpdir, totalmem } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { freePort } from '../../runtime/net.ts'

const run = promisify(execFile)
const BINARIES = ['munged', 'slurmctld', 'slurmd', 'sbatch', 'srun', 'squeue', 'scancel', 'scontrol', 'sinfo']

function which(bin: string): boolean {
  for (const d of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin']))
    if (d && existsSync(join(d, bin))) return true
  return false
}

/** Why a real Slurm cannot run here, or undefined when it can. */
export function slurmUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'Slurm tests need root (slurmd runs as root); CI runs them as root'
  const missing = BINARIES.filter((b) => !which(b))
  if (missing.length) return `Slurm binaries missing (${missing.join(', ')}): apt-get install slurm-wlm munge`
  return undefined
}

export interface SlurmCluster {
  dir: string
  conf: string
  node: string
  /** the cluster's log files (for failure messages) */
  logs(): string
  stop(): Promise<void>
}

const sbin = (b: string) => (existsSync(`/usr/sbin/${b}`) ? `/usr/sbin/${b}` : b)

export async function startSlurm(): Promise<SlurmCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'areal-slurm-'))
  for (const d of ['state', 'spool', 'log', 'run', 'munge']) mkdirSync(join(dir, d), { mode: 0o755 })
  const node = hostname().split('.')[0]
  const sock = join(dir, 'munge', 'munge.sock')
  const key = join(dir, 'munge', 'munge.key')
  writeFileSync(key, execFileSync('head', ['-c', '1024', '/dev/urandom']), { mode: 0o600 })
  execFileSync(sbin('munged'), [
    '--force',
    `--socket=${sock}`,
    `--key-file=${key}`,
    `--log-file=${join(dir, 'munge', 'munged.log')}`,
    `--pid-file=${join(dir, 'munge', 'munged.pid')}`,
    `--seed-file=${join(dir, 'munge', 'munged.seed')}`,
  ])
  const [ctldPort, slurmdPort] = [await freePort(), await freePort()]
  const memMb = Math.floor((totalmem() / 2 ** 20) * 0.8)
  const conf = join(dir, 'slurm.conf')
  writeFileSync(
    conf,
    [
      'ClusterName=areal-test',
      `SlurmctldHost=${node}(127.0.0.1)`,
      'SlurmUser=root',
      'SlurmdUser=root',
      `SlurmctldPort=${ctldPort}`,
      `SlurmdPort=${slurmdPort}`,
      'AuthType=auth/munge',
      `AuthInfo=socket=${sock}`,
      `StateSaveLocation=${join(dir, 'state')}`,
      `SlurmdSpoolDir=${join(dir, 'spool')}`,
      `SlurmctldPidFile=${join(dir, 'run', 'slurmctld.pid')}`,
      `SlurmdPidFile=${join(dir, 'run', 'slurmd.pid')}`,
      `SlurmctldLogFile=${join(dir, 'log', 'slurmctld.log')}`,
      `SlurmdLogFile=${join(dir, 'log', 'slurmd.log')}`,
      'ProctrackType=proctrack/linuxproc',
      'TaskPlugin=task/none',
      'SelectType=select/cons_tres',
      'SelectTypeParameters=CR_Core',
      'MpiDefault=none',
      'ReturnToService=2',
      'SchedulerType=sched/backfill',
      'JobAcctGatherType=jobacct_gather/none',
      'AccountingStorageType=accounting_storage/none',
      'KillWait=5',
      'MinJobAge=300',
      `NodeName=${node} NodeAddr=127.0.0.1 CPUs=${availableParallelism()} RealMemory=${memMb} State=UNKNOWN`,
      `PartitionName=debug Nodes=${node} Default=YES MaxTime=INFINITE State=UP`,
      '',
    ].join('\n'),
  )
  process.env.SLURM_CONF = conf
  const logs = () =>
    ['slurmctld.log', 'slurmd.log']
      .map((f) => join(dir, 'log', f))
      .filter(existsSync)
      .map((f) => `--- ${f}\n${readFileSync(f, 'utf8').split('\n').slice(-20).join('\n')}`)
      .join('\n')
  const cluster: SlurmCluster = {
    dir,
    conf,
    node,
    logs,
    async stop() {
      await run('scontrol', ['shutdown']).catch(() => {})
      // wait for the daemons we started to go (their pid files name them)
      for (const f of ['slurmctld.pid', 'slurmd.pid']) await gone(join(dir, 'run', f))
      await run(sbin('munged'), ['--stop', `--socket=${sock}`]).catch(() => {})
      delete process.env.SLURM_CONF
      rmSync(dir, { recursive: true, force: true })
    },
  }
  try {
    execFileSync(sbin('slurmctld'), ['-c', '-f', conf])
    execFileSync(sbin('slurmd'), ['-f', conf])
    // ready once the node is idle
    const until = Date.now() + 60000
    for (;;) {
      const st = await run('sinfo', ['-h', '-n', node, '-o', '%T']).then(
        (r) => r.stdout.trim(),
        () => '',
      )
      if (st === 'idle') break
      if (Date.now() > until) throw new Error(`Slurm node ${node} is "${st}" after 60 s\n${logs()}`)
      await new Promise((r) => setTimeout(r, 250))
    }
  } catch (e) {
    await cluster.stop()
    throw e
  }
  return cluster
}

/** Wait until the process named in a pid file has exited (at most 20 s; then SIGKILL it). */
async function gone(pidFile: string): Promise<void> {
  if (!existsSync(pidFile)) return
  const pid = Number(readFileSync(pidFile, 'utf8').trim())
  if (!pid) return
  const alive = () => {
    try {
      process.kill(pid, 0)
      return true
    } catch {
      return false
    }
  }
  const until = Date.now() + 20000
  while (alive() && Date.now() < until) await new Promise((r) => setTimeout(r, 100))
  if (alive()) process.kill(pid, 'SIGKILL')
}

/** Steps of the job now in the queue: `<jobid>.<step>` → step name. */
export async function steps(jobId: string): Promise<Map<string, string>> {
  const { stdout } = await run('squeue', ['-s', '-h', '-j', jobId, '-o', '%i %j']).catch(() => ({
    stdout: '',
  }))
  return new Map(
    stdout
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => l.trim().split(/\s+/) as [string, string]),
  )
}

/** Jobs in the queue (any state). */
export async function queue(): Promise<string[]> {
  const { stdout } = await run('squeue', ['-h', '-o', '%i'])
  return stdout.trim().split('\n').filter(Boolean)
}
