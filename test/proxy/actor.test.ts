import { expect } from 'chai'
import type { FastifyInstance } from 'fastify'
import OpenAI from 'openai'
import { attachProxy } from '../../actors/proxy/actor.ts'
import { buildApp } from '../../actors/proxy/app.ts'
import { validate } from '../../actors/proxy/config.ts'
import { EmbeddedEngine } from '../../actors/proxy/engines/embedded.ts'
import { ProxyService } from '../../actors/proxy/service.ts'
import { Actor } from '../../runtime/actor.ts'
import { silentLogger } from '../../runtime/log.ts'
import type { DirEntry } from '../../runtime/messages.ts'
import { startEngineActorStandin } from '../fixtures/proxy/engine-actor-standin.ts'
import { QWEN3_DIR, qwen3 } from '../fixtures/proxy/qwen3.ts'
import type { StandinCore } from '../fixtures/proxy/standin-core.ts'
import { toyLogprob } from '../fixtures/proxy/toy-model.ts'

const log = silentLogger()

describe('proxy actor on the bus with an embedded engine (engine actor stand-in)', () => {
  let engine: { actor: Actor; core: StandinCore }
  let proxyActor: Actor
  let service: ProxyService
  let app: FastifyInstance
  let client: Actor

  beforeEach(async () => {
    const { tokenizer } = qwen3()
    engine = await startEngineActorStandin(tokenizer)
    proxyActor = new Actor({ id: 'proxy/0', role: 'proxy', log })
    const config = validate({
      model_dir: QWEN3_DIR,
      engines: [{ kind: 'embedded', actor: engine.actor.addr }],
    })
    service = new ProxyService(config, {
      log,
      tokenizer,
      engines: [new EmbeddedEngine(proxyActor, engine.actor.addr, 20_000)],
    })
    app = buildApp(service)
    await app.listen({ host: '127.0.0.1', port: 0 })
    attachProxy(proxyActor, service)
    await proxyActor.start()
    client = await new Actor({ id: 'rollout/0', role: 'rollout', log, inbox: false }).start()
  })
  afterEach(async () => {
    await client.stop('done', 100)
    await app.close()
    await proxyActor.stop('done', 100)
    await service.close()
    await engine.actor.stop('done', 100)
  })

  describe('when a rollout runs an episode and the trainer fetches it', () => {
    it('should open, chat over HTTP, reward, end, export a reference and hand the typed arrays over once', async () => {
      const p = proxyActor.addr
      // 1. rollout opens a session over the bus
      const s = await client.ask(p, 'proxy:session:open', { meta: { task: 't1' } })
      // 2. the agent talks HTTP with the official client; the proxy generates on the engine actor
      const ai = new OpenAI({ baseURL: s.baseUrl, apiKey: s.apiKey, maxRetries: 0 })
      const r = await ai.chat.completions.create({
        model: 'policy',
        messages: [{ role: 'user', content: 'bus?' }],
      })
      expect(r.choices[0]!.message.content).to.equal('Hello! You said: bus? (v0)')
      // 3. rollout rewards and ends the session, then exports: the controller only sees the reference
      expect(
        (await client.ask(p, 'proxy:session:reward', { sessionId: s.sessionId, reward: 1 })).interactionId,
      ).to.equal(r.id)
      expect(await client.ask(p, 'proxy:session:end', { sessionId: s.sessionId })).to.deep.equal({
        completions: 1,
      })
      const ref = await client.ask(p, 'proxy:export', { sessionIds: [s.sessionId] })
      expect(ref).to.include({ proxy: 'proxy/0', samples: 1, minVersion: 0, maxVersion: 0 })
      expect(ref.trainableTokens).to.equal(r.usage!.completion_tokens)
      // 4. the trainer fetches the arrays by reference; they arrive as typed arrays
      const data = await client.ask(p, 'proxy:fetch', { ref: ref.ref })
      expect(data.inputIds).to.be.instanceOf(Int32Array)
      expect(data.logprobs).to.be.instanceOf(Float32Array)
      expect(data.lossMask).to.be.instanceOf(Uint8Array)
      expect(data.versions).to.be.instanceOf(Int32Array)
      expect(Array.from(data.rewards)).to.deep.equal([1])
      const start = data.lossMask.indexOf(1)
      const out = data.inputIds.subarray(start)
      expect(qwen3().tokenizer.decode(out, true)).to.equal(r.choices[0]!.message.content)
      out.forEach((id, i) => {
        expect(data.logprobs[start + i]).to.be.closeTo(toyLogprob(id, i, 0), 1e-6)
      })
      // 5. consumed: the proxy has freed it
      const again = await client
        .ask(p, 'proxy:fetch', { ref: ref.ref })
        .catch((e: { code: string }) => e.code)
      expect(again).to.equal('PRX_ERR_NO_TRAJECTORY')
      const stats = await client.ask(p, 'proxy:stats', {})
      expect(stats).to.include({ sessions: 0, storedTrajectories: 0 })
    })

    it('should free references released without a fetch', async () => {
      const p = proxyActor.addr
      const s = await client.ask(p, 'proxy:session:open', {})
      const ai = new OpenAI({ baseURL: s.baseUrl, apiKey: s.apiKey, maxRetries: 0 })
      await ai.chat.completions.create({ model: 'policy', messages: [{ role: 'user', content: 'x' }] })
      await client.ask(p, 'proxy:session:end', { sessionId: s.sessionId })
      const ref = await client.ask(p, 'proxy:export', { sessionIds: [s.sessionId], style: 'concat' })
      expect(await client.ask(p, 'proxy:release', { refs: [ref.ref, 'traj-unknown'] })).to.deep.equal({
        released: 1,
      })
      expect((await client.ask(p, 'proxy:stats', {})).storedTrajectories).to.equal(0)
    })
  })

  describe('when its engine actor has died (its supervisor restarts it; the controller re-syncs it then)', () => {
    it('should leave it out of pause, update_weights and resume, and still fail generations ENGINE_DOWN', async () => {
      // the engine by id, resolved as the controller's directory would: alive, then declared dead
      const a = await new Actor({ id: 'proxy/9', role: 'proxy', log, inbox: false }).start()
      let state: DirEntry['state'] = 'alive'
      a.setResolver((sel) =>
        sel.id === 'engine/0'
          ? [
              {
                id: 'engine/0',
                role: 'engine',
                addr: engine.actor.addr,
                pid: 1,
                host: 'localhost',
                state,
                heartbeatAgeMs: 0,
                startedAt: 0,
              },
            ]
          : [],
      )
      const e = new EmbeddedEngine(a, 'engine/0', 20_000)
      try {
        await e.pause()
        expect(engine.core.paused, 'reached while alive').to.equal(true)
        await e.resume()
        state = 'dead'
        await e.pause()
        await e.updateWeights('/ckpt/1', 1)
        await e.resume()
        const g = await e
          .generate({
            inputIds: Int32Array.of(1, 2),
            sampling: { maxNewTokens: 2, temperature: 1, topP: 1, stopTokenIds: [] },
          })
          .catch((x: { code?: string }) => x)
        expect(g).to.have.property('code', 'PRX_ERR_ENGINE_DOWN')
      } finally {
        await a.stop('done', 100)
      }
    })
  })

  describe('when the controller updates weights during a generation', () => {
    it('should pause, load, resume over the bus and keep per-token versions', async () => {
      const p = proxyActor.addr
      const s = await client.ask(p, 'proxy:session:open', {})
      const ai = new OpenAI({ baseURL: s.baseUrl, apiKey: s.apiKey, maxRetries: 0 })
      engine.core.holdAfter = 3
      const held = new Promise((r) => engine.core.once('held', r))
      const pending = ai.chat.completions.create({
        model: 'policy',
        max_tokens: 12,
        messages: [{ role: 'user', content: 'long please' }],
      })
      await held
      engine.core.holdAfter = null
      expect(await client.ask(p, 'proxy:pause', {})).to.deep.equal({ version: 0 })
      expect(await client.ask(p, 'proxy:update_weights', { path: '/ckpt/1', version: 1 })).to.deep.equal({
        version: 1,
      })
      expect(await client.ask(p, 'proxy:resume', {})).to.deep.equal({ version: 1 })
      const r = await pending
      expect(r.usage!.completion_tokens).to.equal(12)
      await client.ask(p, 'proxy:session:end', { sessionId: s.sessionId })
      const ref = await client.ask(p, 'proxy:export', { sessionIds: [s.sessionId] })
      expect([ref.minVersion, ref.maxVersion]).to.deep.equal([0, 1])
      const data = await client.ask(p, 'proxy:fetch', { ref: ref.ref })
      const start = data.lossMask.indexOf(1)
      expect(Array.from(data.versions.subarray(start))).to.deep.equal([0, 0, 0, ...Array(9).fill(1)])
    })
  })
})
