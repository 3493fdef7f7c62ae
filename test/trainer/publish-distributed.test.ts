/**
 * Weight publishing by broadcast to SGLang servers: the trainer's model (rank 0 of the update group) →
 * stand-in SGLang servers (test/fixtures/proxy/sglang-standin.ts, a labelled stand-in following SGLang's
 * documented update_weights_from_distributed protocol) running as child processes, each joining the
 * group over Gloo with a native model of another seed; weights are read back with /get_weights_by_name.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { expect } from 'chai'
import { SglangEngine } from '../../actors/proxy/engines/sglang.ts'
import {
  bucketize,
  DistributedPublisher,
  type DistributedPublisherConfig,
  followPublish,
  sglangStorePrefix,
} from '../../actors/trainer/publish-distributed.ts'
import { createModel, type HfQwen3Config, initProcessGroup, type Model } from '../../native/index.ts'
import { freePort } from '../../runtime/net.ts'
import { QWEN3_DIR } from '../fixtures/proxy/qwen3.ts'
import { debugConfig, microBatch, pairs } from '../native/helpers.ts'

const config = debugConfig({ vocab_size: 128, tie_word_embeddings: false, eos_token_id: 127 })
const standinScript = new URL('../fixtures/proxy/sglang-standin.ts', import.meta.url).pathname

interface Server {
  url: string
  proc: ChildProcess
}

/** Starts a stand-in server process with a native model of `cfg` and `seed`; resolves with its URL. */
function startServer(dir: string, cfg: HfQwen3Config, seed: number): Promise<Server> {
  const modelDir = join(dir, `model-${seed}`)
  mkdirSync(modelDir, { recursive: true })
  writeFileSync(join(modelDir, 'config.json'), JSON.stringify(cfg))
  const args = ['--tokenizer-path', QWEN3_DIR, '--model-path', modelDir, '--random-seed', String(seed)]
  const proc = spawn(process.execPath, ['--import', 'tsx', standinScript, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stderr = ''
  proc.stderr!.on('data', (b: Buffer) => {
    stderr += b.toString()
  })
  return new Promise((resolve, reject) => {
    proc.once('exit', (code) => reject(new Error(`stand-in exited ${code}: ${stderr}`)))
    createInterface({ input: proc.stdout! }).once('line', (line) => {
      resolve({ url: (JSON.parse(line) as { url: string }).url, proc })
    })
  })
}

function stopServer(s: Server): Promise<void> {
  if (s.proc.exitCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    s.proc.once('exit', () => resolve())
    s.proc.kill('SIGTERM')
  })
}

/** float32 → bf16 → float32, round to nearest even (what the wire dtype does to a value). */
function bf16(x: Float32Array): Float32Array {
  const u = new Uint32Array(x.buffer.slice(x.byteOffset, x.byteOffset + x.byteLength))
  for (let i = 0; i < u.length; i++) {
    const lsb = (u[i]! >>> 16) & 1
    u[i] = ((u[i]! + 0x7fff + lsb) >>> 16) << 16
  }
  return new Float32Array(u.buffer)
}

/** A server's copy of every parameter (all rows), flattened. */
async function readBack(url: string, model: Model): Promise<Record<string, Float32Array>> {
  const client = new SglangEngine({ url, timeoutMs: 20_000 })
  const out: Record<string, Float32Array> = {}
  for (const p of model.params) {
    const rows = await client.getWeightsByName(p.name, p.shape[0])
    out[p.name] = Float32Array.from((rows as (number | number[])[]).flat())
  }
  return out
}

/** Every parameter of `got` equals `want` (after `round`), or the first mismatch is named. */
function expectSame(
  got: Record<string, Float32Array>,
  want: Record<string, Float32Array | Float64Array>,
  round: (x: Float32Array) => Float32Array = (x) => x,
  label = '',
): void {
  for (const [name, w] of Object.entries(want)) {
    const r = round(w as Float32Array)
    const g = got[name]!
    expect(g.length, `${label} ${name} length`).to.equal(r.length)
    const bad = g.findIndex((v, i) => v !== r[i])
    expect(bad, `${label} ${name}: ${pairs(g, r)}`).to.equal(-1)
  }
}

function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  return p.then(
    () => 'resolved',
    (e: { code?: string }) => e.code,
  )
}

