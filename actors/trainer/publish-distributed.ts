/**
 * Weight publishing by broadcast to SGLang servers (their update_weights_from_distributed protocol), for
 * trainer rank 0: the trainer is rank 0 of an "update group" whose other ranks are the servers' GPUs, and
 * sends every parameter as one broadcast per tensor, in buckets, while each server is told over HTTP which
 * tensors of which shapes and dtypes come next.
 *
 *   connect():  POST /init_weights_update_group to every engine ─┐ (not awaited: the servers join
 *               join as rank 0, hosting the TCPStore             ─┤  while we join)
 *               await every reply                               ─┘
 *   publish():  per bucket of ≤ bucketBytes (wire dtype):
 *                 POST /update_weights_from_distributed {names, dtypes, shapes} to every engine (not awaited)
 *                 model.publishParameters(bucket)   ── broadcast, one tensor at a time ──▶ ranks 1…W−1
 *                 await and check every reply
 *               the last bucket carries flush_cache and weight_version
 *   close():    POST /destroy_weights_update_group to every engine; drop the group
 *
 * Ranks: engine i gets rank offset 1 + Σ tp of the engines before it; world size 1 + Σ tp. A sharded
 * trainer (several ranks) gathers full parameters collectively: ranks > 0 call followPublish() with the
 * same config while rank 0 publishes.
 *
 * Failure: every wait is bounded — the rendezvous and each broadcast by `groupTimeoutMs`, each HTTP request
 * by `httpTimeoutMs` — and ends in a coded error: an engine that refuses (SGLang's success: false) →
 * PRX_ERR_ENGINE_REFUSED naming it and its message; an engine that does not answer →
 * PRX_ERR_UPSTREAM_TIMEOUT / PRX_ERR_ENGINE_DOWN; a collective that fails → TRN_ERR_DIST. A publish waits
 * for its broadcast to end before it rejects (the model is busy until then), so a refused bucket may cost
 * up to groupTimeoutMs. After any failure the group may be out of step (a receiver that skipped a
 * broadcast leaves bytes in flight): the publisher refuses further publishes until close() + connect().
 *
 * NOTE interop: real SGLang builds its side of the group with torch.distributed: a TCPStore at
 * master_address:master_port (our rank 0 serves it), wrapped in PrefixStore(group_name), handed to torch's
 * `_new_process_group_helper`, which (torch ≥ 2.0) wraps it again in PrefixStore(f"{group_name}/") and,
 * per device of the backend, PrefixStore(f"{device}/") — "cuda" for NCCL, the only backend SGLang takes.
 * c10d's PrefixStore joins prefix + "/" + key, so the keys land at
 * `<g>/<g>//cuda//<key>`: our side is one c10d PrefixStore of `sglangStorePrefix(g, backend)` =
 * `<g>/<g>//cuda/` (`storePrefix` overrides it). Read from SGLang's and torch's sources, tested against the
 * CPU stand-in of test/fixtures/proxy/sglang-standin.ts (which uses the same layout with "cpu"), NOT against
 * a live SGLang (none runs here): if its torch lays keys out differently, set `storePrefix`.
 */
import type { DeviceName, Model, SaveDtype } from '../../native/index.ts'
import { initProcessGroup, type ProcessGroup } from '../../native/index.ts'
import { fail } from '../../runtime/errors.ts'
import type { Logger } from '../../runtime/log.ts'
import { silentLogger } from '../../runtime/log.ts'
import { freePort } from '../../runtime/net.ts'
import { SglangEngine } from '../proxy/engines/sglang.ts'

/** One SGLang server taking part in the update group. */

/**
 * Where torch (≥ 2.0) puts the store keys of a process group that SGLang's `init_custom_process_group`
 * creates under `groupName` (see the NOTE above): `<g>/<g>//<device>/`, device "cuda" for NCCL ("cpu" for
 * Gloo, which only our stand-in uses).
 */
