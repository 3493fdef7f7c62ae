import { expect } from 'chai'
import { APIError } from 'openai'
import { type Harness, startProxy } from '../fixtures/proxy/harness.ts'

describe('proxy memory hygiene (unclaimed sessions and trajectories are freed)', () => {
  let h: Harness
  let clock: number
  beforeEach(async () => {
    clock = 1_000_000
    h = await startProxy({
      now: () => clock,
      config: { session_idle_ms: 60_000, trajectory_ttl_ms: 120_000 },
    })
  })
  afterEach(async () => {
    await h.close()
  })

  describe('when an agent disappears without ending its session', () => {
    it('should drop the session after session_idle_ms of silence, and only then', async () => {
      const gone = await h.open()
      const busy = await h.open()
      await gone.client.chat.completions.create({
        model: 'policy',
        messages: [{ role: 'user', content: 'hi' }],
      })
      clock += 50_000
      // the busy agent keeps talking; the other is silent
      await busy.client.chat.completions.create({
        model: 'policy',
        messages: [{ role: 'user', content: 'hi' }],
      })
      expect(h.service.sweep()).to.deep.equal({ sessions: 0, trajectories: 0 })
      clock += 20_000
      expect(h.service.sweep()).to.deep.equal({ sessions: 1, trajectories: 0 })
      const err = await gone.client.chat.completions
        .create({ model: 'policy', messages: [{ role: 'user', content: 'hi' }] })
        .catch((e: APIError) => e)
      expect(err).to.be.instanceOf(APIError)
      expect((err as APIError).status).to.equal(410)
      expect(h.service.stats()).to.include({ sessions: 1, expiredSessions: 1 })
    })
  })

  describe('when an export reference is never fetched or released', () => {
    it('should free it after trajectory_ttl_ms', async () => {
      const a = await h.open()
      await a.client.chat.completions.create({ model: 'policy', messages: [{ role: 'user', content: 'hi' }] })
      await h.service.endSession(a.handle.sessionId)
      const meta = await h.service.exportTrajectories(a.handle.sessionId)
      clock += 100_000
      h.service.sweep()
      expect(h.service.stats().storedTrajectories).to.equal(1)
      clock += 30_000
      expect(h.service.sweep().trajectories).to.equal(1)
      expect(() => h.service.fetchTrajectories(meta.ref))
        .to.throw()
        .with.property('code', 'PRX_ERR_NO_TRAJECTORY')
      expect(h.service.stats().expiredTrajectories).to.equal(1)
    })
  })
})
