import { expect } from 'chai'
import { type ChatMessage, ChatTemplate } from '../../actors/tokenizer/chat-template.ts'
import { PromptBuilder } from '../../actors/tokenizer/incremental.ts'
import { qwen3, WEATHER_TOOL } from '../fixtures/proxy/qwen3.ts'

/** What a thinking Qwen3 model writes for a tool-calling turn (the template's own layout). */
function thinkingToolTurn(i: number): { text: string; message: ChatMessage } {
  const args = `{"city": "City${i}"}`
  const reasoning = `Step ${i}: I need the weather.`
  return {
    text: `<think>\n${reasoning}\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": ${args}}\n</tool_call>`,
    message: {
      role: 'assistant',
      content: '',
      reasoning_content: reasoning,
      tool_calls: [{ id: `call_${i}`, type: 'function', function: { name: 'get_weather', arguments: args } }],
    },
  }
}

describe('incremental prompts with the Qwen3 template', () => {
  describe('when an agent calls tools for 20 turns', () => {
    it('should build each prompt as the previous prompt + output + delta, equal to a full render', () => {
      const { tokenizer, builder } = qwen3()
      const ctx = { tools: [WEATHER_TOOL] }
      const messages: ChatMessage[] = [
        { role: 'system', content: 'You answer weather questions.' },
        { role: 'user', content: 'Weather in twenty cities, please.' },
      ]
      let prompt = builder.full(messages, ctx)
      for (let i = 0; i < 20; i++) {
        const turn = thinkingToolTurn(i)
        const output = [...tokenizer.encode(turn.text), 151645]
        messages.push(turn.message, { role: 'tool', tool_call_id: `call_${i}`, content: `{"temp": ${i}}` })
        const d = builder.delta(messages.slice(-1), ctx, { prevReasoning: 'text', outputEndsWithEos: true })
        expect(d.kind, `turn ${i}`).to.equal('extend')
        if (d.kind !== 'extend') return
        const next = [...prompt, ...output, ...d.ids]
        // exact prefix by construction; and the same text and ids a full re-render gives
        expect(next.slice(0, prompt.length)).to.deep.equal(prompt)
        expect(tokenizer.decode(next)).to.equal(builder.renderFull(messages, ctx))
        expect(next).to.deep.equal(builder.full(messages, ctx))
        prompt = next
      }
    })

    it('should add the eos the template writes when the output was cut before it', () => {
      const { tokenizer, builder } = qwen3()
      const ctx = { tools: [WEATHER_TOOL] }
      const messages: ChatMessage[] = [{ role: 'user', content: 'Go.' }]
      const prompt = builder.full(messages, ctx)
      const turn = thinkingToolTurn(0)
      messages.push(turn.message, { role: 'tool', tool_call_id: 'call_0', content: 'sunny' })
      const d = builder.delta(messages.slice(-1), ctx, { prevReasoning: 'text', outputEndsWithEos: false })
      expect(d.kind).to.equal('extend')
      if (d.kind !== 'extend') return
      expect(d.text.startsWith('<|im_end|>\n<|im_start|>user\n<tool_response>\nsunny')).to.equal(true)
      const next = [...prompt, ...tokenizer.encode(turn.text), ...d.ids]
      expect(tokenizer.decode(next)).to.equal(builder.renderFull(messages, ctx))
    })
  })

  describe('when a new user query follows a thinking turn', () => {
    it('should report a history rewrite (Qwen3 drops the old <think>) instead of extending', () => {
      const { builder } = qwen3()
      const d = builder.delta(
        [{ role: 'user', content: 'And tomorrow?' }],
        {},
        {
          prevReasoning: 'text',
          outputEndsWithEos: true,
        },
      )
      expect(d.kind).to.equal('rewrite')
    })
  })

  describe('when the model answered without a think block', () => {
    it('should extend across user turns, matching a full render each time', () => {
      const { tokenizer, builder } = qwen3()
      const messages: ChatMessage[] = [{ role: 'user', content: 'one' }]
      let prompt = builder.full(messages)
      for (let i = 0; i < 5; i++) {
        messages.push(
          { role: 'assistant', content: `answer ${i}` },
          { role: 'user', content: `question ${i}` },
        )
        const d = builder.delta(messages.slice(-1), {}, { prevReasoning: 'none', outputEndsWithEos: true })
        expect(d.kind).to.equal('extend')
        if (d.kind !== 'extend') return
        prompt = [...prompt, ...tokenizer.encode(`answer ${i}`), 151645, ...d.ids]
        expect(prompt).to.deep.equal(builder.full(messages))
      }
    })

    it('should report a rewrite after an empty think block, which Qwen3 drops from history', () => {
      const { builder } = qwen3()
      const d = builder.delta(
        [{ role: 'tool', content: 'x' }],
        {},
        { prevReasoning: 'empty', outputEndsWithEos: true },
      )
      expect(d.kind).to.equal('rewrite')
    })
  })

  describe('when thinking is disabled and the turn had no reasoning', () => {
    it("should report a rewrite, since Qwen3 drops the generation prompt's empty think block from history", () => {
      const { tokenizer, builder } = qwen3()
      const ctx = { kwargs: { enable_thinking: false } }
      const messages: ChatMessage[] = [{ role: 'user', content: 'Hi' }]
      const prompt = builder.full(messages, ctx)
      const d = builder.delta([{ role: 'user', content: 'More?' }], ctx, {
        prevReasoning: 'none',
        outputEndsWithEos: true,
      })
      // The empty think block of the generation prompt is not kept in history: Qwen3 re-renders it.
      expect(d.kind).to.equal('rewrite')
      expect(tokenizer.decode(prompt).endsWith('<think>\n\n</think>\n\n')).to.equal(true)
    })
  })
})

describe('incremental prompts with a plain ChatML template', () => {
  it('should extend across user turns, matching a full render each time', () => {
    const { tokenizer } = qwen3()
    const chatml = new ChatTemplate(
      "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>' + '\\n' }}{% endfor %}" +
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
    )
    const builder = new PromptBuilder(tokenizer, chatml)
    const messages: ChatMessage[] = [{ role: 'user', content: 'one' }]
    let prompt = builder.full(messages)
    for (let i = 0; i < 5; i++) {
      const answer = `answer ${i}`
      messages.push({ role: 'assistant', content: answer }, { role: 'user', content: `question ${i}` })
      const d = builder.delta(messages.slice(-1), {}, { prevReasoning: 'none', outputEndsWithEos: true })
      expect(d.kind).to.equal('extend')
      if (d.kind !== 'extend') return
      prompt = [...prompt, ...tokenizer.encode(answer), 151645, ...d.ids]
      expect(prompt).to.deep.equal(builder.full(messages))
    }
  })
})