export function sglangStorePrefix(groupName: string, backend: 'nccl' | 'gloo'): string {
  return `${groupName}/${groupName}//${backend === 'nccl' ? 'cuda' : 'cpu'}/`
}
export interface PublishEngine {
  /** its HTTP address (http://host:port) */
  url: string
  /** GPUs of the server (its tp size): the ranks it takes in the group. Default 1. */
  tpSize?: number
}

export interface DistributedPublisherConfig {
  engines: PublishEngine[]
  /** where rank 0 (this process) hosts the group's TCPStore; the servers connect there. */
  masterAddress: string
  /** 0: a free port picked at connect(). */
  masterPort: number
  groupName: string
  /** the group's store keys live under this prefix (default: sglangStorePrefix(groupName, backend); see the interop NOTE). */
  storePrefix?: string
  /** 'nccl' (GPU trainer and servers) or 'gloo' (CPU; the stand-in). */
  backend: 'nccl' | 'gloo'
  /** NCCL: this rank's GPU. */
  device?: DeviceName
  /** Gloo: local address for the transport (default 127.0.0.1 when masterAddress is loopback). */
  glooHostname?: string
  /** dtype on the wire (and in the servers). */
  dtype: SaveDtype
  /** at most this many bytes (wire dtype) per bucket; a larger tensor travels alone. */
  bucketBytes: number
  /** rendezvous and per-broadcast limit. */
  groupTimeoutMs: number
  /** per-request limit of the HTTP calls (they answer once their broadcast is over). */
  httpTimeoutMs: number
}

export const defaults: DistributedPublisherConfig = {
  engines: [],
  masterAddress: '127.0.0.1',
  masterPort: 0,
  groupName: 'weight_update_group',
  backend: 'nccl',
  dtype: 'bfloat16',
  bucketBytes: 512 * 1024 * 1024,
  groupTimeoutMs: 300_000,
  httpTimeoutMs: 330_000,
}

/** What one publish did. */
export interface PublishStats {
  version: number
  /** bytes sent per receiver (wire dtype) */
  bytes: number
  tensors: number
  buckets: number
  seconds: number
  /** bytes / seconds / 1e9 */
  gbPerS: number
}

/** Names, wire dtypes and shapes of one bucket, in broadcast order. */
export interface Bucket {
  names: string[]
  shapes: number[][]
  bytes: number
}

const DTYPE_BYTES: Record<SaveDtype, number> = { float32: 4, bfloat16: 2, float16: 2 }

/**
 * Splits parameters (in the given order) into consecutive buckets of at most `bucketBytes` in `dtype`; a
 * tensor larger than that is a bucket of its own. Every rank computes the same split from the same model.
 */
export function bucketize(
  params: readonly { name: string; shape: readonly number[] }[],
  dtype: SaveDtype,
  bucketBytes: number,
): Bucket[] {
  const out: Bucket[] = []
  let cur: Bucket | undefined
  for (const p of params) {
    const bytes = p.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype]
    if (!cur || (cur.bytes + bytes > bucketBytes && cur.names.length > 0)) {
      cur = { names: [], shapes: [], bytes: 0 }
      out.push(cur)
    }
    cur.names.push(p.name)
    cur.shapes.push([...p.shape])
    cur.bytes += bytes
  }
  return out
}

/**
 * The part of ranks > 0 of a sharded trainer in a publish: the same buckets, in order, each gathered
 * collectively (rank 0 broadcasts them). Call it with rank 0's config while rank 0 calls publish().
 */
export async function followPublish(
  model: Model,
  cfg: Pick<DistributedPublisherConfig, 'dtype' | 'bucketBytes'>,
): Promise<void> {
  for (const b of bucketize(model.params, cfg.dtype, cfg.bucketBytes))
    await model.publishParameters({ names: b.names, dtype: cfg.dtype })
}

export class DistributedPublisher {
  readonly config: DistributedPublisherConfig
  private readonly clients: SglangEngine[]
  private readonly log: Logger
  private group: ProcessGroup | undefined
  private broken: Error | undefined
  private connecting = false

