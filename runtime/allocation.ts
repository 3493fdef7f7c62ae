/**
 * `allocation_mode`: which resources each role gets (DESIGN §7).
 *
 *   allocation_mode := pool ('+' pool)*
 *   pool            := inference | training
 *   inference       := ('sglang' | 'vllm' | 'embedded') ':' dims      dims from d (servers), t, p
 *   training        := 'archon' ':' dims                               dims from d, p, t, c (c reserved)
 *   dims            := (letter integer)+                                each letter at most once; absent = 1
 *
 * `sglang:d4t2+archon:d4p1t2` = 4 inference servers of 2 GPUs each, and 8 training GPUs (4 data-parallel
 * × 1 pipeline × 2 tensor). On a CPU machine (`n_gpus_per_node` = 0) every replica is one process and
 * no GPU ids are assigned. `plan()` places replicas on nodes: a replica never spans nodes unless its
 * parallelism allows (an archon replica with p > 1 may put pipeline stages on different nodes).
 */
import { fail } from './errors.ts'

export type InferenceBackend = 'sglang' | 'vllm' | 'embedded'

export interface InferencePool {
  kind: 'inference'
  backend: InferenceBackend
  /** servers */
  d: number
  /** tensor parallel GPUs per server */
  t: number
  /** pipeline parallel GPUs per server */
  p: number
}

export interface TrainingPool {
  kind: 'training'
  backend: 'archon'
  d: number
  p: number
  t: number
  /** context parallel: reserved, must be 1 */
  c: number
}

export type Pool = InferencePool | TrainingPool

export interface Allocation {
  inference: InferencePool | undefined
  training: TrainingPool | undefined
}

const ALLOWED: Record<string, string> = { sglang: 'dtp', vllm: 'dtp', embedded: 'dtp', archon: 'dptc' }

function bad(mode: string, part: string, why: string): Error {
  return fail('CFG_ERR_VALUE', `allocation_mode ${JSON.stringify(mode)}: ${JSON.stringify(part)} ${why}`, {
    path: 'allocation_mode',
    value: mode,
    part,
  })
}

export function parseAllocation(mode: string): Allocation {
  if (!mode.trim()) throw bad(mode, mode, 'is empty; expected e.g. embedded:d1+archon:d1')
  const out: Allocation = { inference: undefined, training: undefined }
  for (const part of mode.split('+')) {
    const m = /^([a-z]+):(.*)$/.exec(part.trim())
    if (!m) throw bad(mode, part, 'is not backend:dims (e.g. sglang:d4t2 or archon:d2)')
    const [, backend, dimsText] = m
    const allowed = ALLOWED[backend]
    if (!allowed)
      throw bad(mode, part, `names unknown backend "${backend}"; expected sglang, vllm, embedded or archon`)
    const dims: Record<string, number> = {}
    const re = /([a-z])(\d+)/gy
    let consumed = 0
    for (let d = re.exec(dimsText); d; d = re.exec(dimsText)) {
      const [, letter, n] = d
      consumed = re.lastIndex
      if (!allowed.includes(letter))
        throw bad(mode, part, `has dimension "${letter}"; ${backend} takes ${allowed.split('').join(', ')}`)
      if (letter in dims) throw bad(mode, part, `gives "${letter}" twice`)
      const v = Number(n)
      if (v < 1) throw bad(mode, part, `has ${letter}${n}; sizes are ≥ 1`)
      dims[letter] = v
    }
    if (consumed !== dimsText.length || dimsText.length === 0)
      throw bad(mode, part, `has unreadable dims "${dimsText}"; expected letters with sizes, e.g. d4t2`)
    if (backend === 'archon') {
      if (out.training) throw bad(mode, part, 'is a second training pool; only one is allowed')
      if ((dims.c ?? 1) !== 1)
        throw bad(mode, part, 'uses context parallelism (c), which is reserved; use c1 or leave it out')
      out.training = {
        kind: 'training',
        backend: 'archon',
        d: dims.d ?? 1,
        p: dims.p ?? 1,
        t: dims.t ?? 1,
        c: 1,
      }
    } else {
      if (out.inference) throw bad(mode, part, 'is a second inference pool; only one is allowed')
      out.inference = {
        kind: 'inference',
        backend: backend as InferenceBackend,
        d: dims.d ?? 1,
        t: dims.t ?? 1,
        p: dims.p ?? 1,
      }
    }
  }
  return out
}

