import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { expect } from 'chai'
import OpenAI from 'openai'
import { type EngineHandle, engineSchema, startEngine } from '../../actors/engine/actor.ts'
import { attachProxy } from '../../actors/proxy/actor.ts'
import { buildApp } from '../../actors/proxy/app.ts'
import { validate } from '../../actors/proxy/config.ts'
import { EmbeddedEngine } from '../../actors/proxy/engines/embedded.ts'
import { ProxyService } from '../../actors/proxy/service.ts'
import { startTrainer, type TrainerHandle, trainerSchema } from '../../actors/trainer/actor.ts'
import { loadModel } from '../../native/index.ts'
import { Actor } from '../../runtime/actor.ts'
import { loadConfig } from '../../runtime/config.ts'
import { Directory } from '../../runtime/directory.ts'
import { createLogger, silentLogger } from '../../runtime/log.ts'
import type { TrajRef } from '../../runtime/messages.ts'
import { tempDir, tinyModelDir } from '../engine/helpers.ts'
import { QWEN3_DIR, qwen3 } from '../fixtures/proxy/qwen3.ts'
import { packOf, startPackServer } from './helpers.ts'

const log = process.env.TEST_LOG
  ? createLogger({ file: process.env.TEST_LOG, level: 'debug' })
  : silentLogger()
const MAIN = new URL('../../actors/trainer/main.ts', import.meta.url).pathname

async function params(t: TrainerHandle): Promise<Record<string, Float32Array | Float64Array>> {
  return t.worker.exclusive(() => t.worker.model.parameters())
}
function maxDiff(a: Record<string, ArrayLike<number>>, b: Record<string, ArrayLike<number>>): number {
  let m = 0
  for (const [k, x] of Object.entries(a)) {
    const y = b[k]!
    for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!))
  }
  return m
}
function trainerConfig(modelDir: string, o: Record<string, unknown> = {}) {
  return loadConfig(trainerSchema, {
    raw: { model: { path: modelDir, seed: 3 }, optimizer: { lr: 0.01 }, ppo: { mb_max_tokens: 64 }, ...o },
  })
}

