import { expect } from 'chai'
import type OpenAI from 'openai'
import { sampleAt } from '../../actors/proxy/export.ts'
import { type Harness, startProxy } from '../fixtures/proxy/harness.ts'
import { qwen3, WEATHER_TOOL } from '../fixtures/proxy/qwen3.ts'
import { toyLogprob } from '../fixtures/proxy/toy-model.ts'

type Msg = OpenAI.Chat.Completions.ChatCompletionMessageParam

describe('proxy chat completions (official openai client over HTTP, SGLang stand-in)', () => {
  let h: Harness
  beforeEach(async () => {
    h = await startProxy()
  })
  afterEach(async () => {
    await h.close()
  })

  describe('when an agent sends a plain chat', () => {
    it('should answer with the model reply and record the exact prompt and output tokens', async () => {
      const { handle, client } = await h.open()
      const r = await client.chat.completions.create({
        model: 'policy',
        messages: [
          { role: 'system', content: 'Be nice.' },
          { role: 'user', content: 'Good morning' },
        ],
      })
      expect(r.object).to.equal('chat.completion')
      expect(r.choices[0]!.message.content).to.equal('Hello! You said: Good morning (v0)')
      expect(r.choices[0]!.finish_reason).to.equal('stop')
      // the engine received the template's prompt as ids
      const { tokenizer, builder } = qwen3()
      const sent = h.engines[0]!.core.requests[0]!.inputIds
      expect(tokenizer.decode(sent)).to.equal(
        builder.renderFull([
          { role: 'system', content: 'Be nice.' },
          { role: 'user', content: 'Good morning' },
        ]),
      )
      expect(r.usage?.prompt_tokens).to.equal(sent.length)
      await h.service.endSession(handle.sessionId)
      const meta = await h.service.exportTrajectories(handle.sessionId)
      expect(meta.samples).to.equal(1)
      const s = sampleAt(h.service.fetchTrajectories(meta.ref), 0)
      expect(Array.from(s.inputIds.subarray(0, sent.length))).to.deep.equal(sent)
    })

    it('should also serve the key-only base URL <proxy>/v1', async () => {
      const { handle } = await h.open()
      const { default: OpenAIClient } = await import('openai')
      const client = new OpenAIClient({ baseURL: `${h.url}/v1`, apiKey: handle.apiKey, maxRetries: 0 })
      const r = await client.chat.completions.create({
        model: 'policy',
        messages: [{ role: 'user', content: 'hi' }],
      })
      expect(r.choices[0]!.message.content).to.equal('Hello! You said: hi (v0)')
      const models = await client.models.list()
      expect(models.data.map((m) => m.id)).to.deep.equal(['policy'])
    })
  })

  describe('when the agent uses tools', () => {
    it('should parse tool calls, take the tool result and answer, extending the same token sample', async () => {
      const { handle, client } = await h.open()
      const messages: Msg[] = [{ role: 'user', content: 'Weather? call get_weather {"city": "Paris"}' }]
      const r1 = await client.chat.completions.create({
        model: 'policy',
        messages,
        tools: [WEATHER_TOOL as never],
      })
      const m1 = r1.choices[0]!.message
      expect(r1.choices[0]!.finish_reason).to.equal('tool_calls')
      expect(m1.content).to.equal(null)
      expect(m1.tool_calls).to.have.length(1)
      const call = m1.tool_calls![0]! as OpenAI.Chat.Completions.ChatCompletionMessageFunctionToolCall
      expect(call.type).to.equal('function')
      expect(call.function.name).to.equal('get_weather')
      expect(JSON.parse(call.function.arguments)).to.deep.equal({ city: 'Paris' })
      messages.push(m1, { role: 'tool', tool_call_id: call.id, content: 'sunny, 21C' })
      const r2 = await client.chat.completions.create({
        model: 'policy',
        messages,
        tools: [WEATHER_TOOL as never],
      })
      expect(r2.choices[0]!.message.content).to.equal('The tool said: sunny, 21C.')
      expect(r2.choices[0]!.finish_reason).to.equal('stop')
      // turn 2's prompt = turn 1's prompt + output + delta
      const [q1, q2] = h.engines[0]!.core.requests
      const rec1 = h.service.stats()
      expect(rec1.historyRewrites).to.equal(0)
      await h.service.endSession(handle.sessionId)
      const meta = await h.service.exportTrajectories(handle.sessionId, { style: 'concat' })
      expect(meta.samples).to.equal(1)
      const p = h.service.fetchTrajectories(meta.ref)
      const s = sampleAt(p, 0)
      expect(Array.from(s.inputIds.subarray(0, q2!.inputIds.length))).to.deep.equal(q2!.inputIds)
      expect(Array.from(s.inputIds.subarray(0, q1!.inputIds.length))).to.deep.equal(q1!.inputIds)
      expect(s.completionIds).to.deep.equal([r1.id, r2.id])
      // both outputs are trainable inside the one sequence, nothing else is
      const trainable = s.lossMask.reduce((a, b) => a + b, 0)
      expect(trainable).to.equal(r1.usage!.completion_tokens + r2.usage!.completion_tokens)
    })
  })

  describe('when an episode ends', () => {
    it('should export ids whose decoded outputs equal the replies, with aligned log-probs and versions', async () => {
      const { handle, client } = await h.open()
      const messages: Msg[] = [{ role: 'user', content: 'first' }]
      const replies: OpenAI.Chat.Completions.ChatCompletion[] = []
      for (let t = 0; t < 3; t++) {
        const r = await client.chat.completions.create({ model: 'policy', messages })
        replies.push(r)
        messages.push(r.choices[0]!.message, { role: 'user', content: `turn ${t}` })
      }
      // reward for the first completion by id, then the last by default
      await client.post('/rl/set_reward', { body: { interaction_id: replies[0]!.id, reward: 0.5 } })
      await client.post('/rl/set_reward', { body: { reward: 1 } })
      await client.post('/rl/end_session', { body: {} })
      const meta = await h.service.exportTrajectories(handle.sessionId, {
        style: 'individual',
        turnDiscount: 0.9,
      })
      expect(meta.samples).to.equal(3)
      expect(meta.minVersion).to.equal(0)
      expect(meta.maxVersion).to.equal(0)
      // G_2 = 1, G_1 = 0.9, G_0 = 0.5 + 0.81
      expect(meta.rewards.map((r) => Number(r.toFixed(4)))).to.deep.equal([1.31, 0.9, 1])
      const p = h.service.fetchTrajectories(meta.ref)
      const { tokenizer } = qwen3()
      for (let k = 0; k < 3; k++) {
        const s = sampleAt(p, k)
        const start = s.lossMask.indexOf(1)
        const out = s.inputIds.subarray(start)
        expect(Array.from(s.lossMask.subarray(start)).every((x) => x === 1)).to.equal(true)
        expect(Array.from(s.lossMask.subarray(0, start)).every((x) => x === 0)).to.equal(true)
        expect(tokenizer.decode(out, true)).to.equal(replies[k]!.choices[0]!.message.content)
        out.forEach((id, i) => {
          expect(s.logprobs[start + i]).to.be.closeTo(toyLogprob(id, i, 0), 1e-6)
          expect(s.versions[start + i]).to.equal(0)
        })
        expect(Array.from(s.versions.subarray(0, start)).every((v) => v === -1)).to.equal(true)
        expect(Array.from(s.logprobs.subarray(0, start)).every((v) => v === 0)).to.equal(true)
      }
      // memory is freed once consumed
      expect(() => h.service.fetchTrajectories(meta.ref))
        .to.throw()
        .with.property('code', 'PRX_ERR_NO_TRAJECTORY')
      expect(h.service.stats().sessions).to.equal(0)
    })
  })

  describe('when the template rewrites history (Qwen3 drops old <think> at a new user query)', () => {
    it('should start a new sample, and concat export should keep the two samples apart', async () => {
      const { handle, client } = await h.open()
      const messages: Msg[] = [{ role: 'user', content: 'think first' }]
      const r1 = await client.chat.completions.create({ model: 'policy', messages })
      const m1 = r1.choices[0]!.message as (typeof r1.choices)[0]['message'] & { reasoning_content?: string }
      expect(m1.reasoning_content).to.equal('The user wants a short answer.')
      messages.push(m1, { role: 'user', content: 'and now?' })
      await client.chat.completions.create({ model: 'policy', messages })
      expect(h.service.stats().historyRewrites).to.equal(1)
      const [q1, q2] = h.engines[0]!.core.requests
      // the second prompt is the template's full render (no old <think>), not an extension of the first
      const { tokenizer } = qwen3()
      expect(tokenizer.decode(q2!.inputIds)).to.not.contain('<think>')
      expect(q2!.inputIds.slice(0, q1!.inputIds.length + 3)).to.not.deep.equal([
        ...q1!.inputIds,
        151667,
        198,
        785,
      ])
      await h.service.endSession(handle.sessionId)
      const meta = await h.service.exportTrajectories(handle.sessionId, { style: 'concat' })
      expect(meta.samples).to.equal(2)
    })
  })

  describe('when the agent retries a turn (two branches from one completion)', () => {
    it('should send the same prompt twice and export each branch as its own exact sample', async () => {
      const { handle, client } = await h.open()
      const messages: Msg[] = [{ role: 'user', content: 'first' }]
      const r1 = await client.chat.completions.create({ model: 'policy', messages })
      messages.push(r1.choices[0]!.message, { role: 'user', content: 'second' })
      const a = await client.chat.completions.create({ model: 'policy', messages })
      const b = await client.chat.completions.create({ model: 'policy', messages })
      const [, qa, qb] = h.engines[0]!.core.requests
      expect(qb!.inputIds).to.deep.equal(qa!.inputIds)
      // the first branch grew the chain in place, the second branched off a copy
      const [c1, ca, cb] = h.service.authenticate(handle.sessionId, handle.apiKey).completions
      expect(ca!.chain).to.equal(c1!.chain)
      expect(cb!.chain).to.not.equal(c1!.chain)
      await h.service.endSession(handle.sessionId)
      const p = h.service.fetchTrajectories(
        (await h.service.exportTrajectories(handle.sessionId, { style: 'concat' })).ref,
      )
      expect(p.offsets.length - 1).to.equal(2)
      for (const [k, r] of [a, b].entries()) {
        const s = sampleAt(p, k)
        expect(s.completionIds).to.deep.equal([r1.id, r.id])
        expect(Array.from(s.inputIds.subarray(0, qa!.inputIds.length))).to.deep.equal(qa!.inputIds)
        expect(s.lossMask.reduce((x, y) => x + y, 0)).to.equal(
          r1.usage!.completion_tokens + r.usage!.completion_tokens,
        )
      }
    })
  })

  describe('when a turn fails on the engine and the agent sends it again', () => {
    it('should build the retried prompt as if the failure never happened', async () => {
      const { handle, client } = await h.open()
      const messages: Msg[] = [{ role: 'user', content: 'first' }]
      const r1 = await client.chat.completions.create({ model: 'policy', messages })
      messages.push(r1.choices[0]!.message, { role: 'user', content: 'second' })
      const core = h.engines[0]!.core
      core.holdAfter = 1
      const held = new Promise((r) => core.once('held', r))
      const ac = new AbortController()
      const failed = client.chat.completions
        .create({ model: 'policy', messages }, { signal: ac.signal })
        .catch((e) => e)
      await held
      // the proxy tells the engine to abort once it has dropped the request
      const dropped = new Promise((r) => core.once('abort_request', r))
      ac.abort()
      await failed
      await dropped
      core.holdAfter = null
      await client.chat.completions.create({ model: 'policy', messages })
      const reqs = core.requests
      const [q1, qFailed, qRetry] = reqs
      expect(qRetry!.inputIds).to.deep.equal(qFailed!.inputIds)
      expect(qRetry!.inputIds.slice(0, q1!.inputIds.length)).to.deep.equal(q1!.inputIds)
      expect(h.service.stats().completions).to.equal(2)
      // the failed attempt left nothing behind: the retry grew the first turn's token chain in place
      const [c1, c2] = h.service.authenticate(handle.sessionId, handle.apiKey).completions
      expect(c2!.chain).to.equal(c1!.chain)
      expect(c2!.parent).to.equal(c1)
    })
  })

  describe('when a conversation runs 20 turns', () => {
    it('should send prompts that are exact token prefixes of the next turn', async () => {
      const { client } = await h.open()
      const messages: Msg[] = [{ role: 'system', content: 'Count with me.' }]
      for (let t = 0; t < 20; t++) {
        messages.push({ role: 'user', content: `number ${t}` })
        const r = await client.chat.completions.create({ model: 'policy', messages })
        messages.push(r.choices[0]!.message)
      }
      const reqs = h.engines[0]!.core.requests
      expect(reqs).to.have.length(20)
      const { builder, tokenizer } = qwen3()
      for (let t = 1; t < 20; t++) {
        const prev = reqs[t - 1]!.inputIds
        expect(reqs[t]!.inputIds.slice(0, prev.length), `turn ${t}`).to.deep.equal(prev)
      }
      // and the last prompt reads exactly as the template renders the whole conversation
      const last = reqs[19]!.inputIds
      expect(tokenizer.decode(last)).to.equal(
        builder.renderFull(messages.slice(0, -1).map((m) => ({ role: m.role, content: String(m.content) }))),
      )
      expect(h.service.stats().historyRewrites).to.equal(0)
    })
  })
})
