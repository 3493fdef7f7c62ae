import { expect } from 'chai'
import { sampleAt } from '../../actors/proxy/export.ts'
import { type Harness, startProxy } from '../fixtures/proxy/harness.ts'
import { qwen3 } from '../fixtures/proxy/qwen3.ts'

describe('engine backends and placement', () => {
  let h: Harness
  afterEach(async () => {
    await h.close()
  })

  describe('when the engine is a vLLM server', () => {
    beforeEach(async () => {
      h = await startProxy({ kinds: ['vllm'] })
    })

    it('should send token-id prompts to /v1/completions and record ids and log-probs', async () => {
      const { handle, client } = await h.open()
      const r = await client.chat.completions.create({
        model: 'policy',
        messages: [{ role: 'user', content: 'yo' }],
      })
      expect(r.choices[0]!.message.content).to.equal('Hello! You said: yo (v0)')
      await h.service.endSession(handle.sessionId)
      const p = h.service.fetchTrajectories((await h.service.exportTrajectories(handle.sessionId)).ref)
      const s = sampleAt(p, 0)
      const out = s.inputIds.subarray(s.lossMask.indexOf(1))
      expect(qwen3().tokenizer.decode(out, true)).to.equal(r.choices[0]!.message.content)
    })

    it('should serve /v1/completions with a token-id prompt', async () => {
      const { client } = await h.open()
      const ids = qwen3().tokenizer.encode('<|im_start|>user\nping<|im_end|>\n<|im_start|>assistant\n')
      const r = await client.completions.create({
        model: 'policy',
        prompt: ids as never,
        max_tokens: 50,
        logprobs: 1,
      })
      expect(r.choices[0]!.text).to.equal('Hello! You said: ping (v0)')
      expect(r.choices[0]!.logprobs?.token_logprobs).to.have.length(r.usage!.completion_tokens)
    })
  })

  describe('when a proxy has two engines', () => {
    beforeEach(async () => {
      h = await startProxy({ kinds: ['sglang', 'sglang'] })
    })

    it('should place a new session on the least-loaded engine and keep sessions on their engine', async () => {
      const [e0, e1] = h.engines
      const a = await h.open()
      const b = await h.open()
      e0!.core.holdAfter = 1
      const held = new Promise((r) => e0!.core.once('held', r))
      const first = a.client.chat.completions.create({
        model: 'policy',
        messages: [{ role: 'user', content: 'a0' }],
      })
      await held
      // engine 0 is busy with session a: session b goes to engine 1
      await b.client.chat.completions.create({ model: 'policy', messages: [{ role: 'user', content: 'b0' }] })
      expect(e1!.core.requests).to.have.length(1)
      e0!.core.release()
      const r = await first
      // affinity: session a's next turn stays on engine 0 even though both are idle now
      await a.client.chat.completions.create({
        model: 'policy',
        messages: [{ role: 'user', content: 'a0' }, r.choices[0]!.message, { role: 'user', content: 'a1' }],
      })
      expect(e0!.core.requests).to.have.length(2)
      expect(e1!.core.requests).to.have.length(1)
    })
  })
})