describe('trainer actor', () => {
  let tmp: ReturnType<typeof tempDir>
  let modelDir: string
  let ctl: Actor
  let dir: Directory
  const closers: (() => Promise<unknown>)[] = []

  beforeEach(async () => {
    tmp = tempDir('trainer-test')
    modelDir = tinyModelDir(join(tmp.path, 'model'))
    // a generous deadline: native calls that join a process group can hold this process's event loop
    // for seconds (every actor of these tests shares it), which must not get actors declared dead
    ctl = new Actor({ id: 'controller', role: 'controller', log, bus: { deadlineMs: 120_000 } })
    dir = new Directory(ctl)
    await ctl.start()
    dir.start()
  })
  afterEach(async () => {
    for (const c of closers.splice(0).reverse()) await c()
    dir.stop()
    await ctl.stop('test done', 100)
    tmp.remove()
  })

  async function trainer(id: string, cfg = trainerConfig(modelDir), extra: Record<string, unknown> = {}) {
    const t = await startTrainer(cfg, { id, log, controller: ctl.addr, ...extra })
    closers.push(() => t.close())
    return t
  }

  describe('when trajectories come from chats through a proxy and an embedded engine', () => {
    let engine: EngineHandle
    let client: (apiKey: string, baseURL: string) => OpenAI
    let t: TrainerHandle

    beforeEach(async () => {
      const ecfg = loadConfig(engineSchema, { raw: { model: { path: modelDir, seed: 3 }, chunk_tokens: 4 } })
      engine = await startEngine(ecfg, { id: 'engine/0', log, controller: ctl.addr })
      closers.push(() => engine.close())
      const proxyActor = new Actor({ id: 'proxy/0', role: 'proxy', log, controller: ctl.addr })
      const service = new ProxyService(validate({ model_dir: QWEN3_DIR, engines: [] }), {
        log,
        tokenizer: qwen3().tokenizer,
        engines: [new EmbeddedEngine(proxyActor, 'engine/0', 60000)],
      })
      attachProxy(proxyActor, service)
      await proxyActor.start()
      const app = buildApp(service)
      await app.listen({ host: '127.0.0.1', port: 0 })
      closers.push(async () => {
        await app.close()
        await service.close()
        await proxyActor.stop('test done', 100)
      })
      client = (apiKey, baseURL) => new OpenAI({ apiKey, baseURL, maxRetries: 0 })
      t = await trainer('trainer/0')
    })

    /** One group: n sessions of one chat turn each, rewarded, ended and exported. */
    async function group(task: string, rewards: number[]): Promise<TrajRef> {
      const ids: string[] = []
      for (const r of rewards) {
        const s = await ctl.ask('proxy/0', 'proxy:session:open', {})
        await client(s.apiKey, s.baseUrl).chat.completions.create({
          model: 'policy',
          messages: [{ role: 'user', content: `${task}: what is ${r}?` }],
          max_tokens: 6,
          temperature: 1,
        })
        await ctl.ask('proxy/0', 'proxy:session:reward', { sessionId: s.sessionId, reward: r })
        await ctl.ask('proxy/0', 'proxy:session:end', { sessionId: s.sessionId })
        ids.push(s.sessionId)
      }
      return ctl.ask('proxy/0', 'proxy:export', { sessionIds: ids })
    }

    it('should fetch by reference, train one step that changes the weights, and return finite stats', async () => {
      const groups = [
        { groupId: 'g0', traj: await group('a', [1, 0]) },
        { groupId: 'g1', traj: await group('b', [0.5, 0]) },
      ]
      const before = await params(t)
      const res = await ctl.ask(
        'trainer/0',
        'trainer:step',
        { step: 1, version: 0, groups },
        { timeoutMs: 120000 },
      )
      expect(res.step).to.equal(1)
      for (const [k, v] of Object.entries(res.stats)) expect(Number.isFinite(v), `${k} = ${v}`).to.equal(true)
      expect(res.stats).to.include({
        samples: 4,
        optimizer_steps: 1,
        skipped: 0,
        version_min: 0,
        version_max: 0,
      })
      expect(res.stats.loss_tokens).to.equal(groups.reduce((a, g) => a + g.traj.trainableTokens, 0))
      // engine and trainer hold the same weights: the engine's log-probs are the proximal ones
      expect(res.stats.abs_behave_minus_prox).to.be.below(1e-3)
      expect(maxDiff(before, await params(t))).to.be.above(1e-4)
      // fetched once, then freed on the proxy
      const err = await ctl.ask('proxy/0', 'proxy:fetch', { ref: groups[0]!.traj.ref }).catch((e) => e)
      expect(err.code).to.equal('PRX_ERR_NO_TRAJECTORY')
    })

    it('should publish weights that the engine loads through the proxy and labels with the new version', async () => {
      const groups = [{ groupId: 'g0', traj: await group('a', [1, 0, 0]) }]
      await ctl.ask('trainer/0', 'trainer:step', { step: 1, version: 0, groups }, { timeoutMs: 120000 })
      const wdir = join(tmp.path, 'weights', 'v1')
      await ctl.ask('trainer/0', 'trainer:publish', { version: 1, dir: wdir }, { timeoutMs: 120000 })
      await ctl.ask('proxy/0', 'proxy:pause', {})
      await ctl.ask('proxy/0', 'proxy:update_weights', { path: wdir, version: 1 }, { timeoutMs: 120000 })
      await ctl.ask('proxy/0', 'proxy:resume', {})
      const info = await ctl.ask('engine/0', 'engine:info', {})
      expect(info).to.include({ version: 1, weightsPath: wdir })
      const traj = await group('c', [1])
      expect(traj).to.include({ minVersion: 1, maxVersion: 1 })
    })
  })

  describe('when publishing', () => {
    it('should write safetensors that loadModel reads back with identical log-probs', async () => {
      const srv = await startPackServer('proxy/hand', log, ctl.addr)
      closers.push(() => srv.actor.stop('test done', 100))
      const t = await trainer('trainer/0')
      const traj = srv.add(packOf('h1', [9, 12, 7], [1, 0, 0.5]))
      await ctl.ask('trainer/0', 'trainer:step', { step: 1, version: 0, groups: [{ groupId: 'g', traj }] })
      const wdir = join(tmp.path, 'pub')
      await ctl.ask('trainer/0', 'trainer:publish', { version: 1, dir: wdir })
      expect(existsSync(join(wdir, 'model.safetensors'))).to.equal(true)
      expect(JSON.parse(readFileSync(join(wdir, 'config.json'), 'utf8')).hidden_size).to.equal(32)
      const batch = {
        inputIds: Int32Array.from([5, 9, 100, 7, 3, 8, 2]),
        cuSeqlens: Int32Array.from([0, 4, 7]),
      }
      const mine = await t.worker.exclusive(() => t.worker.model.logprobs(batch))
      const loaded = await loadModel(wdir)
      const theirs = await loaded.logprobs(batch)
      loaded.dispose()
      expect(Array.from(theirs.logprobs)).to.deep.equal(Array.from(mine.logprobs))
    })
  })

  describe('when a step gets unusable data', () => {
    it('should fail with TRN_ERR_BATCH and keep the fetched data of the other groups for a retry', async () => {
      const srv = await startPackServer('proxy/hand', log, ctl.addr)
      closers.push(() => srv.actor.stop('test done', 100))
      await trainer('trainer/0')
      const good = { groupId: 'a', traj: srv.add(packOf('ok', [9, 12], [1, 0])) }
      const broken = packOf('bad', [6], [1])
      broken.rewards[0] = Number.NaN
      const bad = { groupId: 'b', traj: srv.add(broken) }
      const err = await ctl
        .ask('trainer/0', 'trainer:step', { step: 1, version: 0, groups: [good, bad] })
        .catch((e) => e)
      expect(err.code).to.equal('TRN_ERR_BATCH')
      expect(err.message).to.match(/reward NaN is not finite/)
      // the retry without the broken group trains on the kept data: no second fetch
      const res = await ctl.ask('trainer/0', 'trainer:step', { step: 1, version: 0, groups: [good] })
      expect(res.stats.samples).to.equal(2)
      expect(srv.fetched.filter((r) => r === 'ok')).to.have.length(1)
    })
  })

  describe("when a group's proxy no longer has its trajectories (it restarted)", () => {
    it('should fail with TRN_ERR_LOST_TRAJECTORY naming the lost refs and keep the fetched ones', async () => {
      const srv = await startPackServer('proxy/again', log, ctl.addr)
      closers.push(() => srv.actor.stop('test done', 100))
      await trainer('trainer/0')
      const good = { groupId: 'a', traj: srv.add(packOf('kept', [9, 12], [1, 0])) }
      const ghost = { groupId: 'b', traj: { ...good.traj, ref: 'gone-with-the-old-proxy' } }
      const err = await ctl
        .ask('trainer/0', 'trainer:step', { step: 1, version: 0, groups: [good, ghost] })
        .catch((e) => e)
      expect(err.code).to.equal('TRN_ERR_LOST_TRAJECTORY')
      expect(err.details).to.deep.equal({ refs: ['gone-with-the-old-proxy'] })
      const res = await ctl.ask('trainer/0', 'trainer:step', { step: 1, version: 0, groups: [good] })
      expect(res.stats.samples).to.equal(2)
      expect(srv.fetched.filter((r) => r === 'kept')).to.have.length(1)
    })
  })

  describe('when restarted from a checkpoint', () => {
    // real AdamW betas: the restart is exact only because the moments are in the checkpoint
    // (<ckpt>/optimizer); the linear warm-up + decay checks that the LR schedule continues from the
    // checkpointed optimizer-step count
    const optimizer = { lr: 0.01, betas: [0.9, 0.999], schedule: 'linear', warmup_steps: 2, total_steps: 6 }

    it('should continue identically: same weights and learning rate after the next step', async () => {
      const srv = await startPackServer('proxy/hand', log, ctl.addr)
      closers.push(() => srv.actor.stop('test done', 100))
      const cfg = trainerConfig(modelDir, { optimizer })
      const d1 = [{ groupId: 'a', traj: srv.add(packOf('d1', [9, 12, 7, 6], [1, 0, 0.5, 0])) }]
      const d2 = [{ groupId: 'b', traj: srv.add(packOf('d2', [11, 5, 8], [0, 1, 1])) }]
      const ckpt = join(tmp.path, 'ckpt', 'step-1', 'trainer')

      const a = await trainer('trainer/a', cfg)
      await ctl.ask('trainer/a', 'trainer:step', { step: 1, version: 0, groups: d1 })
      await ctl.ask('trainer/a', 'trainer:checkpoint', { dir: ckpt, step: 1 })
      const sa = await ctl.ask('trainer/a', 'trainer:step', { step: 2, version: 1, groups: d2 })
      const pa = await params(a)

      const state = JSON.parse(readFileSync(join(ckpt, 'trainer.json'), 'utf8'))
      expect(state).to.include({ step: 1, optimizerSteps: 1, optimizerState: true })
      const b = await trainer('trainer/b', cfg, { resumeFrom: ckpt })
      expect(b.head!.stepsDone).to.equal(1)
      const sb = await ctl.ask('trainer/b', 'trainer:step', { step: 2, version: 1, groups: d2 })
      expect(sb.stats.lr).to.equal(sa.stats.lr)
      expect(sb.stats.optimizer_steps).to.equal(2)
      expect(maxDiff(pa, await params(b))).to.equal(0)

      // without the checkpoint the same step lands elsewhere (the comparison above can fail)
      const c = await trainer('trainer/c', cfg)
      const sc = await ctl.ask('trainer/c', 'trainer:step', { step: 1, version: 1, groups: d2 })
      expect(sc.stats.lr).to.not.equal(sa.stats.lr)
      expect(maxDiff(pa, await params(c))).to.be.above(1e-4)
    })

    it('should refuse a checkpoint directory without trainer.json', async () => {
      const err = await startTrainer(trainerConfig(modelDir), {
        id: 'trainer/x',
        log,
        resumeFrom: tmp.path,
      }).catch((e) => e)
      expect(err.code).to.equal('TRN_ERR_CHECKPOINT')
    })
  })

  describe('with two ranks in a Gloo process group', () => {
    let child: ChildProcess | undefined
    afterEach(async () => {
      if (child && child.exitCode === null) {
        const gone = new Promise((r) => child!.once('exit', r))
        child.kill('SIGTERM')
        await gone
      }
    })

    it('should split the batch over the ranks and update like one rank on the whole batch', async function () {
      this.timeout(180_000)
      const srv = await startPackServer('proxy/hand', log, ctl.addr)
      closers.push(() => srv.actor.stop('test done', 100))
      const raw = {
        model: { path: modelDir, seed: 3, dtype: 'float64' },
        optimizer: { lr: 0.01 },
        ppo: { minibatches: 2, mb_max_tokens: 16 },
      }
      const cfg = loadConfig(trainerSchema, { raw })
      const rdzv = join(tmp.path, 'rdzv')
      const cfgFile = join(tmp.path, 'run.json')
      writeFileSync(cfgFile, JSON.stringify({ actor: raw }))
      // rank 1: its own process, started the way the supervisor starts it
      const up = new Promise<void>((r) => dir.on('up', (e) => e.id === 'trainer/1' && r()))
      let stderr = ''
      child = spawn(process.execPath, ['--import', 'tsx', MAIN], {
        env: {
          ...process.env,
          AREAL_CONFIG: cfgFile,
          AREAL_CONTROLLER: ctl.addr,
          AREAL_ACTOR_ID: 'trainer/1',
          AREAL_RANK: '1',
          AREAL_WORLD_SIZE: '2',
          AREAL_RDZV: rdzv,
          LOG_LEVEL: process.env.TEST_LOG ? 'debug' : 'warn',
        },
        stdio: ['ignore', 'ignore', 'pipe'],
      })
      child.stderr!.on('data', (d) => {
        stderr += d
      })
      const died = new Promise<never>((_, bad) =>
        child!.once('exit', (code) => bad(new Error(`rank 1 exited ${code}: ${stderr}`))),
      )
      await Promise.race([trainer('trainer/0', cfg, { rank: 0, worldSize: 2, rendezvous: rdzv }), died])
      await Promise.race([up, died])
      const one = await trainer('single/0', cfg)
      const groups = [
        { groupId: 'a', traj: srv.add(packOf('m1', [9, 12, 7, 6, 10], [1, 0, 0.5, 0, 1])) },
        { groupId: 'b', traj: srv.add(packOf('m2', [11, 5, 8], [0, 1, 1])) },
      ]
      const s2 = await ctl.ask('trainer/0', 'trainer:step', { step: 1, version: 0, groups })
      const s1 = await ctl.ask('single/0', 'trainer:step', { step: 1, version: 0, groups })
      expect(s2.stats).to.include({ ranks: 2, minibatches: 2, loss_tokens: s1.stats.loss_tokens })
      expect(s2.stats.loss).to.be.closeTo(s1.stats.loss!, 1e-9)
      expect(s2.stats.grad_norm).to.be.closeTo(s1.stats.grad_norm!, 1e-9)
      // the weights (read back through a collective publish: both ranks join, rank 0 writes) match one
      // rank's update on the whole batch; model.parameters() would be collective too
      const wdir = join(tmp.path, 'w2')
      await ctl.ask('trainer/0', 'trainer:publish', { version: 1, dir: wdir })
      const back = await loadModel(wdir, { dtype: 'float64' })
      const pb = await back.parameters()
      back.dispose()
      expect(maxDiff(pb, await params(one))).to.be.below(1e-6) // saved as float32
    })
  })
})
