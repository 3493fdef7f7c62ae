/**
 * The job's process plan, independent of the scheduler: which processes run, on which node, with which
 * GPUs and environment. A scheduler (local.ts, slurm-steps.ts) turns each `RoleProcess` into a supervised
 * child — a plain process here, or an `srun` step in the allocation.
 *
 *   allocation_mode ──plan()──▶ engine replicas + trainer ranks (node, GPU ids)
 *        │ embedded:  engine/<i>  = actors/main.ts engine          (a bus actor)
 *        │ sglang|vllm: server/<i> = the server's own command line  (HTTP; no bus registration)
 *        ├ proxy/<j>   engines split round-robin among proxy_replicas (AREAL_ENGINES)
 *        ├ rollout/<k> rollout.workers (more join later through ctl:spawn)
 *        └ trainer/<r> one per GPU (one per rank, d×t, on CPU), AREAL_RANK/WORLD_SIZE/TP_SIZE/RDZV
 */
import { join } from 'node:path'
import type { RunConfig } from '../../actors/config.ts'
import { parseAllocation, plan } from '../allocation.ts'
import { fail } from '../errors.ts'
import { serverArgv } from './servers.ts'

export interface RoleProcess {
  /** unique id: the actor id for bus actors ('rollout/0'), 'server/<i>' for external servers */
  id: string
  /** actors/main.ts role, or 'server' */
  role: 'engine' | 'proxy' | 'rollout' | 'trainer' | 'server'
  /** node index into the scheduler's host list */
  node: number
  /** GPU ids on that node ([] = none) */
  gpus: number[]
  /** extra environment (the scheduler adds AREAL_CONFIG, AREAL_CONTROLLER, AREAL_ACTOR_ID) */
  env: Record<string, string>
  /** external program for role 'server' (argv[0] looked up in PATH); actors run actors/main.ts */
  argv?: string[]
  /** servers: base URL the proxies use */
  url?: string
}

export interface JobPlan {
  procs: RoleProcess[]
  /** trainer rank 0 (the head the controller talks to) */
  trainerHead: string
  /** nodes the plan uses (1 + the highest node index) */
  nodes: number
}

export interface PlanOptions {
  runDir: string
  /** host name of node k (URLs of servers) */
  hosts: string[]
  /** continue trainers from this checkpoint directory */
  resumeFrom?: string
  /** unique per launch: the trainers' rendezvous file */
  rdzv?: string
}

/** Plan every process of the job. Bad combinations fail with CFG_ERR_VALUE naming the key. */
export function planJob(cfg: RunConfig, o: PlanOptions): JobPlan {
  const alloc = parseAllocation(cfg.allocation_mode)
  if (!alloc.training)
    throw fail('CFG_ERR_VALUE', `allocation_mode ${cfg.allocation_mode}: no training pool (archon:…)`, {
      path: 'allocation_mode',
    })
  const placed = plan(alloc, { nNodes: cfg.cluster.n_nodes, nGpusPerNode: cfg.cluster.n_gpus_per_node })
  const nodes = 1 + Math.max(0, ...placed.map((p) => p.node))
  if (nodes > o.hosts.length)
    throw fail(
      'CFG_ERR_VALUE',
      `the plan uses ${nodes} nodes but the scheduler has ${o.hosts.length} (${o.hosts.join(', ')})`,
      { path: 'cluster.n_nodes' },
    )
  const procs: RoleProcess[] = []
  const trainers = placed.filter((p) => p.role === 'trainer')
  const rdzv = o.rdzv ?? join(o.runDir, `rdzv-${Date.now()}`)
  for (const p of trainers)
    procs.push({
      id: `trainer/${p.rank}`,
      role: 'trainer',
      node: p.node,
      gpus: p.gpus,
      env: {
        AREAL_RANK: String(p.rank),
        AREAL_WORLD_SIZE: String(trainers.length),
        AREAL_TP_SIZE: String(alloc.training.t),
        AREAL_RDZV: rdzv,
        ...(o.resumeFrom ? { AREAL_RESUME_FROM: join(o.resumeFrom, 'trainer') } : {}),
      },
    })
  // engines: embedded actors, or SGLang/vLLM servers (port per replica on its node)
  const engineRefs: Record<string, string>[] = []
  const perNode = new Map<number, number>()
  for (const p of placed.filter((x) => x.role === 'engine')) {
    if (p.backend === 'embedded') {
      procs.push({ id: `engine/${p.rank}`, role: 'engine', node: p.node, gpus: p.gpus, env: {} })
      engineRefs.push({ kind: 'embedded', actor: `engine/${p.rank}` })
      continue
    }
    const k = perNode.get(p.node) ?? 0
    perNode.set(p.node, k + 1)
    const port = cfg.scheduler.servers.port + k
    const url = `http://${o.hosts[p.node]}:${port}`
    const inf = alloc.inference!
    procs.push({
      id: `server/${p.rank}`,
      role: 'server',
      node: p.node,
      gpus: p.gpus,
      env: {},
      argv: serverArgv(p.backend as 'sglang' | 'vllm', {
        servers: cfg.scheduler.servers,
        model: cfg.scheduler.servers.model_path || cfg.engine.model.path,
        tp: inf.t,
        pp: inf.p,
        port,
        seed: cfg.seed + p.rank,
      }),
      url,
    })
    engineRefs.push({ kind: p.backend, url })
  }
  // trainer publish_mode broadcast: the SGLang servers and their GPUs (ranks in the update group)
  const sglang = engineRefs.filter((e) => e.kind === 'sglang')
  if (sglang.length && alloc.inference) {
    const tpSize = alloc.inference.t * alloc.inference.p
    const list = JSON.stringify(sglang.map((e) => ({ url: e.url, tpSize })))
    for (const p of procs) if (p.role === 'trainer') p.env.AREAL_PUBLISH_ENGINES = list
  }
  for (let i = 0; i < cfg.proxy_replicas; i++) {
    const mine = engineRefs.filter((_, j) => j % cfg.proxy_replicas === i)
    procs.push({
      id: `proxy/${i}`,
      role: 'proxy',
      node: 0,
      gpus: [],
      env: { AREAL_ENGINES: JSON.stringify(mine) },
    })
  }
  for (let i = 0; i < cfg.rollout.workers; i++) procs.push(rolloutProcess(i))
  return { procs, trainerHead: 'trainer/0', nodes }
}

/** Rollout actor number i (the initial ones and those added later through ctl:spawn). */
export function rolloutProcess(i: number, node = 0): RoleProcess {
  return { id: `rollout/${i}`, role: 'rollout', node, gpus: [], env: {} }
}
