import { expect } from 'chai'
import type OpenAI from 'openai'
import { type Harness, startProxy } from '../fixtures/proxy/harness.ts'
import { qwen3, WEATHER_TOOL } from '../fixtures/proxy/qwen3.ts'

type Msg = OpenAI.Chat.Completions.ChatCompletionMessageParam

async function collect(stream: AsyncIterable<OpenAI.Chat.Completions.ChatCompletionChunk>) {
  let content = ''
  let reasoning = ''
  let finish: string | null = null
  let usage: OpenAI.Completions.CompletionUsage | undefined
  const calls: { id?: string; name?: string; args: string }[] = []
  let chunks = 0
  for await (const c of stream) {
    chunks++
    if (c.usage) usage = c.usage
    const ch = c.choices[0]
    if (!ch) continue
    const d = ch.delta as typeof ch.delta & { reasoning_content?: string }
    content += d.content ?? ''
    reasoning += d.reasoning_content ?? ''
    for (const t of d.tool_calls ?? []) {
      const slot = (calls[t.index] ??= { args: '' })
      if (t.id) slot.id = t.id
      if (t.function?.name) slot.name = t.function.name
      slot.args += t.function?.arguments ?? ''
    }
    if (ch.finish_reason) finish = ch.finish_reason
  }
  return { content, reasoning, finish, calls, usage, chunks }
}