export interface ProcessPlan {
  role: 'engine' | 'trainer'
  backend: string
  /** replica index (engine server or trainer data-parallel rank group) */
  replica: number
  /** global rank for trainers, server index for engines */
  rank: number
  node: number
  /** GPU ids on its node ([] on CPU) */
  gpus: number[]
}

export interface ClusterSpec {
  nNodes: number
  /** 0 = CPU only */
  nGpusPerNode: number
}

/**
 * Processes and their placement. Inference replicas come first on the nodes, then training ranks
 * (trainer processes are one per GPU; one per data-parallel rank on CPU).
 */
export function plan(alloc: Allocation, cluster: ClusterSpec): ProcessPlan[] {
  const out: ProcessPlan[] = []
  if (cluster.nGpusPerNode === 0) {
    // CPU: one process per engine replica and per trainer rank, all on node 0
    const inf = alloc.inference
    if (inf)
      for (let i = 0; i < inf.d; i++)
        out.push({ role: 'engine', backend: inf.backend, replica: i, rank: i, node: 0, gpus: [] })
    const tr = alloc.training
    if (tr) {
      if (tr.p > 1)
        throw fail(
          'CFG_ERR_VALUE',
          'allocation_mode: pipeline parallel training (p > 1) needs GPUs (cluster.n_gpus_per_node > 0)',
          {
            path: 'allocation_mode',
          },
        )
      // one process per trainer rank: d replicas × t tensor-parallel ranks (tp-fastest)
      for (let r = 0; r < tr.d * tr.t; r++)
        out.push({
          role: 'trainer',
          backend: 'archon',
          replica: Math.floor(r / tr.t),
          rank: r,
          node: 0,
          gpus: [],
        })
    }
    return out
  }
  const G = cluster.nGpusPerNode
  const free: number[] = Array.from({ length: cluster.nNodes }, () => G)
  const take = (node: number, n: number) => {
    const start = G - free[node]
    free[node] -= n
    return Array.from({ length: n }, (_, i) => start + i)
  }
  const inf = alloc.inference
  if (inf) {
    const per = inf.t * inf.p
    if (per > G)
      throw fail(
        'CFG_ERR_VALUE',
        `allocation_mode: an inference server needs ${per} GPUs but a node has ${G}`,
        { path: 'allocation_mode' },
      )
    for (let i = 0; i < inf.d; i++) {
      const node = free.findIndex((f) => f >= per)
      if (node < 0)
        throw fail(
          'CFG_ERR_VALUE',
          `allocation_mode: not enough GPUs for ${inf.d} inference servers × ${per}`,
          { path: 'allocation_mode' },
        )
      out.push({ role: 'engine', backend: inf.backend, replica: i, rank: i, node, gpus: take(node, per) })
    }
  }
  const tr = alloc.training
  if (tr) {
    // a pipeline stage (t GPUs) stays on one node; stages of a replica may spread when p > 1
    const stage = tr.t
    if (stage > G)
      throw fail(
        'CFG_ERR_VALUE',
        `allocation_mode: a tensor-parallel group needs ${stage} GPUs but a node has ${G}`,
        { path: 'allocation_mode' },
      )
    let rank = 0
    for (let r = 0; r < tr.d; r++) {
      const replicaNodes = tr.p === 1 ? [free.findIndex((f) => f >= stage)] : []
      for (let s = 0; s < tr.p; s++) {
        const node = tr.p === 1 ? replicaNodes[0] : free.findIndex((f) => f >= stage)
        if (node === undefined || node < 0)
          throw fail(
            'CFG_ERR_VALUE',
            `allocation_mode: not enough GPUs for training d${tr.d}p${tr.p}t${tr.t}`,
            { path: 'allocation_mode' },
          )
        const gpus = take(node, stage)
        for (const g of gpus)
          out.push({ role: 'trainer', backend: 'archon', replica: r, rank: rank++, node, gpus: [g] })
      }
    }
  }
  return out
}
