import { expect } from 'chai'
import type OpenAI from 'openai'
import { PromptBuilder } from '../../actors/tokenizer/incremental.ts'
import { type Harness, startProxy } from '../fixtures/proxy/harness.ts'
import { qwen3 } from '../fixtures/proxy/qwen3.ts'

type Msg = OpenAI.Chat.Completions.ChatCompletionMessageParam

const policy = (tag: string) =>
  Array.from({ length: 80 }, (_, i) => `${tag} rule ${i}: check the booking before changing it.`).join('\n')

describe('tokenized first prompts (shared by the sessions of a task group)', () => {
  describe('when the same long render is encoded again', () => {
    it('should answer from the cache with the same ids, and encode short renders every time', () => {
      const { tokenizer, template } = qwen3()
      const b = new PromptBuilder(tokenizer, template)
      const long = policy('A')
      const first = b.encodeFull(long)
      expect(Array.from(first)).to.deep.equal(tokenizer.encode(long))
      expect(b.encodeFull(long)).to.equal(first)
      const short = 'hello there'
      expect(b.encodeFull(short)).to.not.equal(b.encodeFull(short))
    })

    it('should keep at most fullCacheTokens tokens, dropping the least recently used render', () => {
      const { tokenizer, template } = qwen3()
      const n = tokenizer.encode(policy('A')).length
      const b = new PromptBuilder(tokenizer, template, 2 * n + 50)
      const a = b.encodeFull(policy('A'))
      const c = b.encodeFull(policy('B'))
      expect(b.encodeFull(policy('A'))).to.equal(a) // A is now the most recent
      b.encodeFull(policy('C')) // over budget: B, the least recent, goes
      expect(b.encodeFull(policy('A'))).to.equal(a)
      expect(b.encodeFull(policy('B'))).to.not.equal(c)
      expect(new PromptBuilder(tokenizer, template, 0).encodeFull(policy('A'))).to.not.equal(a)
    })
  })

  describe('when several sessions open with the same system prompt and question', () => {
    let h: Harness
    beforeEach(async () => {
      h = await startProxy()
    })
    afterEach(async () => {
      await h.close()
    })

    it('should tokenize the first prompt once, send it to each, and keep it intact as the sessions go on', async () => {
      const tok = h.service.tokenizer
      const encode = tok.encode
      let longEncodes = 0
      tok.encode = (text: string) => {
        if (text.length >= 2048) longEncodes++
        return encode.call(tok, text)
      }
      try {
        const first: Msg[] = [
          { role: 'system', content: policy('P') },
          { role: 'user', content: 'Change my booking.' },
        ]
        const sessions = await Promise.all([h.open(), h.open(), h.open()])
        for (const { client } of sessions) {
          const messages = [...first]
          const r = await client.chat.completions.create({ model: 'policy', messages })
          messages.push(r.choices[0]!.message, { role: 'user', content: 'And the next one?' })
          await client.chat.completions.create({ model: 'policy', messages })
        }
        expect(longEncodes).to.equal(1)
        const reqs = h.engines[0]!.core.requests
        expect(reqs).to.have.length(6)
        const sent = reqs[0]!.inputIds
        expect(reqs[2]!.inputIds).to.deep.equal(sent)
        expect(reqs[4]!.inputIds).to.deep.equal(sent)
        // each session extended its own copy: the shared ids still read as the first prompt
        expect(
          Array.from(h.service.builder.encodeFull(h.service.builder.renderFull(first as never))),
        ).to.deep.equal(sent)
        expect(reqs[3]!.inputIds.slice(0, sent.length)).to.deep.equal(sent)
      } finally {
        tok.encode = encode
      }
    })
  })
})
