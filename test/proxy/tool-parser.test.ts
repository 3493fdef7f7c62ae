import { expect } from 'chai'
import { parseOutput, StreamingParser } from '../../actors/proxy/tool-parser.ts'

const opts = { tools: true, reasoning: true, idPrefix: 'call_x_' }

describe('tool-call and reasoning parser', () => {
  describe('when the output holds well-formed Qwen tool calls', () => {
    it('should return every call with an id and JSON-string arguments', () => {
      const text =
        'Checking both.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n' +
        '<tool_call>\n{"name": "get_time", "arguments": {"tz": "CET", "fmt": [1, 2]}}\n</tool_call>'
      const out = parseOutput(text, opts)
      expect(out.content).to.equal('Checking both.')
      expect(out.malformed).to.equal(0)
      expect(out.toolCalls).to.deep.equal([
        { id: 'call_x_0', name: 'get_weather', arguments: '{"city":"Paris"}' },
        { id: 'call_x_1', name: 'get_time', arguments: '{"tz":"CET","fmt":[1,2]}' },
      ])
    })

    it('should split a think block into reasoning', () => {
      const out = parseOutput('<think>\nLet me see.\n</think>\n\nIt is sunny.', opts)
      expect(out).to.include({ reasoning: 'Let me see.', content: 'It is sunny.' })
    })

    it('should treat the text before </think> as reasoning when the template opened the block', () => {
      const out = parseOutput('hmm\n</think>\n\nYes.', { ...opts, reasoningOpen: true })
      expect(out).to.include({ reasoning: 'hmm', content: 'Yes.' })
    })

    it('should leave tool calls as text when tools are off (tool_choice none)', () => {
      const text = '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>'
      const out = parseOutput(text, { ...opts, tools: false })
      expect(out.toolCalls).to.deep.equal([])
      expect(out.content).to.equal(text)
    })
  })

  describe('when a tool call is malformed', () => {
    it('should keep bad JSON, a missing name and an unclosed block as content and count them', () => {
      const bad1 = '<tool_call>\n{"name": "f", "arguments": {oops}}\n</tool_call>'
      const bad2 = '<tool_call>\n{"arguments": {}}\n</tool_call>'
      const good = '<tool_call>\n{"name": "g", "arguments": "{\\"a\\": 1}"}\n</tool_call>'
      const unclosed = '<tool_call>\n{"name": "h"'
      const out = parseOutput(`${bad1}\n${good}\n${bad2}\n${unclosed}`, opts)
      expect(out.malformed).to.equal(3)
      expect(out.toolCalls).to.deep.equal([{ id: 'call_x_0', name: 'g', arguments: '{"a": 1}' }])
      expect(out.content).to.contain(bad1).and.contain(bad2).and.contain(unclosed)
    })
  })

  describe('when streaming', () => {
    const cases = [
      '<think>\nPlan: call.\n</think>\n\nSure, checking.\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>',
      'Plain answer with <b>tags</b> and trailing space.  \n',
      '<think>\nunfinished reasoning',
      'Before <tool_call>\n{"name": "f", "arguments": {}}\n</tool_call> after.',
    ]
    for (const text of cases) {
      it(`should stream pieces that add up to the final parse: ${JSON.stringify(text.slice(0, 30))}`, () => {
        const p = new StreamingParser(opts)
        let reasoning = ''
        let content = ''
        for (let i = 1; i <= text.length; i++) {
          const d = p.update(text.slice(0, i))
          reasoning += d.reasoning
          content += d.content
          expect(content.includes('<tool_call'), 'no tool markup leaks into streamed content').to.equal(false)
        }
        const fin = p.finish(text)
        reasoning += fin.reasoningDelta
        content += fin.contentDelta
        const want = parseOutput(text, opts)
        expect(content).to.equal(want.content)
        expect(reasoning).to.equal(want.reasoning ?? '')
      })
    }
  })
})
