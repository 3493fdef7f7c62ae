/**
 * The Slurm scheduler inside the allocation: bin/launch runs as the batch script's process (the
 * controller) and starts every planned process as an `srun` step of the same job, supervised like a
 * local child (the srun client is the child; its output is the step's output).
 *
 *   srun --overlap --nodes=1 --ntasks=1 --nodelist=<host of node k> --job-name=<actor id>
 *        --kill-on-bad-exit=1 [--cpus-per-task=$SLURM_CPUS_ON_NODE] [--gres=gpu:<G>] <srun_args…>
 *        bash -c '<setup…>; export CUDA_VISIBLE_DEVICES=$AREAL_GPUS; exec "$@"' areal-step <command…>
 *
 * --overlap: roles share the nodes the job holds (the plan, not Slurm, divides GPUs among them: each step
 * sees every GPU of its node through --gres and keeps its planned ones through CUDA_VISIBLE_DEVICES).
 * NOTE: srun answers SIGTERM by killing the step, so stopping a step is a kill; a rollout actor is
 * drained (rollout:drain) before it is stopped, so nothing in flight is lost.
 */
import { execFileSync } from 'node:child_process'
import { fail } from '../errors.ts'
import type { ChildSpec } from '../supervisor.ts'
import type { SchedulerConfig } from './config.ts'
import { commandOf, type JobEnv, logFileOf, processEnv, type Scheduler } from './local.ts'
import type { RoleProcess } from './plan.ts'

/** Host names of the allocation's nodes, in Slurm's order (node 0 runs the batch script). */
export function allocationHosts(env: NodeJS.ProcessEnv = process.env): string[] {
  const list = env.SLURM_JOB_NODELIST ?? env.SLURM_NODELIST
  if (!env.SLURM_JOB_ID || !list)
    throw fail('LCH_ERR_SLURM', 'not inside a Slurm allocation (SLURM_JOB_ID / SLURM_JOB_NODELIST unset)')
  try {
    return execFileSync('scontrol', ['show', 'hostnames', list], { encoding: 'utf8' })
      .split('\n')
      .map((s) => s.trim())
      .filter(Boolean)
  } catch (e) {
    throw fail('LCH_ERR_SLURM', `scontrol show hostnames ${list}: ${(e as Error).message}`)
  }
}

/** The step script: setup commands, then the planned GPUs, then the process itself. */
export function stepScript(setup: string[], gpus: boolean): string {
  // Slurm sets CUDA_VISIBLE_DEVICES for a step with --gres; the plan's choice replaces it
  return [
    'set -e',
    ...setup,
    ...(gpus ? ['export CUDA_VISIBLE_DEVICES="$AREAL_GPUS"'] : []),
    'exec "$@"',
  ].join('\n')
}

/** srun argv (without the srun program itself) for one planned process. */
export function srunArgs(
  p: RoleProcess,
  host: string,
  slurm: SchedulerConfig['slurm'],
  nGpusPerNode: number,
  cpusOnNode: string | undefined,
): string[] {
  const { command, args } = commandOf(p)
  return [
    '--overlap',
    '--nodes=1',
    '--ntasks=1',
    `--nodelist=${host}`,
    `--job-name=${p.id}`,
    '--kill-on-bad-exit=1',
    ...(cpusOnNode ? [`--cpus-per-task=${cpusOnNode}`] : []),
    ...(nGpusPerNode > 0 && p.gpus.length ? [`--gres=gpu:${nGpusPerNode}`] : []),
    ...slurm.srun_args,
    'bash',
    '-c',
    stepScript(slurm.setup, nGpusPerNode > 0),
    'areal-step',
    command,
    ...args,
  ]
}

export function slurmStepScheduler(
  job: JobEnv,
  slurm: SchedulerConfig['slurm'],
  nGpusPerNode: number,
  hosts = allocationHosts(),
): Scheduler {
  return {
    type: 'slurm',
    hosts,
    spec: (p): ChildSpec => {
      const host = hosts[p.node]
      if (!host)
        throw fail(
          'LCH_ERR_SLURM',
          `${p.id} is planned on node ${p.node}; the allocation has ${hosts.length}`,
        )
      const env = processEnv(job, p, nGpusPerNode)
      if (nGpusPerNode > 0) env.AREAL_GPUS = p.gpus.join(',')
      return {
        id: p.id,
        role: p.role,
        command: 'srun',
        args: srunArgs(p, host, slurm, nGpusPerNode, process.env.SLURM_CPUS_ON_NODE),
        cwd: process.cwd(),
        env,
        logFile: logFileOf(job.runDir, p.id),
      }
    },
  }
}
