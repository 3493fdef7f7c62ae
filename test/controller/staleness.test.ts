import { expect } from 'chai'
import { StalenessManager } from '../../actors/controller/staleness.ts'

/** Simulate a run: groups finish in random order, a step trains the first `batch` accepted groups. */
function simulate(eta: number, batch: number, steps: number, seed: number, maxConcurrent = 1000) {
  const m = new StalenessManager(batch, eta, maxConcurrent)
  let s = seed
  const rand = () => (s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32
  const running: number[] = [] // admission versions
  const ready: number[] = []
  let maxStale = 0
  let maxRunning = 0
  let dropped = 0
  let trained = 0
  while (m.version < steps) {
    while (m.admit()) running.push(m.version)
    maxRunning = Math.max(maxRunning, m.running)
    // one random running group finishes; 10% are filtered out
    const i = Math.floor(rand() * running.length)
    const v = running.splice(i, 1)[0]
    const keep = rand() > 0.1
    if (keep && m.isStale(v)) {
      dropped++
      m.finish(false)
    } else {
      m.finish(keep)
      if (keep) ready.push(v)
    }
    if (ready.length >= batch) {
      const take = ready.splice(0, batch)
      for (const av of take) maxStale = Math.max(maxStale, m.version - av)
      trained += take.length
      m.setVersion(m.version + 1)
    }
  }
  return { maxStale, maxRunning, dropped, trained }
}

describe('staleness manager', () => {
  describe('when η = 0 (synchronous)', () => {
    it('should admit exactly one batch per version', () => {
      const m = new StalenessManager(4, 0, 100)
      let n = 0
      while (m.admit()) n++
      expect(n).to.equal(4)
      for (let i = 0; i < 4; i++) m.finish(true)
      expect(m.capacity()).to.equal(0)
      m.setVersion(1)
      expect(m.capacity()).to.equal(4)
    })
  })

  describe('when groups finish out of order and some are filtered', () => {
    for (const eta of [0, 1, 2, 4]) {
      it(`should never train a group more than η = ${eta} versions after its admission`, () => {
        for (const seed of [1, 2, 3]) {
          const { maxStale, trained } = simulate(eta, 4, 30, seed)
          expect(maxStale).to.be.at.most(eta)
          expect(trained).to.equal(30 * 4)
        }
      })
    }

    it('should reach staleness η when there is enough concurrency (the bound is tight)', () => {
      expect(simulate(2, 4, 30, 7).maxStale).to.equal(2)
    })

    it('should respect max concurrency', () => {
      expect(simulate(8, 4, 20, 5, 6).maxRunning).to.be.at.most(6)
    })
  })

  describe('when a run resumes', () => {
    it('should restart accepted at version·batch so capacity is that of a fresh version', () => {
      const m = new StalenessManager(4, 1, 100)
      m.resume(7)
      expect(m.state()).to.deep.equal({ version: 7, accepted: 28, running: 0 })
      expect(m.capacity()).to.equal(8)
    })

    it('should refuse finish() without a running group', () => {
      expect(() => new StalenessManager(1, 0, 1).finish(true)).to.throw(/without a running group/)
    })
  })
})