  /** Bad config fails here, naming the key. */
  constructor(config: Partial<DistributedPublisherConfig>, deps: { log?: Logger } = {}) {
    const c = { ...defaults, ...config }
    if (config.httpTimeoutMs === undefined) c.httpTimeoutMs = c.groupTimeoutMs + 30_000
    check(c)
    this.config = c
    this.clients = c.engines.map((e) => new SglangEngine({ url: e.url, timeoutMs: c.httpTimeoutMs }))
    this.log = (deps.log ?? silentLogger()).child({ component: 'publish-distributed' })
  }

  /** True between a successful connect() and close(). */
  get connected(): boolean {
    return this.group !== undefined
  }

  /** 1 + Σ tp: the trainer plus every server GPU. */
  get worldSize(): number {
    return 1 + this.config.engines.reduce((a, e) => a + (e.tpSize ?? 1), 0)
  }

  /** Each engine's first rank: 1 + the tp sizes of the engines before it. */
  rankOffsets(): number[] {
    let next = 1
    return this.config.engines.map((e) => {
      const r = next
      next += e.tpSize ?? 1
      return r
    })
  }

  /** Builds the update group with every engine (see the header). */
  async connect(): Promise<void> {
    if (this.group || this.connecting) throw fail('TRN_ERR_ARG', 'publisher is already connected')
    this.connecting = true
    const c = this.config
    try {
      const port = c.masterPort || (await freeStorePort(c.masterAddress))
      const offsets = this.rankOffsets()
      const t0 = performance.now()
      const replies = this.clients.map((cl, i) =>
        cl.initWeightsUpdateGroup({
          masterAddress: c.masterAddress,
          masterPort: port,
          rankOffset: offsets[i]!,
          worldSize: this.worldSize,
          groupName: c.groupName,
          backend: c.backend,
          timeoutMs: c.httpTimeoutMs,
        }),
      )
      const loopback = c.masterAddress === '127.0.0.1' || c.masterAddress === 'localhost'
      const glooHostname = c.glooHostname ?? (c.backend === 'gloo' && loopback ? '127.0.0.1' : undefined)
      const join = initProcessGroup({
        rank: 0,
        worldSize: this.worldSize,
        host: c.masterAddress,
        port,
        backend: c.backend,
        storePrefix: c.storePrefix ?? sglangStorePrefix(c.groupName, c.backend),
        eagerConnect: false, // SGLang's side runs no collective at creation
        timeoutMs: c.groupTimeoutMs,
        ...(c.device ? { device: c.device } : {}),
        ...(glooHostname ? { glooHostname } : {}),
      })
      // the first failure ends the wait (an engine that refused will never join); a join still pending
      // then ends by its own timeout and is dropped
      const [group] = await Promise.all([join, ...replies])
      this.group = group
      this.broken = undefined
      this.log.info(
        {
          engines: c.engines.length,
          worldSize: this.worldSize,
          port,
          ms: Math.round(performance.now() - t0),
        },
        'update group connected',
      )
    } finally {
      this.connecting = false
    }
  }

