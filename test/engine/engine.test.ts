import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { expect } from 'chai'
import { type EngineHandle, engineSchema, startEngine } from '../../actors/engine/actor.ts'
import { createModel, type Model, readHfConfig } from '../../native/index.ts'
import { Actor } from '../../runtime/actor.ts'
import { loadConfig } from '../../runtime/config.ts'
import { Directory } from '../../runtime/directory.ts'
import { silentLogger } from '../../runtime/log.ts'
import type { AskRes, SamplingShape } from '../../runtime/messages.ts'
import { SMALL_VOCAB, tempDir, tinyModelDir, when } from './helpers.ts'

const log = silentLogger()
const MAIN = new URL('../../actors/engine/main.ts', import.meta.url).pathname
type Gen = AskRes<'engine:generate'>

function sampling(maxNewTokens: number, o: Partial<SamplingShape> = {}): SamplingShape {
  return { maxNewTokens, temperature: 0, topP: 1, stopTokenIds: [], ...o }
}
const ids = (...x: number[]) => Int32Array.from(x)
const arr = (x: ArrayLike<number>) => Array.from(x)

describe('embedded engine actor', () => {
  let tmp: ReturnType<typeof tempDir>
  let modelDir: string
  let engine: EngineHandle
  let clients: Actor[]
  /** the same weights as the engine's, generating one request at a time */
  let ref: Model

  async function start(o: Record<string, unknown> = {}): Promise<void> {
    const cfg = loadConfig(engineSchema, { raw: { model: { path: modelDir, seed: 7 }, ...o } })
    engine = await startEngine(cfg, { id: 'engine/0', log })
  }
  async function client(i: number): Promise<Actor> {
    const a = await new Actor({ id: `client/${i}`, role: 'client', log, inbox: false }).start()
    clients.push(a)
    return a
  }
  const gen = (a: Actor, rid: string, inputIds: Int32Array<ArrayBuffer>, s: SamplingShape) =>
    a.ask(engine.addr, 'engine:generate', { rid, inputIds, sampling: s }, { timeoutMs: 60000 })
  async function alone(prompt: Int32Array, s: SamplingShape): Promise<number[]> {
    const [g] = await ref.generate([{ prompt, seed: s.seed }], {
      temperature: s.temperature,
      topP: s.topP,
      maxNewTokens: s.maxNewTokens,
      stopIds: s.stopTokenIds,
    })
    return arr(g!.tokens)
  }

  beforeEach(async () => {
    tmp = tempDir('engine-test')
    modelDir = tinyModelDir(tmp.path, SMALL_VOCAB)
    ref = await createModel({ config: readHfConfig(modelDir), seed: 7 })
    clients = []
  })
  afterEach(async () => {
    await Promise.all(clients.map((c) => c.stop('test done', 100)))
    await engine?.close()
    ref.dispose()
    tmp.remove()
  })

  describe('when several callers generate at once', () => {
    beforeEach(() => start({ max_batch: 4, chunk_tokens: 4 }))

    it('should batch their requests and give each the tokens it gets alone (greedy)', async () => {
      const cs = await Promise.all([0, 1, 2, 3].map(client))
      const prompts = [ids(1, 2, 3), ids(5, 6), ids(40, 41, 42, 43), ids(9)]
      // hold the requests until all four are queued, so the first chunk takes them together
      await cs[0]!.ask(engine.addr, 'engine:pause', {})
      const queued = when<number>(engine.batcher, 'queued', (n) => n === 4)
      const pending = cs.map((c, i) => gen(c, `r${i}`, prompts[i]!, sampling(10)))
      await queued
      expect((await cs[0]!.ask(engine.addr, 'engine:info', {})).queued).to.equal(4)
      await cs[0]!.ask(engine.addr, 'engine:resume', {})
      const got = await Promise.all(pending)
      for (let i = 0; i < 4; i++) {
        expect(arr(got[i]!.outputIds), `request ${i}`).to.deep.equal(await alone(prompts[i]!, sampling(10)))
        expect(got[i]!.finishReason).to.equal('length')
        expect(got[i]!.logprobs.length).to.equal(10)
      }
      // 10 tokens in chunks of 4 = 3 chunks for all four together (12 if they ran one by one)
      expect(engine.batcher.chunks).to.equal(3)
    })

    it('should let a request arriving mid-generation join the running batch', async () => {
      const [a, b] = await Promise.all([client(0), client(1)])
      const order: string[] = []
      const started = when<number>(engine.batcher, 'chunk', (n) => n >= 8)
      const long = gen(a, 'long', ids(7, 8), sampling(300)).then((g) => {
        order.push('long')
        return g
      })
      await started
      const short = await gen(b, 'short', ids(9, 10, 11), sampling(10))
      order.push('short')
      const l = await long
      // the short one was answered while the long one kept generating: they shared chunks
      expect(order).to.deep.equal(['short', 'long'])
      expect(engine.batcher.chunks).to.be.at.least(2)
      expect(arr(short.outputIds)).to.deep.equal(await alone(ids(9, 10, 11), sampling(10)))
      expect(arr(l.outputIds)).to.deep.equal(await alone(ids(7, 8), sampling(300)))
    })

    it('should give seeded samples that do not depend on batching or chunking', async () => {
      const cs = await Promise.all([0, 1, 2].map(client))
      const s = (seed: number) => sampling(9, { temperature: 1, seed })
      const got = await Promise.all(cs.map((c, i) => gen(c, `s${i}`, ids(3, 4, 5 + i), s(100 + i))))
      for (let i = 0; i < 3; i++)
        expect(arr(got[i]!.outputIds)).to.deep.equal(await alone(ids(3, 4, 5 + i), s(100 + i)))
    })

    it('should finish requests with different sampling parameters in separate chunks', async () => {
      const c = await client(0)
      const [a, b] = await Promise.all([
        gen(c, 'g', ids(1, 2), sampling(5)),
        gen(c, 't', ids(1, 2), sampling(5, { temperature: 0.7, seed: 3 })),
      ])
      expect(arr(a.outputIds)).to.deep.equal(await alone(ids(1, 2), sampling(5)))
      expect(arr(b.outputIds)).to.deep.equal(
        await alone(ids(1, 2), sampling(5, { temperature: 0.7, seed: 3 })),
      )
    })

    it('should stop a request at a stop token and include it', async () => {
      const c = await client(0)
      const full = await alone(ids(1, 2, 3), sampling(10))
      const stopAt = full[4]!
      const g = await gen(c, 'st', ids(1, 2, 3), sampling(10, { stopTokenIds: [stopAt] }))
      expect(g.finishReason).to.equal('stop')
      expect(arr(g.outputIds)).to.deep.equal(full.slice(0, full.indexOf(stopAt) + 1))
    })

    it('should abort one request and keep generating its batch neighbours unchanged', async () => {
      const c = await client(0)
      const started = when<number>(engine.batcher, 'chunk', (n) => n >= 8)
      const long = gen(c, 'long', ids(7, 8), sampling(1000))
      const other = gen(c, 'other', ids(9, 10), sampling(40))
      await started
      const { aborted } = await c.ask(engine.addr, 'engine:abort', { rids: ['long'] })
      expect(aborted).to.equal(1)
      const [l, o] = await Promise.all([long, other])
      expect(l.finishReason).to.equal('abort')
      expect(l.outputIds.length).to.be.below(1000)
      expect(arr(o.outputIds)).to.deep.equal(await alone(ids(9, 10), sampling(40)))
    })

    it('should refuse token ids outside the vocabulary with ENG_ERR_BAD_REQUEST', async () => {
      const c = await client(0)
      const err = await gen(c, 'bad', ids(1, 99999), sampling(3)).catch((e) => e)
      expect(err.code).to.equal('ENG_ERR_BAD_REQUEST')
      const err2 = await gen(c, 'long', ids(1), sampling(5000)).catch((e) => e)
      expect(err2.code).to.equal('ENG_ERR_BAD_REQUEST')
      // the engine still serves
      expect(arr((await gen(c, 'ok', ids(1), sampling(2))).outputIds)).to.have.length(2)
    })
  })

  describe('when paused mid-generation', () => {
    beforeEach(() => start({ max_batch: 2, chunk_tokens: 32 }))

    it('should answer abort with the partial tokens, and resuming with them continues the same output', async () => {
      const c = await client(0)
      const s = sampling(400, { temperature: 1, seed: 11 })
      const started = when<number>(engine.batcher, 'progress', (n) => n >= 16)
      const first = gen(c, 'p', ids(2, 3, 4), s)
      await started
      const paused = await c.ask(engine.addr, 'engine:pause', {})
      const part = await first
      expect(paused.aborted).to.equal(1)
      expect(part.finishReason).to.equal('abort')
      const n = part.outputIds.length
      expect(n).to.be.within(16, 399)
      expect(arr(part.versions)).to.deep.equal(new Array(n).fill(0))

      // held while paused: queued, not answered
      let answered = false
      const queued = when<number>(engine.batcher, 'queued', (k) => k === 1)
      const held = gen(c, 'p2', ids(2, 3, 4, ...part.outputIds), { ...s, maxNewTokens: 400 - n }).then(
        (g) => {
          answered = true
          return g
        },
      )
      await queued
      expect(await c.ask(engine.addr, 'engine:info', {})).to.include({ queued: 1, running: 0, paused: true })
      expect(answered).to.equal(false)
      await c.ask(engine.addr, 'engine:resume', {})
      const rest = await held
      expect(rest.finishReason).to.equal('length')
      const whole = await alone(ids(2, 3, 4), s)
      expect([...arr(part.outputIds), ...arr(rest.outputIds)]).to.deep.equal(whole)
    })
  })

  describe('when weights are updated', () => {
    let other: ReturnType<typeof tempDir>
    beforeEach(async () => {
      await start({ max_batch: 2, chunk_tokens: 16 })
      other = tempDir('engine-weights')
      const m = await createModel({ config: readHfConfig(modelDir), seed: 99 })
      await m.save(other.path, { dtype: 'float32' })
      m.dispose()
    })
    afterEach(() => other.remove())

    it('should generate with the new weights and label tokens with the new version', async () => {
      const c = await client(0)
      const before = await gen(c, 'a', ids(1, 2, 3), sampling(12))
      const res = await c.ask(engine.addr, 'engine:update_weights', { path: other.path, version: 3 })
      expect(res.version).to.equal(3)
      const after = await gen(c, 'b', ids(1, 2, 3), sampling(12))
      expect(arr(before.versions)).to.deep.equal(new Array(12).fill(0))
      expect(arr(after.versions)).to.deep.equal(new Array(12).fill(3))
      expect(arr(after.outputIds)).to.not.deep.equal(arr(before.outputIds))
      const info = await c.ask(engine.addr, 'engine:info', {})
      expect(info).to.include({ version: 3, weightsPath: other.path, paused: false })
    })

    it('should label each token of a request that spans an update with the version that produced it', async () => {
      const c = await client(0)
      const started = when<number>(engine.batcher, 'chunk', (n) => n >= 16)
      const g = gen(c, 'span', ids(5, 6), sampling(300))
      await started
      await c.ask(engine.addr, 'engine:update_weights', { path: other.path, version: 1 })
      const out: Gen = await g
      const v = arr(out.versions)
      expect(v[0]).to.equal(0)
      expect(v.at(-1)).to.equal(1)
      expect(v).to.deep.equal([...v].sort((x, y) => x - y))
      expect(v.length).to.equal(300)
    })

    it('should keep the old weights when the directory cannot be loaded', async () => {
      const c = await client(0)
      const err = await c
        .ask(engine.addr, 'engine:update_weights', { path: `${other.path}/missing`, version: 5 })
        .catch((e) => e)
      expect(err.code).to.match(/^TRN_ERR_/)
      const g = await gen(c, 'x', ids(1, 2, 3), sampling(6))
      expect(arr(g.versions)).to.deep.equal(new Array(6).fill(0))
      expect(arr(g.outputIds)).to.deep.equal(await alone(ids(1, 2, 3), sampling(6)))
    })
  })

  describe('when started as a process the way the supervisor starts it', () => {
    it('should register with the controller, serve generate, and exit 0 on SIGTERM', async function () {
      this.timeout(60_000)
      const ctl = await new Actor({ id: 'controller', role: 'controller', log }).start()
      const dir = new Directory(ctl)
      dir.start()
      const cfgFile = join(tmp.path, 'run.json')
      writeFileSync(
        cfgFile,
        JSON.stringify({ engine: { model: { path: modelDir, seed: 7 }, chunk_tokens: 4 } }),
      )
      const up = new Promise<void>((r) => dir.on('up', (e) => e.id === 'engine/9' && r()))
      const child = spawn(process.execPath, ['--import', 'tsx', MAIN], {
        env: {
          ...process.env,
          AREAL_CONFIG: cfgFile,
          AREAL_CONTROLLER: ctl.addr,
          AREAL_ACTOR_ID: 'engine/9',
          LOG_LEVEL: 'warn',
        },
        stdio: 'ignore',
      })
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)))
      try {
        await Promise.race([up, exited.then((c) => Promise.reject(new Error(`engine exited ${c}`)))])
        const g = await ctl.ask('engine/9', 'engine:generate', {
          rid: 'p',
          inputIds: ids(1, 2, 3),
          sampling: sampling(6),
        })
        expect(arr(g.outputIds)).to.deep.equal(await alone(ids(1, 2, 3), sampling(6)))
        child.kill('SIGTERM')
        expect(await exited).to.equal(0)
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL')
        dir.stop()
        await ctl.stop('test done', 100)
      }
    })
  })
})