describe('publishing weights by broadcast to SGLang servers', () => {
  let dir: string
  let servers: Server[] = []
  let trainer: Model
  let publisher: DistributedPublisher | undefined
  let group = 0

  const publisherFor = (urls: string[], over: Partial<DistributedPublisherConfig> = {}) =>
    new DistributedPublisher({
      engines: urls.map((url) => ({ url })),
      backend: 'gloo',
      dtype: 'float32',
      bucketBytes: 16 * 1024,
      groupName: `weights-${process.pid}-${group++}`,
      groupTimeoutMs: 20_000,
      ...over,
    })

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'trn-publish-dist-'))
    servers = await Promise.all([startServer(dir, config, 2), startServer(dir, config, 3)])
  })
  after(async () => {
    await Promise.all(servers.map(stopServer))
    rmSync(dir, { recursive: true, force: true })
  })
  beforeEach(async () => {
    trainer = await createModel({ config, seed: 1 })
  })
  afterEach(async () => {
    await publisher?.close()
    publisher = undefined
    trainer.dispose()
  })

  describe('when both servers joined the update group', () => {
    beforeEach(async () => {
      publisher = publisherFor(servers.map((s) => s.url))
      await publisher.connect()
    })

    it('should give both servers every parameter of the trainer, exactly in float32, in several buckets', async () => {
      const want = await trainer.parameters()
      const before = await readBack(servers[0]!.url, trainer)
      expect(before['lm_head.weight']![0]).to.not.equal(want['lm_head.weight']![0])
      const stats = await publisher!.publish(trainer, 7)
      const numel = trainer.params.reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0)
      expect(stats.bytes).to.equal(numel * 4)
      expect(stats.version).to.equal(7)
      expect(stats.buckets).to.be.above(3)
      expect(stats.tensors).to.equal(trainer.params.length)
      expect(stats.gbPerS).to.be.above(0)
      for (const s of servers) expectSame(await readBack(s.url, trainer), want, undefined, s.url)
      // the last bucket carried weight_version: tokens generated now are labelled with it
      for (const s of servers) {
        const res = await fetch(`${s.url}/generate`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ input_ids: [1, 2, 3], sampling_params: { max_new_tokens: 1 } }),
        })
        const body = (await res.json()) as { meta_info: { weight_version: string } }
        expect(body.meta_info.weight_version).to.equal('7')
      }
    })

    it('should move the servers to the new weights after a training step', async () => {
      await publisher!.publish(trainer, 1)
      const old = await trainer.parameters()
      const mb = microBatch([6, 5], config.vocab_size, 7)
      await trainer.ppoStep([mb], {}, { lr: 1e-2 })
      const want = await trainer.parameters()
      expect(want['model.norm.weight']![0]).to.not.equal(old['model.norm.weight']![0])
      await publisher!.publish(trainer, 2)
      for (const s of servers) expectSame(await readBack(s.url, trainer), want, undefined, s.url)
    })

    it('should refuse a second group on a server that is in one, with PRX_ERR_ENGINE_REFUSED', async () => {
      const other = publisherFor([servers[0]!.url])
      const err = await other.connect().then(
        () => undefined,
        (e: { code?: string; message: string }) => e,
      )
      expect(err?.code).to.equal('PRX_ERR_ENGINE_REFUSED')
      expect(err?.message).to.contain(servers[0]!.url).and.to.contain('already in update group')
      // the first group still works
      await publisher!.publish(trainer, 1)
    })
  })

  describe('when bfloat16 is the wire dtype', () => {
    beforeEach(async () => {
      publisher = publisherFor(
        servers.map((s) => s.url),
        { dtype: 'bfloat16' },
      )
      await publisher.connect()
    })

    it('should give the servers the trainer weights rounded to bfloat16', async () => {
      const stats = await publisher!.publish(trainer, 1)
      const numel = trainer.params.reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0)
      expect(stats.bytes).to.equal(numel * 2)
      const want = await trainer.parameters()
      for (const s of servers) expectSame(await readBack(s.url, trainer), want, bf16, s.url)
    })
  })

  describe('when the trainer is sharded over two ranks', () => {
    let shards: Model[] = []
    afterEach(() => {
      for (const m of shards) m.dispose()
      shards = []
    })

    it('should publish the full parameters from rank 0 while rank 1 follows', async () => {
      const storePath = join(dir, `trainer-store-${group}`)
      const pgs = await Promise.all(
        [0, 1].map((rank) => initProcessGroup({ rank, worldSize: 2, storePath, timeoutMs: 20_000 })),
      )
      shards = await Promise.all(pgs.map((processGroup) => createModel({ config, seed: 5, processGroup })))
      publisher = publisherFor(servers.map((s) => s.url))
      await publisher.connect()
      const [stats] = await Promise.all([
        publisher.publish(shards[0]!, 1),
        followPublish(shards[1]!, publisher.config),
      ])
      expect(stats.buckets).to.be.above(3)
      const [want] = await Promise.all(shards.map((m) => m.parameters()))
      // seed 5 is not what the servers held before
      expect(want!['lm_head.weight']![0]).to.not.equal((await trainer.parameters())['lm_head.weight']![0])
      for (const s of servers) expectSame(await readBack(s.url, trainer), want!, undefined, s.url)
    })
  })

  describe('when an engine does not answer or is down', () => {
    let silent: Server & { close(): void }
    before(async () => {
      // accepts connections and never answers
      const held: import('node:net').Socket[] = []
      const srv = createServer((c) => held.push(c))
      await new Promise<void>((ok) => srv.listen(0, '127.0.0.1', ok))
      const port = (srv.address() as { port: number }).port
      silent = {
        url: `http://127.0.0.1:${port}`,
        proc: undefined as never,
        close: () => {
          for (const c of held) c.destroy()
          srv.close()
        },
      }
    })
    after(() => silent.close())

    it('should end connect with PRX_ERR_UPSTREAM_TIMEOUT within the HTTP limit', async () => {
      // (groupTimeoutMs short: the trainer's own join waits that long for ranks that never come)
      publisher = publisherFor([silent.url], { httpTimeoutMs: 500, groupTimeoutMs: 3000 })
      expect(await codeOf(publisher.connect())).to.equal('PRX_ERR_UPSTREAM_TIMEOUT')
    })

    it('should end connect with PRX_ERR_ENGINE_DOWN when nothing listens', async () => {
      const port = await freePort()
      publisher = publisherFor([`http://127.0.0.1:${port}`], { groupTimeoutMs: 3000 })
      expect(await codeOf(publisher.connect())).to.equal('PRX_ERR_ENGINE_DOWN')
    })
  })

  describe("when one server's model does not match the trainer's", () => {
    let odd: Server
    before(async () => {
      odd = await startServer(dir, { ...config, intermediate_size: 48 }, 4)
    })
    after(() => stopServer(odd))

    it('should end the publish with PRX_ERR_ENGINE_REFUSED naming that server, and refuse to go on', async () => {
      // the refusing server skips the broadcast: the trainer's send ends by the group timeout at worst
      publisher = publisherFor([servers[0]!.url, odd.url], { bucketBytes: 1 << 30, groupTimeoutMs: 8000 })
      await publisher.connect()
      const err = await publisher.publish(trainer, 1).then(
        () => undefined,
        (e: { code?: string; message: string }) => e,
      )
      expect(err?.code).to.equal('PRX_ERR_ENGINE_REFUSED')
      expect(err?.message).to.contain(odd.url).and.to.contain('mlp')
      expect(await codeOf(publisher.publish(trainer, 2))).to.equal('TRN_ERR_DIST')
    })
  })
})

