/**
 * The local scheduler: every planned process is a child of bin/launch on this machine (supervised by
 * runtime/supervisor.ts). Actors run `node --import tsx actors/main.ts <role>`; servers run their own
 * command line. GPUs, when the plan assigns them, are given through CUDA_VISIBLE_DEVICES.
 */
import { join, resolve } from 'node:path'
import { fail } from '../errors.ts'
import type { ChildSpec } from '../supervisor.ts'
import type { RoleProcess } from './plan.ts'

export const ACTOR_MAIN = resolve(import.meta.dirname, '../../actors/main.ts')

export interface JobEnv {
  runDir: string
  /** resolved config every actor reads */
  configPath: string
  /** controller inbox address */
  controller: string
}

/** How a scheduler starts one planned process: as a supervised child spec. */
export interface Scheduler {
  readonly type: 'local' | 'slurm'
  /** host name of node k */
  readonly hosts: string[]
  spec(p: RoleProcess): ChildSpec
}

/** Log file of a process: <run dir>/logs/<role>-<i>.log */
export function logFileOf(runDir: string, id: string): string {
  return join(runDir, 'logs', `${id.replaceAll('/', '-')}.log`)
}

/** The environment every process of the job gets, plus the process's own. */
export function processEnv(job: JobEnv, p: RoleProcess, nGpusPerNode: number): Record<string, string> {
  return {
    AREAL_CONFIG: job.configPath,
    AREAL_CONTROLLER: job.controller,
    AREAL_ACTOR_ID: p.id,
    GLIBC_TUNABLES: process.env.GLIBC_TUNABLES ?? 'glibc.malloc.hugetlb=1',
    // on a GPU machine a process sees exactly its planned GPUs (none for CPU roles)
    ...(nGpusPerNode > 0 ? { CUDA_VISIBLE_DEVICES: p.gpus.join(',') } : {}),
    ...p.env,
  }
}

/** The command line of a planned process (actors: this Node with the tsx loader). */
export function commandOf(p: RoleProcess): { command: string; args: string[] } {
  if (p.role === 'server') {
    if (!p.argv?.length) throw fail('RT_ERR_SPAWN', `${p.id}: server without a command line`)
    return { command: p.argv[0], args: p.argv.slice(1) }
  }
  return { command: process.execPath, args: [...process.execArgv, ACTOR_MAIN, p.role] }
}

export function localScheduler(job: JobEnv, nGpusPerNode: number, nNodes: number): Scheduler {
  if (nNodes > 1)
    throw fail(
      'CFG_ERR_VALUE',
      `cluster.n_nodes=${nNodes} needs scheduler.type=slurm (local runs on one node)`,
      {
        path: 'cluster.n_nodes',
      },
    )
  return {
    type: 'local',
    hosts: ['127.0.0.1'],
    spec: (p) => ({
      id: p.id,
      role: p.role,
      ...commandOf(p),
      cwd: process.cwd(),
      env: processEnv(job, p, nGpusPerNode),
      logFile: logFileOf(job.runDir, p.id),
    }),
  }
}
