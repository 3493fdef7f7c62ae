import { expect } from 'chai'
import { assemble, microBatches, split } from '../../actors/trainer/batch.ts'
import { packOf } from './helpers.ts'

describe('trainer batches', () => {
  describe('when assembling fetched groups', () => {
    it('should concatenate samples and tag each with its group', () => {
      const b = assemble([packOf('a', [4, 5], [1, 0]), packOf('b', [3], [0.5])], 512)
      expect(Array.from(b.offsets)).to.deep.equal([0, 4, 9, 12])
      expect(Array.from(b.groups)).to.deep.equal([0, 0, 1])
      expect(Array.from(b.rewards)).to.deep.equal([1, 0, 0.5])
      expect(b.inputIds.length).to.equal(12)
    })

    it('should refuse inconsistent or unusable data with TRN_ERR_BATCH', () => {
      const bad = packOf('a', [4, 5], [1, 0])
      bad.lossMask = bad.lossMask.subarray(1)
      expect(() => assemble([bad], 512))
        .to.throw()
        .with.property('code', 'TRN_ERR_BATCH')
      const first = packOf('a', [4], [1])
      first.lossMask[0] = 1
      expect(() => assemble([first], 512))
        .to.throw()
        .with.property('code', 'TRN_ERR_BATCH')
      expect(() => assemble([packOf('a', [4], [1])], 3)).to.throw(/outside the vocabulary/)
      const none = packOf('a', [2, 2], [1, 0])
      expect(() => assemble([none], 512)).to.throw(/no loss tokens/)
      expect(() => assemble([], 512)).to.throw(/no samples/)
    })
  })

  describe('when splitting over ranks and minibatches', () => {
    const b = assemble([packOf('a', [10, 3, 7, 7], [1, 0, 1, 0]), packOf('b', [5, 6, 2], [0, 1, 1])], 512)
    const adv = new Float32Array(b.inputIds.length).map((_, i) => i)

    it('should balance tokens across ranks and keep every sample exactly once', () => {
      const shards = split(b, adv, 2, 1)
      const tokens = shards.map((s) => s.inputIds.length)
      expect(tokens[0]! + tokens[1]!).to.equal(40)
      expect(Math.abs(tokens[0]! - tokens[1]!)).to.be.at.most(2)
      // advantages travel with their tokens: the multiset of values is preserved
      const all = shards.flatMap((s) => Array.from(s.advantages)).sort((x, y) => x - y)
      expect(all).to.deep.equal(Array.from(adv))
    })

    it('should give every rank the same number of minibatches, padding empty ones with a dummy sample', () => {
      const small = assemble([packOf('a', [6], [1])], 512)
      const shards = split(small, new Float32Array(6).fill(1), 3, 2)
      for (const s of shards) expect(s.minibatches).to.have.length(2)
      const dummies = shards.flatMap((s) =>
        s.minibatches.filter(([a, e]) => s.cuSeqlens[e!]! - s.cuSeqlens[a!]! === 2),
      )
      expect(dummies).to.have.length(5)
      const lossTokens = shards.reduce((n, s) => n + s.lossMask.reduce((a, m) => a + m, 0), 0)
      expect(lossTokens).to.equal(4)
    })

    it('should cut a minibatch into micro-batches within the token budget', () => {
      const [s] = split(b, adv, 1, 1)
      const prox = new Float32Array(s!.inputIds.length)
      const mbs = microBatches(s!, s!.minibatches[0]!, prox, 12)
      for (const mb of mbs) {
        const n = mb.inputIds.length
        expect(n === mb.cuSeqlens.at(-1)).to.equal(true)
        expect(n <= 12 || mb.cuSeqlens.length === 2, `micro-batch of ${n} tokens`).to.equal(true)
      }
      expect(mbs.reduce((a, m) => a + m.inputIds.length, 0)).to.equal(40)
    })
  })
})
