import { expect } from 'chai'
import OpenAI from 'openai'
import { runSchema } from '../../actors/config.ts'
import { type ProxyProcess, startProxy } from '../../actors/proxy/main.ts'
import { Actor } from '../../runtime/actor.ts'
import { loadConfig } from '../../runtime/config.ts'
import { silentLogger } from '../../runtime/log.ts'
import { startEngineActorStandin } from '../fixtures/proxy/engine-actor-standin.ts'
import { QWEN3_DIR, qwen3 } from '../fixtures/proxy/qwen3.ts'

const log = silentLogger()

describe('proxy process entry (actors/proxy/main.ts)', () => {
  let engine: Awaited<ReturnType<typeof startEngineActorStandin>>
  let proxy: ProxyProcess | undefined
  let client: Actor
  beforeEach(async () => {
    engine = await startEngineActorStandin(qwen3().tokenizer)
    client = await new Actor({ id: 'rollout/0', role: 'rollout', log, inbox: false }).start()
  })
  afterEach(async () => {
    delete process.env.AREAL_ENGINES
    await client.stop('done', 100)
    await proxy?.stop('done')
    await engine.actor.stop('done', 100)
  })

  describe('when the launcher passes embedded engines in AREAL_ENGINES and no proxy.model_dir', () => {
    it('should load the tokenizer from engine.model.path and serve sessions over the bus and HTTP', async () => {
      process.env.AREAL_ENGINES = JSON.stringify([{ kind: 'embedded', actor: engine.actor.addr }])
      const cfg = loadConfig(runSchema, {
        raw: { engine: { model: { path: QWEN3_DIR } }, actor: { model: { path: QWEN3_DIR } } },
      })
      proxy = await startProxy(cfg, { id: 'proxy/0', controller: '', log })
      expect(proxy.url).to.match(/^http:\/\/127\.0\.0\.1:\d+$/)
      const s = await client.ask(proxy.actor.addr, 'proxy:session:open', {})
      expect(s.baseUrl).to.equal(`${proxy.url}/sessions/${s.sessionId}/v1`)
      const ai = new OpenAI({ baseURL: s.baseUrl, apiKey: s.apiKey, maxRetries: 0 })
      const r = await ai.chat.completions.create({
        model: 'policy',
        messages: [{ role: 'user', content: 'entry' }],
      })
      expect(r.choices[0]!.message.content).to.equal('Hello! You said: entry (v0)')
      expect(engine.core.requests).to.have.length(1)
    })
  })

  describe('when AREAL_ENGINES is not JSON', () => {
    it('should fail to start with CFG_ERR_VALUE naming it', async () => {
      process.env.AREAL_ENGINES = '[{kind: embedded'
      const cfg = loadConfig(runSchema, {
        raw: {
          proxy: { model_dir: QWEN3_DIR },
          engine: { model: { path: '/m' } },
          actor: { model: { path: '/m' } },
        },
      })
      const err = await startProxy(cfg, { id: 'proxy/1', controller: '', log }).catch(
        (e: { code: string; message: string }) => e,
      )
      expect(err).to.include({ code: 'CFG_ERR_VALUE' })
      expect((err as { message: string }).message).to.contain('AREAL_ENGINES')
    })
  })
})
