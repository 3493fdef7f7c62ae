import { expect } from 'chai'
import type OpenAI from 'openai'
import { sameJson, toChatMessage } from '../../actors/proxy/chat-messages.ts'
import type { ChatRequestMessage } from '../../actors/proxy/openai.ts'
import { type Harness, startProxy } from '../fixtures/proxy/harness.ts'
import { qwen3, WEATHER_TOOL } from '../fixtures/proxy/qwen3.ts'

type Msg = OpenAI.Chat.Completions.ChatCompletionMessageParam

/** One edit of message `k`: content grown, its first or last character changed, or a name added. */
function edit(m: Msg, k: number): Msg {
  const content = String(m.content)
  switch (k % 4) {
    case 0:
      return { ...m, content: `${content}!` } as Msg
    case 1:
      return { ...m, content: `${content[0] === 'X' ? 'Y' : 'X'}${content.slice(1)}` } as Msg
    case 2:
      return { ...m, name: 'someone' } as Msg
    default:
      return { ...m, content: `${content.slice(0, -1)}${content.endsWith('Z') ? 'W' : 'Z'}` } as Msg
  }
}

describe('matching a request to the completion it continues', () => {
  let h: Harness
  beforeEach(async () => {
    h = await startProxy()
  })
  afterEach(async () => {
    await h.close()
  })

  describe('when the client edits any earlier message of a 22-turn conversation', () => {
    it('should never extend a completion whose history holds the edited message, and prompt exactly the edited conversation', async () => {
      const { handle, client } = await h.open()
      const { tokenizer, builder } = qwen3()
      const system = Array.from({ length: 60 }, (_, i) => `Rule ${i}: check the booking first.`).join('\n')
      const messages: Msg[] = [{ role: 'system', content: system }]
      for (let t = 0; t < 22; t++) {
        messages.push({ role: 'user', content: `number ${t}` })
        const r = await client.chat.completions.create({ model: 'policy', messages })
        messages.push(r.choices[0]!.message)
      }
      const session = h.service.authenticate(handle.sessionId, handle.apiKey)
      const last = session.completions.at(-1)!
      // the unedited conversation continues the last completion
      await client.chat.completions.create({
        model: 'policy',
        messages: [...messages, { role: 'user', content: 'go on' }],
      })
      expect(session.completions.at(-1)!.parent).to.equal(last)
      for (let k = 0; k < messages.length; k++) {
        const edited = [...messages.slice(0, k), edit(messages[k]!, k), ...messages.slice(k + 1)]
        edited.push({ role: 'user', content: `after editing ${k}` })
        await client.chat.completions.create({ model: 'policy', messages: edited })
        const rec = session.completions.at(-1)!
        // a parent may only be a completion whose messages and reply all come before message k
        if (rec.parent) expect(rec.parent.chat!.msgKeys.length, `edit of message ${k}`).to.be.below(k)
        const chat = edited.map((m) => toChatMessage(m as ChatRequestMessage))
        expect(tokenizer.decode(rec.promptIds), `edit of message ${k}`).to.equal(builder.renderFull(chat))
      }
      expect(h.service.stats().historyRewrites).to.equal(0)
    })
  })
})

describe('comparing tools and template arguments between requests', () => {
  it('should treat values as equal exactly when their JSON text is equal', () => {
    expect(sameJson({ a: [1, 'x', null], b: { c: true } }, { a: [1, 'x', null], b: { c: true } })).to.equal(
      true,
    )
    expect(sameJson(undefined, undefined)).to.equal(true)
    expect(sameJson({ a: 1, b: 2 }, { b: 2, a: 1 })).to.equal(false) // key order shows in JSON text
    expect(sameJson([1, 2], { 0: 1, 1: 2 })).to.equal(false)
    expect(sameJson({ a: [1] }, { a: [1, 2] })).to.equal(false)
    expect(sameJson({ a: null }, { a: {} })).to.equal(false)
    expect(sameJson({ a: 1 }, { a: 1, b: 1 })).to.equal(false)
    expect(sameJson(undefined, [])).to.equal(false)
    expect(sameJson('1', 1)).to.equal(false)
  })

  describe('when a session changes its tools between turns', () => {
    let h: Harness
    beforeEach(async () => {
      h = await startProxy()
    })
    afterEach(async () => {
      await h.close()
    })

    it('should extend while the tools are re-sent unchanged, and start over when they change, even in key order only', async () => {
      const { handle, client } = await h.open()
      const { tokenizer, builder } = qwen3()
      const session = h.service.authenticate(handle.sessionId, handle.apiKey)
      const messages: Msg[] = [{ role: 'user', content: 'number 1' }]
      const turn = async (tools: Record<string, unknown>[]) => {
        const r = await client.chat.completions.create({
          model: 'policy',
          messages,
          tools: structuredClone(tools) as unknown as OpenAI.Chat.Completions.ChatCompletionTool[],
        })
        const rec = session.completions.at(-1)!
        const chat = messages.map((m) => toChatMessage(m as ChatRequestMessage))
        expect(tokenizer.decode(rec.promptIds)).to.equal(builder.renderFull(chat, { tools }))
        messages.push(r.choices[0]!.message, { role: 'user', content: `number ${messages.length}` })
        return rec
      }
      const first = await turn([WEATHER_TOOL])
      const second = await turn([WEATHER_TOOL])
      expect(second.parent).to.equal(first)
      const { name, description, parameters } = WEATHER_TOOL.function
      const reordered = [{ type: 'function', function: { description, name, parameters } }]
      const third = await turn(reordered)
      expect(third.parent).to.equal(null)
      const fourth = await turn(reordered)
      expect(fourth.parent).to.equal(third)
      const fifth = await turn([
        WEATHER_TOOL,
        { type: 'function', function: { name: 'other', parameters: {} } },
      ])
      expect(fifth.parent).to.equal(null)
    })
  })
})
