import { expect } from 'chai'
import { messageKey, sameKey } from '../../actors/proxy/chat-messages.ts'

describe('message keys (matching a request to the completion it continues)', () => {
  describe('when two messages differ in any compared field', () => {
    it('should give different keys, also where text could shift from one field into the next', () => {
      const keys = [
        { role: 'user', content: 'ab' },
        { role: 'user', content: 'ab', name: '' },
        { role: 'user', content: 'b', name: 'a' },
        { role: 'user', content: '1:ab' },
        { role: 'user', content: '-ab' },
        { role: 'tool', content: 'ab', tool_call_id: 'x' },
        { role: 'tool', content: 'ab', tool_call_id: 'y' },
        { role: 'assistant', content: 'ab' },
        { role: 'assistant', content: 'ab', tool_calls: [{ function: { name: 'f', arguments: '{}' } }] },
        { role: 'assistant', content: 'ab', tool_calls: [{ function: { name: 'f', arguments: '{"a":1}' } }] },
        { role: 'assistant', content: 'ab', tool_calls: [{ function: { name: 'g', arguments: '{}' } }] },
      ].map(messageKey)
      for (let i = 0; i < keys.length; i++) {
        for (let j = 0; j < keys.length; j++)
          expect(sameKey(keys[i]!, keys[j]!), `${i} vs ${j}`).to.equal(i === j)
      }
    })
  })

  describe('when a client drops what it may drop', () => {
    it('should give the same key without tool-call ids and reasoning', () => {
      const full = messageKey({
        role: 'assistant',
        content: 'ok',
        reasoning_content: 'thought',
        tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'f', arguments: '{}' } }],
      })
      const bare = messageKey({
        role: 'assistant',
        content: 'ok',
        tool_calls: [{ function: { name: 'f', arguments: '{}' } }],
      })
      expect(sameKey(full, bare)).to.equal(true)
    })
  })
})
