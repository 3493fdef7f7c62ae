import { expect } from 'chai'
import { sampleAt } from '../../actors/proxy/export.ts'
import { type Harness, startProxy } from '../fixtures/proxy/harness.ts'
import { qwen3 } from '../fixtures/proxy/qwen3.ts'
import { toyLogprob } from '../fixtures/proxy/toy-model.ts'

for (const kind of ['sglang', 'vllm'] as const) {
  describe(`abort and resume across a weight update (${kind} stand-in)`, () => {
    let h: Harness
    beforeEach(async () => {
      h = await startProxy({ kinds: [kind] })
    })
    afterEach(async () => {
      await h.close()
    })

    describe('when a generation is in flight during pause → update → resume', () => {
      it('should resume with prompt + partial output, keep each token version and the token budget', async () => {
        const core = h.engines[0]!.core
        const { handle, client } = await h.open()
        core.holdAfter = 5
        const held = new Promise((r) => core.once('held', r))
        // 1. the agent asks for a long answer, at most 40 tokens
        const pending = client.chat.completions.create({
          model: 'policy',
          max_tokens: 40,
          messages: [{ role: 'user', content: 'a long one please' }],
        })
        // 2. the engine has produced 5 tokens with v0 weights (and will not hold the resumed request)
        await held
        core.holdAfter = null
        // 3. controller: pause (engine aborts), load v1 weights, resume
        await h.service.pause()
        await h.service.updateWeights('/ckpt/step-1', 1)
        expect(core.weightPaths).to.deep.equal(['/ckpt/step-1'])
        await h.service.resume()
        // 4. the agent gets one reply made of both segments
        const r = await pending
        expect(r.choices[0]!.finish_reason).to.equal('length')
        expect(r.usage!.completion_tokens).to.equal(40)
        const [first, second] = core.requests
        expect(core.requests).to.have.length(2)
        expect(second!.inputIds.length).to.equal(first!.inputIds.length + 5)
        expect(second!.inputIds.slice(0, first!.inputIds.length)).to.deep.equal(first!.inputIds)
        expect(second!.maxNew).to.equal(35)
        expect(h.service.stats().resumed).to.equal(1)
        // 5. export: versions 0 for the first five tokens, 1 after; log-probs of the version that made them
        await h.service.endSession(handle.sessionId)
        const meta = await h.service.exportTrajectories(handle.sessionId)
        expect([meta.minVersion, meta.maxVersion]).to.deep.equal([0, 1])
        const s = sampleAt(h.service.fetchTrajectories(meta.ref), 0)
        const start = first!.inputIds.length
        const out = s.inputIds.subarray(start)
        expect(Array.from(s.versions.subarray(start))).to.deep.equal([
          ...Array(5).fill(0),
          ...Array(35).fill(1),
        ])
        out.forEach((id, i) => {
          expect(s.logprobs[start + i]).to.be.closeTo(toyLogprob(id, i, i < 5 ? 0 : 1), 1e-6)
        })
        expect(qwen3().tokenizer.decode(out)).to.equal(r.choices[0]!.message.content)
        expect(r.choices[0]!.message.content).to.match(/^v0w0 /)
        expect(r.choices[0]!.message.content).to.contain('v1w')
      })

      it('should hold a request that arrives while paused and run it on the new weights', async () => {
        const { client } = await h.open()
        await h.service.pause()
        const pending = client.chat.completions.create({
          model: 'policy',
          messages: [{ role: 'user', content: 'hi' }],
        })
        await h.service.updateWeights('/ckpt/step-2', 2)
        await h.service.resume()
        expect((await pending).choices[0]!.message.content).to.equal('Hello! You said: hi (v2)')
      })
    })
  })
}