describe('publisher configuration and buckets', () => {
  it('should split parameters in order into buckets of at most bucketBytes, a larger tensor alone', () => {
    const params = [
      { name: 'a', shape: [4, 4] },
      { name: 'b', shape: [4] },
      { name: 'c', shape: [100] },
      { name: 'd', shape: [2, 2] },
      { name: 'e', shape: [3] },
    ]
    const b = bucketize(params, 'float32', 79)
    expect(b.map((x) => x.names)).to.deep.equal([['a'], ['b'], ['c'], ['d', 'e']])
    expect(b.map((x) => x.bytes)).to.deep.equal([64, 16, 400, 28])
    expect(b[0]!.shapes).to.deep.equal([[4, 4]])
    expect(bucketize(params, 'float32', 80).map((x) => x.names)).to.deep.equal([
      ['a', 'b'],
      ['c'],
      ['d', 'e'],
    ])
    expect(bucketize(params, 'bfloat16', 79).map((x) => x.names)).to.deep.equal([
      ['a', 'b'],
      ['c'],
      ['d', 'e'],
    ])
  })

  it("should put the group's store keys where torch puts those of SGLang's group", () => {
    // PrefixStore(g) ∘ PrefixStore(g + '/') ∘ PrefixStore('cuda/'), each joining with '/'
    expect(sglangStorePrefix('weight_update_group', 'nccl')).to.equal(
      'weight_update_group/weight_update_group//cuda/',
    )
    expect(sglangStorePrefix('g', 'gloo')).to.equal('g/g//cpu/')
  })

  it('should give each engine the rank offset after the tp sizes before it', () => {
    const p = new DistributedPublisher({
      engines: [{ url: 'http://a:1', tpSize: 2 }, { url: 'http://b:1' }, { url: 'http://c:1', tpSize: 4 }],
    })
    expect(p.rankOffsets()).to.deep.equal([1, 3, 4])
    expect(p.worldSize).to.equal(8)
  })

  it('should refuse bad config with CFG_ERR_VALUE naming the key', () => {
    const keyOf = (c: Partial<DistributedPublisherConfig>) => {
      try {
        new DistributedPublisher(c)
      } catch (e) {
        return (
          (e as { code: string; details: { key: string } }).code +
          ' ' +
          (e as { details: { key: string } }).details.key
        )
      }
      return 'accepted'
    }
    const engines = [{ url: 'http://127.0.0.1:1' }]
    expect(keyOf({ engines: [] })).to.equal('CFG_ERR_VALUE engines')
    expect(keyOf({ engines: [{ url: 'https://x:1' }] })).to.equal('CFG_ERR_VALUE engines[0].url')
    expect(keyOf({ engines, bucketBytes: 0 })).to.equal('CFG_ERR_VALUE bucketBytes')
    expect(keyOf({ engines, dtype: 'int8' as never })).to.equal('CFG_ERR_VALUE dtype')
    expect(keyOf({ engines: [{ url: 'http://x:1', tpSize: 0 }] })).to.equal('CFG_ERR_VALUE engines[0].tpSize')
    expect(keyOf({ engines })).to.equal('accepted')
  })

  it('should refuse to publish before connect, with TRN_ERR_ARG', async () => {
    const p = new DistributedPublisher({ engines: [{ url: 'http://127.0.0.1:1' }] })
    const m = await createModel({ config, seed: 1 })
    try {
      expect(await codeOf(p.publish(m, 1))).to.equal('TRN_ERR_ARG')
    } finally {
      m.dispose()
    }
  })
})
