import { expect } from 'chai'
import type OpenAI from 'openai'
import { idsToJson } from '../../actors/proxy/ids-json.ts'
import { TokenChain } from '../../actors/proxy/session.ts'
import { type Harness, startProxy } from '../fixtures/proxy/harness.ts'

type Msg = OpenAI.Chat.Completions.ChatCompletionMessageParam

/** What JSON.stringify makes of the ids, without the brackets: the reference the cached bytes must equal. */
const fresh = (ids: ArrayLike<number>) => JSON.stringify(Array.from(ids)).slice(1, -1)

describe('engine request bodies from token chains', () => {
  describe('when ids are serialised', () => {
    it('should write every 32-bit id as JSON.stringify does', () => {
      const ids = [0, 9, 10, 99, 100, 151643, -1, -10, 2147483647, -2147483648, 1000000000]
      expect(idsToJson(ids).toString('latin1')).to.equal(fresh(ids))
      expect(idsToJson([]).length).to.equal(0)
    })
  })

  describe('when a chain grows, is cut back and grows again', () => {
    it('should give the bytes of a fresh serialisation at every length, and never change bytes handed out', () => {
      let seed = 7
      const rand = (n: number) => {
        seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
        return seed % n
      }
      const chain = new TokenChain(16)
      const handed: { bytes: Buffer; text: string }[] = []
      for (let step = 0; step < 300; step++) {
        const op = rand(10)
        if (op < 7) {
          chain.append(Array.from({ length: rand(40) }, () => rand(200_000)))
        } else if (op < 9 && chain.len > 0) {
          chain.truncate(rand(chain.len + 1))
        }
        const len = rand(4) === 0 ? rand(chain.len + 1) : chain.len
        const bytes = chain.json(len)
        expect(bytes.toString('latin1'), `step ${step}, json(${len}) of ${chain.len}`).to.equal(
          fresh(chain.view(0, len)),
        )
        handed.push({ bytes, text: bytes.toString('latin1') })
      }
      for (const [i, h] of handed.entries())
        expect(h.bytes.toString('latin1'), `bytes handed out at step ${i}`).to.equal(h.text)
    })

    it('should refuse lengths outside the chain', () => {
      const chain = TokenChain.of([1, 2, 3])
      expect(() => chain.json(4)).to.throw(RangeError)
      expect(() => chain.truncate(5)).to.throw(RangeError)
    })
  })

  describe('when a conversation runs 20 turns with a history rewrite, a retried branch and a failed turn', () => {
    let h: Harness
    beforeEach(async () => {
      h = await startProxy()
    })
    afterEach(async () => {
      await h.close()
    })

    it("should send each turn's prompt as recorded, its cached bytes equal to a fresh serialisation", async () => {
      const { handle, client } = await h.open()
      const core = h.engines[0]!.core
      const messages: Msg[] = [{ role: 'system', content: 'Count with me.' }]
      /** engine request index of each recorded completion, in order */
      const sentBy: number[] = []
      const turn = async () => {
        const r = await client.chat.completions.create({ model: 'policy', messages })
        sentBy.push(core.requests.length - 1)
        return r
      }
      for (let t = 0; t < 20; t++) {
        // turn 8 thinks; Qwen3 drops that <think> at turn 9's new query: a new sample (new chain) starts
        messages.push({ role: 'user', content: t === 8 ? 'think first' : `number ${t}` })
        if (t === 12) {
          // a turn that fails on the engine (taken back off the chain) before the agent sends it again
          core.holdAfter = 1
          const held = new Promise((r) => core.once('held', r))
          const ac = new AbortController()
          const failed = client.chat.completions.create({ model: 'policy', messages }, { signal: ac.signal })
          await held
          const dropped = new Promise((r) => core.once('abort_request', r))
          ac.abort()
          await failed.catch(() => {})
          await dropped
          core.holdAfter = null
        }
        // turn 15 is sent twice: the second branches off a copy of the chain
        if (t === 15) await turn()
        const r = await turn()
        messages.push(r.choices[0]!.message)
      }
      expect(h.service.stats().historyRewrites).to.equal(1)
      const recs = h.service.authenticate(handle.sessionId, handle.apiKey).completions
      expect(recs).to.have.length(21)
      expect(new Set(recs.map((r) => r.chain)).size).to.equal(3)
      for (const [i, rec] of recs.entries()) {
        const sent = core.requests[sentBy[i]!]!.inputIds
        expect(sent, `completion ${i}: ids the engine got`).to.deep.equal(Array.from(rec.promptIds))
        expect(rec.chain.json(rec.promptLen).toString('latin1'), `completion ${i}: cached bytes`).to.equal(
          fresh(rec.promptIds),
        )
      }
    })
  })
})
