import { expect } from 'chai'
import {
  type Episode,
  groupAdvantages,
  idsEndingWith,
  QuickstartLearner,
  STOP_AFTER_CALL,
} from '../../bench/quickstart-learn.ts'

/**
 * The quick-start learning loop, a few small steps on the real native addon, tokenizer, template,
 * orchestrator and evaluation. Whether it learns is bench:quickstart-learn's job; here: it runs, its
 * samples are well formed, and an update moves the policy the way the advantages say.
 */
describe('quick-start learning loop (smoke)', () => {
  let learner: QuickstartLearner

  beforeEach(async () => {
    learner = new QuickstartLearner({
      group: 2,
      tasksPerStep: 4,
      maxNewTokens: 24,
      maxSteps: 4,
      threads: 1,
      seed: 3,
    })
    await learner.init()
  })
  afterEach(() => {
    learner.dispose()
  })

  describe('when one batch of episodes is collected from the untrained model', () => {
    let episodes: Episode[]
    beforeEach(async () => {
      episodes = await learner.collect()
    })

    it('should run every episode to a tau2 termination with a 0/1 reward', () => {
      expect(episodes).to.have.length(8)
      for (const e of episodes) {
        expect(['agent_stop', 'agent_error', 'max_steps', 'too_many_errors']).to.include(e.reason)
        expect([0, 1]).to.include(e.reward)
        expect(e.turns).to.be.within(1, 2)
      }
    })

    it('should build concat samples: a rendered prompt, then only generated tokens in the loss mask', () => {
      const tok = learner.tokenizer
      const stops = new Set([...tok.eosTokenIds, ...idsEndingWith(tok, STOP_AFTER_CALL)])
      for (const e of episodes) {
        expect(e.ids.length).to.equal(e.mask.length)
        expect(e.ids.length).to.equal(e.behave.length)
        expect(e.mask[0]).to.equal(0)
        const text = tok.decode(e.ids)
        expect(text.startsWith('<|im_start|>system\n# Tools\n')).to.equal(true)
        // the ticket ends the system turn, right before the first generation prompt
        expect(text).to.contain(`<ticket>${e.task.ticket}</ticket><|im_end|>\n<|im_start|>assistant\n`)
        // every turn's output is a masked run after the generation prompt; each but the last ends in a stop
        let runs = 0
        for (let i = 0; i < e.ids.length; i++) {
          if (e.mask[i] && !e.mask[i - 1]) {
            runs++
            expect(tok.decode(e.ids.slice(0, i)).endsWith('<|im_start|>assistant\n')).to.equal(true)
          }
          if (e.mask[i]) expect(e.behave[i]).to.be.below(0)
          else expect(e.behave[i]).to.equal(0)
          if (e.mask[i] && i + 1 < e.ids.length && !e.mask[i + 1]) expect(stops.has(e.ids[i])).to.equal(true)
        }
        expect(runs).to.equal(e.turns)
      }
    })

    it('should score its samples close to the engine log-probs (same model, same temperature)', async () => {
      const scores = await learner.scores(episodes)
      episodes.forEach((e, k) => {
        for (let i = 0; i < e.ids.length; i++)
          if (e.mask[i]) expect(Math.abs(scores[k][i] - e.behave[i])).to.be.below(1e-3)
      })
    })

    it('should take a finite PPO step that raises the log-prob of tokens with positive advantage', async () => {
      const adv = episodes.map((_, i) => (i % 2 ? -1 : 1))
      const before = await learner.scores(episodes)
      const stats = await learner.update(episodes, adv)
      expect(Number.isFinite(stats.loss)).to.equal(true)
      expect(Number.isFinite(stats.gradNorm)).to.equal(true)
      expect(stats.skipped).to.equal(false)
      expect(stats.tokens).to.equal(episodes.reduce((s, e) => s + e.mask.reduce((a, m) => a + m, 0), 0))
      const after = await learner.scores(episodes)
      let up = 0
      let down = 0
      episodes.forEach((e, k) => {
        for (let i = 0; i < e.ids.length; i++)
          if (e.mask[i]) {
            const d = after[k][i] - before[k][i]
            if (adv[k] > 0) up += d
            else down += d
          }
      })
      expect(up).to.be.above(0)
      expect(down).to.be.below(0)
    })
  })

  describe('when a full step runs', () => {
    it('should report the reward, termination counts and, when any group had mixed rewards, finite stats', async () => {
      const r = await learner.step()
      expect(r.episodes).to.equal(8)
      expect(r.reward).to.be.within(0, 1)
      expect(Object.values(r.terminations).reduce((s, n) => s + (n ?? 0), 0)).to.equal(8)
      if (r.stats) expect(Number.isFinite(r.stats.loss)).to.equal(true)
    })
  })

  describe('when advantages are computed per group', () => {
    it('should normalise within each group and give 0 to groups of equal rewards', () => {
      const adv = groupAdvantages([{ reward: 1 }, { reward: 0 }, { reward: 0 }, { reward: 0 }], 2)
      expect(adv[0]).to.be.closeTo(1, 1e-4)
      expect(adv[1]).to.be.closeTo(-1, 1e-4)
      expect(adv.slice(2)).to.deep.equal([0, 0])
    })
  })
})