describe('proxy streaming (SSE through the official openai client)', () => {
  let h: Harness
  beforeEach(async () => {
    h = await startProxy()
  })
  afterEach(async () => {
    await h.close()
  })

  describe('when the request has no tools', () => {
    it('should stream the same content, reasoning and usage as the non-streamed reply', async () => {
      const messages: Msg[] = [{ role: 'user', content: 'please think about it' }]
      const a = await h.open()
      const whole = await a.client.chat.completions.create({ model: 'policy', messages })
      const b = await h.open()
      const s = await collect(
        await b.client.chat.completions.create({
          model: 'policy',
          messages,
          stream: true,
          stream_options: { include_usage: true },
        }),
      )
      const m = whole.choices[0]!.message as (typeof whole.choices)[0]['message'] & {
        reasoning_content?: string
      }
      expect(s.content).to.equal(m.content).and.equal('Here it is.')
      expect(s.reasoning).to.equal(m.reasoning_content).and.equal('The user wants a short answer.')
      expect(s.finish).to.equal('stop')
      expect(s.usage?.completion_tokens).to.equal(whole.usage?.completion_tokens)
    })
  })

  describe('when the request has stop strings', () => {
    it('should leave the stop sequence and what follows out of the reply, streamed or not, but keep the tokens', async () => {
      const messages: Msg[] = [{ role: 'user', content: 'stop here' }]
      const a = await h.open()
      const whole = await a.client.chat.completions.create({
        model: 'policy',
        messages,
        stop: [' said', 'zzz'],
      })
      expect(whole.choices[0]!.message.content).to.equal('Hello! You')
      const b = await h.open()
      const s = await collect(
        await b.client.chat.completions.create({ model: 'policy', messages, stop: ' said', stream: true }),
      )
      expect(s.content).to.equal('Hello! You')
      // the agent continues from the cut reply: still one exact-prefix chain
      messages.push(whole.choices[0]!.message, { role: 'user', content: 'go on' })
      await a.client.chat.completions.create({ model: 'policy', messages })
      expect(h.service.stats().historyRewrites).to.equal(0)
      await h.service.endSession(a.handle.sessionId)
      const p = h.service.fetchTrajectories(
        (await h.service.exportTrajectories(a.handle.sessionId, { style: 'concat' })).ref,
      )
      expect(p.offsets.length - 1).to.equal(1)
      expect(qwen3().tokenizer.decode(p.inputIds)).to.contain('Hello! You said: stop here (v0)')
    })
  })

  describe('when a workload stops at </tool_call>', () => {
    it('should still return the whole tool call, streamed or not', async () => {
      const messages: Msg[] = [{ role: 'user', content: 'call get_weather {"city": "Oslo"}' }]
      const req = { model: 'policy', messages, tools: [WEATHER_TOOL as never], stop: ['</tool_call>'] }
      const whole = await (await h.open()).client.chat.completions.create(req)
      expect(whole.choices[0]!.finish_reason).to.equal('tool_calls')
      const calls = whole.choices[0]!.message
        .tool_calls as OpenAI.Chat.Completions.ChatCompletionMessageFunctionToolCall[]
      expect(calls.map((c) => c.function.name)).to.deep.equal(['get_weather'])
      const s = await collect(await (await h.open()).client.chat.completions.create({ ...req, stream: true }))
      expect([s.finish, s.calls.length, s.content]).to.deep.equal(['tool_calls', 1, ''])
      expect(h.service.stats().malformedToolCalls).to.equal(0)
    })
  })

  describe('when the engine streams its tokens', () => {
    it('should deliver content to the client while the engine is still generating', async () => {
      const core = h.engines[0]!.core
      core.holdAfter = 4
      const held = new Promise((r) => core.once('held', r))
      const { client } = await h.open()
      const stream = await client.chat.completions.create({
        model: 'policy',
        messages: [{ role: 'user', content: 'hi there' }],
        stream: true,
      })
      const it = stream[Symbol.asyncIterator]()
      let content = ''
      while (content === '') {
        const { value, done } = await it.next()
        if (done) break
        content += value.choices[0]?.delta?.content ?? ''
      }
      await held
      // the engine is frozen after 4 tokens: what arrived came before the generation finished
      expect(content).to.not.equal('')
      expect('Hello! You said: hi there (v0)'.startsWith(content)).to.equal(true)
      expect(h.service.stats().completions).to.equal(0)
      core.release()
      for (;;) {
        const { value, done } = await it.next()
        if (done) break
        content += value.choices[0]?.delta?.content ?? ''
      }
      expect(content).to.equal('Hello! You said: hi there (v0)')
      expect(h.service.stats().completions).to.equal(1)
    })
  })

  describe('when SGLang streams incremental chunks (--incremental-streaming-output)', () => {
    it('should assemble the same tokens as from cumulative chunks', async () => {
      const core = h.engines[0]!.core
      const run = async () => {
        const { handle, client } = await h.open()
        const s = await collect(
          await client.chat.completions.create({
            model: 'policy',
            messages: [{ role: 'user', content: 'please think about it' }],
            stream: true,
          }),
        )
        await h.service.endSession(handle.sessionId)
        const p = h.service.fetchTrajectories((await h.service.exportTrajectories(handle.sessionId)).ref)
        return {
          content: s.content,
          reasoning: s.reasoning,
          ids: Array.from(p.inputIds),
          lps: Array.from(p.logprobs),
        }
      }
      const cumulative = await run()
      core.incrementalStream = true
      const incremental = await run()
      expect(incremental).to.deep.equal(cumulative)
      expect(incremental.content).to.equal('Here it is.')
    })
  })

  describe('when the request has tools', () => {
    it('should stream tool calls with ids, names and arguments, and finish with tool_calls', async () => {
      const { client } = await h.open()
      const s = await collect(
        await client.chat.completions.create({
          model: 'policy',
          messages: [
            {
              role: 'user',
              content: 'call get_weather {"city": "Oslo"} and call get_weather {"city": "Rome"}',
            },
          ],
          tools: [WEATHER_TOOL as never],
          stream: true,
        }),
      )
      expect(s.finish).to.equal('tool_calls')
      expect(s.content).to.equal('')
      expect(s.calls.map((c) => [c.name, JSON.parse(c.args)])).to.deep.equal([
        ['get_weather', { city: 'Oslo' }],
        ['get_weather', { city: 'Rome' }],
      ])
      expect(new Set(s.calls.map((c) => c.id)).size).to.equal(2)
    })

    it('should let the agent continue the conversation from streamed tool calls', async () => {
      const { client } = await h.open()
      const messages: Msg[] = [{ role: 'user', content: 'call get_weather {"city": "Oslo"}' }]
      const s = await collect(
        await client.chat.completions.create({
          model: 'policy',
          messages,
          tools: [WEATHER_TOOL as never],
          stream: true,
        }),
      )
      messages.push(
        {
          role: 'assistant',
          content: null,
          tool_calls: s.calls.map((c) => ({
            id: c.id!,
            type: 'function',
            function: { name: c.name!, arguments: c.args },
          })),
        },
        { role: 'tool', tool_call_id: s.calls[0]!.id!, content: 'snow' },
      )
      const r = await client.chat.completions.create({
        model: 'policy',
        messages,
        tools: [WEATHER_TOOL as never],
      })
      expect(r.choices[0]!.message.content).to.equal('The tool said: snow.')
      expect(h.service.stats().historyRewrites).to.equal(0)
      const reqs = h.engines[0]!.core.requests
      expect(reqs[1]!.inputIds.slice(0, reqs[0]!.inputIds.length)).to.deep.equal(reqs[0]!.inputIds)
    })
  })
})

describe('proxy streaming from a vLLM server (stand-in)', () => {
  let h: Harness
  beforeEach(async () => {
    h = await startProxy({ kinds: ['vllm'] })
  })
  afterEach(async () => {
    await h.close()
  })

  it('should deliver content while the engine is still generating, and the same reply as whole', async () => {
    const core = h.engines[0]!.core
    core.holdAfter = 4
    const held = new Promise((r) => core.once('held', r))
    const { client } = await h.open()
    const stream = await client.chat.completions.create({
      model: 'policy',
      messages: [{ role: 'user', content: 'hi there' }],
      stream: true,
    })
    const it = stream[Symbol.asyncIterator]()
    let content = ''
    while (content === '') {
      const { value, done } = await it.next()
      if (done) break
      content += value.choices[0]?.delta?.content ?? ''
    }
    await held
    expect(h.service.stats().completions).to.equal(0)
    core.release()
    for (;;) {
      const { value, done } = await it.next()
      if (done) break
      content += value.choices[0]?.delta?.content ?? ''
    }
    expect(content).to.equal('Hello! You said: hi there (v0)')
    const whole = await (await h.open()).client.chat.completions.create({
      model: 'policy',
      messages: [{ role: 'user', content: 'hi there' }],
    })
    expect(whole.choices[0]!.message.content).to.equal(content)
  })
})
