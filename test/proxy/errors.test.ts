import { expect } from 'chai'
import OpenAI, { APIError } from 'openai'
import { type Harness, startProxy } from '../fixtures/proxy/harness.ts'

/** A URL where nothing listens (a port we bound and released). */
async function deadUrl(): Promise<string> {
  const { createServer } = await import('node:net')
  const srv = createServer()
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  const port = (srv.address() as { port: number }).port
  await new Promise<void>((r) => srv.close(() => r()))
  return `http://127.0.0.1:${port}`
}

async function rejects(p: Promise<unknown>): Promise<APIError> {
  try {
    await p
  } catch (err) {
    expect(err).to.be.instanceOf(APIError)
    return err as APIError
  }
  throw new Error('expected a rejection')
}

const hi = { model: 'policy', messages: [{ role: 'user' as const, content: 'hi' }] }

describe('proxy errors', () => {
  let h: Harness
  afterEach(async () => {
    await h?.close()
  })

  describe('when keys and sessions do not match', () => {
    beforeEach(async () => {
      h = await startProxy()
    })

    it("should refuse another session's key with 403 PRX_ERR_FORBIDDEN", async () => {
      const a = await h.open()
      const b = await h.open()
      const thief = new OpenAI({ baseURL: b.handle.baseUrl, apiKey: a.handle.apiKey, maxRetries: 0 })
      const e = await rejects(thief.chat.completions.create(hi))
      expect(e.status).to.equal(403)
      expect(e.code).to.equal('PRX_ERR_FORBIDDEN')
    })

    it('should answer an unknown session with 404 and a wrong key with 401', async () => {
      const a = await h.open()
      const lost = new OpenAI({
        baseURL: `${h.url}/sessions/nope/v1`,
        apiKey: a.handle.apiKey,
        maxRetries: 0,
      })
      const e1 = await rejects(lost.chat.completions.create(hi))
      expect([e1.status, e1.code]).to.deep.equal([404, 'PRX_ERR_NO_SESSION'])
      const wrong = new OpenAI({ baseURL: a.handle.baseUrl, apiKey: 'sk-wrong', maxRetries: 0 })
      const e2 = await rejects(wrong.chat.completions.create(hi))
      expect([e2.status, e2.code]).to.deep.equal([401, 'PRX_ERR_AUTH_INVALID'])
      const res = await fetch(`${a.handle.baseUrl}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(hi),
      })
      expect(res.status).to.equal(401)
      expect(((await res.json()) as { error: { code: string } }).error.code).to.equal('PRX_ERR_AUTH_MISSING')
    })

    it('should answer 410 once the session has ended, and export only ended sessions', async () => {
      const a = await h.open()
      await a.client.chat.completions.create(hi)
      const active = await h.service.exportTrajectories(a.handle.sessionId).then(
        () => 'exported',
        (err: { code: string }) => err.code,
      )
      expect(active).to.equal('PRX_ERR_SESSION_ACTIVE')
      await a.client.post('/rl/end_session')
      const e = await rejects(a.client.chat.completions.create(hi))
      expect([e.status, e.code]).to.deep.equal([410, 'PRX_ERR_SESSION_ENDED'])
      await h.service.exportTrajectories(a.handle.sessionId)
      const e2 = await rejects(a.client.chat.completions.create(hi))
      expect(e2.status).to.equal(410)
    })

    it('should answer a reward for an unknown interaction with 404 PRX_ERR_NO_INTERACTION', async () => {
      const a = await h.open()
      const e = await rejects(a.client.post('/rl/set_reward', { body: { reward: 1 } }))
      expect([e.status, e.code]).to.deep.equal([404, 'PRX_ERR_NO_INTERACTION'])
      await a.client.chat.completions.create(hi)
      const e2 = await rejects(
        a.client.post('/rl/set_reward', { body: { interaction_id: 'chatcmpl-x', reward: 1 } }),
      )
      expect(e2.code).to.equal('PRX_ERR_NO_INTERACTION')
    })
  })

  describe('when the body is malformed', () => {
    beforeEach(async () => {
      h = await startProxy({ config: { body_limit_bytes: 4096 } })
    })

    it('should answer 400 PRX_ERR_BAD_REQUEST naming the field, for bad shapes and bad JSON', async () => {
      const a = await h.open()
      const e = await rejects(
        a.client.chat.completions.create({
          model: 'policy',
          messages: [{ role: 'wizard', content: 'x' }] as never,
        }),
      )
      expect([e.status, e.code]).to.deep.equal([400, 'PRX_ERR_BAD_REQUEST'])
      expect(e.message).to.contain('role')
      const e2 = await rejects(a.client.chat.completions.create({ model: 'policy', messages: [] }))
      expect(e2.code).to.equal('PRX_ERR_BAD_REQUEST')
      const e3 = await rejects(a.client.chat.completions.create({ ...hi, temperature: 'hot' as never }))
      expect(e3.message).to.contain('temperature')
      const res = await fetch(`${a.handle.baseUrl}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${a.handle.apiKey}` },
        body: '{"messages": [',
      })
      expect(res.status).to.equal(400)
      expect(((await res.json()) as { error: { code: string } }).error.code).to.equal('PRX_ERR_BAD_REQUEST')
    })

    it('should answer 413 for a body over proxy.body_limit_bytes', async () => {
      const a = await h.open()
      const e = await rejects(
        a.client.chat.completions.create({
          model: 'policy',
          messages: [{ role: 'user', content: 'x'.repeat(10_000) }],
        }),
      )
      expect([e.status, e.code]).to.deep.equal([413, 'PRX_ERR_BODY_TOO_LARGE'])
    })
  })

  describe('when the prompt is longer than the context', () => {
    beforeEach(async () => {
      h = await startProxy({ config: { context_length: 64, max_new_tokens: 16 } })
    })

    it('should answer 400 PRX_ERR_PROMPT_TOO_LONG without calling the engine', async () => {
      const a = await h.open()
      const e = await rejects(
        a.client.chat.completions.create({
          model: 'policy',
          messages: [{ role: 'user', content: 'word '.repeat(100) }],
        }),
      )
      expect([e.status, e.code]).to.deep.equal([400, 'PRX_ERR_PROMPT_TOO_LONG'])
      expect(h.engines[0]!.core.requests).to.have.length(0)
    })
  })

  describe('when the proxy is full', () => {
    beforeEach(async () => {
      h = await startProxy({ config: { max_sessions: 2, max_inflight: 1 } })
    })

    it('should refuse sessions beyond max_sessions and requests beyond max_inflight with 429', async () => {
      const a = await h.open()
      const b = await h.open()
      try {
        await h.service.openSession()
        expect.fail('opened a third session')
      } catch (err) {
        expect((err as { code: string }).code).to.equal('PRX_ERR_FULL')
      }
      const core = h.engines[0]!.core
      core.holdAfter = 1
      const held = new Promise((r) => core.once('held', r))
      const first = a.client.chat.completions.create(hi)
      await held
      const e = await rejects(b.client.chat.completions.create(hi))
      expect([e.status, e.code]).to.deep.equal([429, 'PRX_ERR_FULL'])
      core.release()
      expect((await first).choices[0]!.message.content).to.equal('Hello! You said: hi (v0)')
    })
  })

  describe('when the engine is down', () => {
    beforeEach(async () => {
      h = await startProxy({ kinds: [] as never, extraEngineUrls: [await deadUrl()] })
    })

    it('should answer 503 PRX_ERR_ENGINE_DOWN and stay alive', async () => {
      const a = await h.open()
      const e = await rejects(a.client.chat.completions.create(hi))
      expect([e.status, e.code]).to.deep.equal([503, 'PRX_ERR_ENGINE_DOWN'])
      const e2 = await rejects(a.client.chat.completions.create({ ...hi, stream: true }))
      expect([e2.status, e2.code]).to.deep.equal([503, 'PRX_ERR_ENGINE_DOWN'])
      const health = await fetch(`${h.url}/health`)
      expect(health.status).to.equal(200)
      const body = (await health.json()) as { status: string; engines: { ok: boolean }[] }
      expect(body.status).to.equal('ok')
      expect(body.engines[0]!.ok).to.equal(false)
    })
  })

  describe('when the agent disconnects mid-generation', () => {
    beforeEach(async () => {
      h = await startProxy()
    })

    it('should abort the request on the engine and record nothing', async () => {
      const core = h.engines[0]!.core
      const a = await h.open()
      core.holdAfter = 2
      const held = new Promise((r) => core.once('held', r))
      const ac = new AbortController()
      const pending = a.client.chat.completions.create(hi, { signal: ac.signal }).catch((e: Error) => e)
      await held
      const aborted = new Promise<string>((r) => core.once('abort_request', r))
      ac.abort()
      expect(await aborted).to.match(/^chatcmpl-[0-9a-f]+-0$/)
      expect(await pending).to.be.instanceOf(Error)
      core.holdAfter = null
      // the session is usable and has no record of the abandoned completion
      const r = await a.client.chat.completions.create(hi)
      expect(r.choices[0]!.message.content).to.equal('Hello! You said: hi (v0)')
      expect(h.service.stats().completions).to.equal(1)
    })
  })

  describe('when the engine answers with an error or too slowly', () => {
    let broken: import('node:http').Server
    beforeEach(async () => {
      const { createServer } = await import('node:http')
      broken = createServer((_req, res) => {
        res.writeHead(500, { 'content-type': 'application/json' })
        res.end('{"error": "CUDA out of memory"}')
      })
      await new Promise<void>((r) => broken.listen(0, '127.0.0.1', r))
      const port = (broken.address() as { port: number }).port
      h = await startProxy({ kinds: [], extraEngineUrls: [`http://127.0.0.1:${port}`] })
    })
    afterEach(() => {
      broken.close()
    })

    it('should answer 502 PRX_ERR_UPSTREAM with the engine status, and keep serving', async () => {
      const a = await h.open()
      const e = await rejects(a.client.chat.completions.create(hi))
      expect([e.status, e.code]).to.deep.equal([502, 'PRX_ERR_UPSTREAM'])
      expect(e.message).to.contain('500')
      const again = await rejects(a.client.chat.completions.create(hi))
      expect(again.status).to.equal(502)
    })
  })

  describe('when the engine does not answer in time', () => {
    beforeEach(async () => {
      h = await startProxy({ config: { request_timeout_ms: 300 } })
    })

    it('should answer 504 PRX_ERR_UPSTREAM_TIMEOUT', async () => {
      const core = h.engines[0]!.core
      core.holdAfter = 1
      // the harness gives engines a 20 s timeout; this proxy's engine list is rebuilt with 300 ms
      const fast = await startProxy({
        kinds: [],
        extraEngineUrls: [h.engines[0]!.url],
        config: { request_timeout_ms: 300 },
      })
      try {
        const a = await fast.open()
        const e = await rejects(a.client.chat.completions.create(hi))
        expect([e.status, e.code]).to.deep.equal([504, 'PRX_ERR_UPSTREAM_TIMEOUT'])
      } finally {
        core.release()
        await fast.close()
      }
    })
  })

  describe('when one of two engines is down', () => {
    beforeEach(async () => {
      h = await startProxy({ kinds: ['sglang'], extraEngineUrls: [await deadUrl()] })
    })

    it('should fail over to the live engine', async () => {
      // the dead engine is listed second; a fresh session may land on either, so try several
      for (let i = 0; i < 4; i++) {
        const a = await h.open()
        const r = await a.client.chat.completions.create(hi)
        expect(r.choices[0]!.message.content).to.equal('Hello! You said: hi (v0)')
      }
    })
  })
})