  /**
   * Sends every parameter of `model` (this trainer's rank 0) to every engine, bucket by bucket; the
   * engines report `version` for tokens generated afterwards. Resolves with what it took.
   */
  async publish(model: Model, version: number): Promise<PublishStats> {
    const group = this.group
    if (!group) throw fail('TRN_ERR_ARG', 'publish before connect(): the update group is not built')
    if (this.broken)
      throw fail(
        'TRN_ERR_DIST',
        `the update group failed in an earlier publish (${this.broken.message}); close() and connect() again`,
      )
    const c = this.config
    const buckets = bucketize(model.params, c.dtype, c.bucketBytes)
    const t0 = performance.now()
    let bytes = 0
    for (let i = 0; i < buckets.length; i++) {
      const b = buckets[i]!
      const last = i === buckets.length - 1
      // settled into a value at once: a refusal that comes while the broadcast runs is kept, not unhandled
      const replies = Promise.all(
        this.clients.map((cl) =>
          cl.updateWeightsFromDistributed({
            names: b.names,
            dtypes: b.names.map(() => c.dtype),
            shapes: b.shapes,
            groupName: c.groupName,
            flushCache: last,
            ...(last ? { weightVersion: version } : {}),
            timeoutMs: c.httpTimeoutMs,
          }),
        ),
      ).then(
        () => undefined,
        (e: unknown) => e as Error,
      )
      // the broadcast holds the model: wait for it to end either way before reporting anything
      const sendErr = await model.publishParameters({ group, names: b.names, dtype: c.dtype, root: 0 }).then(
        () => undefined,
        (e: unknown) => e as Error,
      )
      const replyErr = await replies
      const err = replyErr ?? sendErr
      if (err) {
        this.broken = err
        this.log.error(
          { bucket: i, buckets: buckets.length, version, err, broadcast: sendErr?.message },
          'weight publish failed',
        )
        throw err
      }
      bytes += b.bytes
    }
    const seconds = (performance.now() - t0) / 1000
    const stats: PublishStats = {
      version,
      bytes,
      tensors: model.params.length,
      buckets: buckets.length,
      seconds,
      gbPerS: bytes / Math.max(seconds, 1e-9) / 1e9,
    }
    this.log.info(stats, 'weights published')
    return stats
  }

  /** Tells every engine to leave the group (failures are logged, not thrown) and drops it. */
  async close(): Promise<void> {
    if (!this.group) return
    this.group = undefined
    const done = await Promise.allSettled(
      this.clients.map((cl) => cl.destroyWeightsUpdateGroup(this.config.groupName)),
    )
    done.forEach((d, i) => {
      if (d.status === 'rejected')
        this.log.warn(
          { engine: this.config.engines[i]!.url, err: d.reason },
          'leaving the update group failed',
        )
    })
  }
}

function check(c: DistributedPublisherConfig): void {
  const bad = (key: string, why: string) => fail('CFG_ERR_VALUE', `${key}: ${why}`, { key })
  if (!Array.isArray(c.engines) || c.engines.length === 0)
    throw bad('engines', 'give at least one engine {url, tpSize}')
  c.engines.forEach((e, i) => {
    if (typeof e.url !== 'string' || !/^http:\/\/[^/]+/.test(e.url))
      throw bad(`engines[${i}].url`, `expected http://host:port, got ${JSON.stringify(e.url)}`)
    if (e.tpSize !== undefined && !(Number.isInteger(e.tpSize) && e.tpSize > 0))
      throw bad(`engines[${i}].tpSize`, `expected a positive integer, got ${e.tpSize}`)
  })
  if (!['float32', 'bfloat16', 'float16'].includes(c.dtype))
    throw bad('dtype', `expected float32, bfloat16 or float16, got ${c.dtype}`)
  if (c.backend !== 'nccl' && c.backend !== 'gloo')
    throw bad('backend', `expected nccl or gloo, got ${c.backend}`)
  if (!(Number.isInteger(c.bucketBytes) && c.bucketBytes > 0))
    throw bad('bucketBytes', `expected a positive integer, got ${c.bucketBytes}`)
  if (!(Number.isInteger(c.masterPort) && c.masterPort >= 0 && c.masterPort < 65536))
    throw bad('masterPort', `expected 0 (pick one) or a port, got ${c.masterPort}`)
  for (const k of ['groupTimeoutMs', 'httpTimeoutMs'] as const)
    if (!(c[k] > 0)) throw bad(k, `expected a positive number of ms, got ${c[k]}`)
  if (!c.groupName) throw bad('groupName', 'must not be empty')
}

/** A port free on `host` now (the store binds it right after); TRN_ERR_DIST when there is none. */
function freeStorePort(host: string): Promise<number> {
  return freePort(host).catch((e: Error) => {
    throw fail('TRN_ERR_DIST', `no free port on ${host}: ${e.message}`, { host })
  })
}
