import { expect } from 'chai'
import { rng, TaskDataset } from '../../actors/controller/dataset.ts'
import {
  type ControllerState,
  type LoopConfig,
  type LoopOps,
  type StepMetrics,
  TrainingLoop,
} from '../../actors/controller/loop.ts'
import { fail } from '../../runtime/errors.ts'
import { silentLogger } from '../../runtime/log.ts'
import type { EpisodeResult, TrajRef } from '../../runtime/messages.ts'

const cfg = (over: Partial<LoopConfig> = {}): LoopConfig => ({
  batchSize: 3,
  nSamples: 4,
  eta: 1,
  maxConcurrent: 8,
  totalSteps: 6,
  seed: 1,
  filterMeanAbove: 0.95,
  filterNoVariance: false,
  saveEvery: 2,
  weightsDir: '/w',
  checkpointDir: '/c',
  passK: 4,
  ...over,
})

/**
 * Scripted stand-ins for the rollout actors and the trainer (the loop's logic under test; the real
 * actors are exercised by the end-to-end test): groups take random time, some rollouts fail.
 */
function makeOps(seed: number, opts: { failEvery?: number; rollouts?: string[] } = {}) {
  const r = rng(seed)
  const log: {
    trained: { groupId: string; version: number }[][]
    events: string[]
    released: string[]
    version: number
  } = {
    trained: [],
    events: [],
    released: [],
    version: 0,
  }
  let n = 0
  const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms))
  const ops: LoopOps = {
    rollouts: () => opts.rollouts ?? ['rollout/0', 'rollout/1'],
    async runGroup(_rollout, req) {
      await sleep(1 + r() * 15)
      if (opts.failEvery && ++n % opts.failEvery === 0)
        throw Object.assign(new Error('peer died'), { code: 'RT_ERR_PEER_DEAD' })
      const episodes: EpisodeResult[] = Array.from({ length: req.nSamples }, (_, i) => ({
        sessionId: `${req.groupId}-${i}`,
        reward: r() < 0.4 ? 1 : 0,
        status: 'completed',
        components: { db: 1 },
        turns: 2,
        completions: 1,
      }))
      const traj: TrajRef = {
        proxy: 'proxy/0',
        ref: req.groupId,
        samples: 4,
        tokens: 40,
        trainableTokens: 20,
        minVersion: req.version,
        maxVersion: log.version,
      }
      return { groupId: req.groupId, episodes, traj, ms: 5 }
    },
    async trainStep(req) {
      log.events.push(`train ${req.step}@${req.version}`)
      log.trained.push(req.groups.map((g) => ({ groupId: g.groupId, version: req.version })))
      await sleep(5)
      return { step: req.step, stats: { loss: 0.5 }, ms: 5 }
    },
    async pauseGeneration() {
      log.events.push('pause')
    },
    async publish(version, dir) {
      log.events.push(`publish ${version} ${dir}`)
      return { loaded: false }
    },
    async loadWeights(_dir, version) {
      log.version = version
      log.events.push(`load ${version}`)
    },
    async resumeGeneration() {
      log.events.push('resume')
    },
    async syncProxy(id, _dir, version) {
      log.events.push(`sync ${id} ${version}`)
    },
    async checkpoint(dir) {
      log.events.push(`checkpoint ${dir}`)
    },
    async release(refs) {
      log.released.push(...refs.map((x) => x.ref))
    },
  }
  return { ops, log }
}

const admittedVersion = (groupId: string) => Number(/^g(\d+)-/.exec(groupId)![1])

describe('training loop', () => {
  describe('when rollouts and trainer work', () => {
    for (const eta of [0, 1, 2]) {
      it(`should run every step, bump the version through the update sequence and keep staleness ≤ η = ${eta}`, async () => {
        const { ops, log } = makeOps(eta + 10)
        const metrics: StepMetrics[] = []
        const loop = new TrainingLoop(
          cfg({ eta }),
          new TaskDataset(['a', 'b', 'c', 'd', 'e'], 1, true),
          ops,
          silentLogger(),
          (m) => metrics.push(m),
        )
        const end = await loop.run()
        await loop.drain()
        expect(end.step).to.equal(6)
        expect(end.version).to.equal(6)
        expect(metrics.map((m) => m.version)).to.deep.equal([1, 2, 3, 4, 5, 6])
        for (const batch of log.trained)
          for (const g of batch) expect(g.version - admittedVersion(g.groupId)).to.be.within(0, eta)
        // the update sequence, in order, for every step
        const first = log.events.slice(0, 5)
        expect(first).to.deep.equal(['train 1@0', 'pause', 'publish 1 /w/v1', 'load 1', 'resume'])
        expect(log.events.filter((e) => e.startsWith('checkpoint'))).to.deep.equal([
          'checkpoint /c/step-2',
          'checkpoint /c/step-4',
          'checkpoint /c/step-6',
        ])
        // every admitted group counted exactly once
        const c = end.counters
        expect(c.admitted).to.equal(c.trained + c.filtered + c.stale + c.failed + loop.running + loop.waiting)
        expect(c.trained).to.equal(18)
        expect(metrics[0]).to.include.keys(
          'reward_mean',
          'pass^1',
          'pass^4',
          'staleness_hist',
          'failures_by_blame',
          'tokens_per_s',
          'time_train_s',
        )
      })
    }
  })

  describe('when rollout actors fail', () => {
    it('should count failed groups once, retry their tasks and still finish', async () => {
      const { ops } = makeOps(3, { failEvery: 4 })
      const loop = new TrainingLoop(cfg(), new TaskDataset(['a', 'b', 'c'], 1, false), ops, silentLogger())
      const end = await loop.run()
      await loop.drain()
      expect(end.step).to.equal(6)
      expect(end.counters.failed).to.be.greaterThan(0)
      const c = end.counters
      expect(c.admitted).to.equal(c.trained + c.filtered + c.stale + c.failed + loop.running + loop.waiting)
    })
  })

  describe("when a proxy restarts with a batch's trajectories", () => {
    it('should drop the lost groups, train the others in a later batch and still finish', async () => {
      const { ops, log } = makeOps(4)
      const train = ops.trainStep
      let lostOnce: string | undefined
      ops.trainStep = async (req) => {
        if (req.step === 2 && !lostOnce) {
          // the trainer could not fetch the first group (its proxy came back empty): coded as the head does
          lostOnce = req.groups[0]!.groupId
          throw fail('TRN_ERR_LOST_TRAJECTORY', `1 of ${req.groups.length} groups`, {
            refs: [req.groups[0]!.traj.ref],
          })
        }
        return train(req)
      }
      const loop = new TrainingLoop(cfg(), new TaskDataset(['a', 'b', 'c'], 1, false), ops, silentLogger())
      const end = await loop.run()
      await loop.drain()
      expect(end.step).to.equal(6)
      const trained = log.trained.flat().map((g) => g.groupId)
      expect(trained).to.not.include(lostOnce)
      // the two survivors of the failed batch lead the next one
      expect(log.trained[1]!.slice(0, 2).map((g) => g.groupId)).to.not.include(lostOnce)
      expect(end.counters.failed).to.equal(1)
      const c = end.counters
      expect(c.admitted).to.equal(c.trained + c.filtered + c.stale + c.failed + loop.running + loop.waiting)
    })

    it('should fail the run on any other trainer error, or a lost-group error naming none of the batch', async () => {
      for (const err of [
        fail('TRN_ERR_BATCH', 'bad data'),
        fail('TRN_ERR_LOST_TRAJECTORY', 'someone else', { refs: ['not-in-this-batch'] }),
      ]) {
        const { ops } = makeOps(6)
        ops.trainStep = async () => {
          throw err
        }
        const loop = new TrainingLoop(cfg(), new TaskDataset(['a', 'b', 'c'], 1, false), ops, silentLogger())
        const e = await loop.run().catch((x: { code?: string }) => x)
        await loop.drain()
        expect(e).to.have.property('code', err.code)
      }
    })
  })

  describe('when a proxy comes back after a restart', () => {
    it('should bring it to the current weights, after an update in progress', async () => {
      const { ops, log } = makeOps(5)
      const loop = new TrainingLoop(cfg(), new TaskDataset(['a', 'b', 'c'], 1, false), ops, silentLogger())
      loop.noteWeights('/w/v0', 0, false)
      await loop.syncProxy('proxy/7') // before any update: the initial weights
      // a proxy registering while the step-2 update is loading its weights
      const load = ops.loadWeights
      let syncing: Promise<void> | undefined
      ops.loadWeights = async (dir, version, loaded) => {
        if (version === 2) syncing = loop.syncProxy('proxy/9')
        await load(dir, version, loaded)
      }
      await loop.run()
      await loop.drain()
      await syncing
      expect(log.events[0]).to.equal('sync proxy/7 0')
      const e = log.events
      // it waits for the update to end (resume), then gets version 2, not the weights it raced
      expect(e.indexOf('sync proxy/9 2')).to.be.greaterThan(e.indexOf('load 2'))
      expect(e.indexOf('sync proxy/9 2')).to.be.greaterThan(e.indexOf('resume', e.indexOf('load 2')))
    })
  })

  describe('when no group can run for a while (an outage)', () => {
    it('should back off between failed attempts instead of retrying in a tight loop, then go on', async () => {
      const { ops } = makeOps(4)
      const run = ops.runGroup
      let attempts = 0
      let outage = true
      setTimeout(() => {
        outage = false
      }, 400)
      ops.runGroup = async (rollout, req) => {
        if (outage) {
          attempts++
          throw Object.assign(new Error('no live proxy'), { code: 'RT_ERR_NO_ACTOR' })
        }
        return run(rollout, req)
      }
      const loop = new TrainingLoop(
        cfg({ failureBackoffMs: 20 }),
        new TaskDataset(['a', 'b', 'c'], 1, false),
        ops,
        silentLogger(),
      )
      const end = await loop.run()
      await loop.drain()
      expect(end.step).to.equal(6)
      // the admitted groups (≤ batch·(η+1) = 6) fail at once, then one try per backoff (20, 40, 80, 160 ms):
      // a handful in 400 ms, where an immediate refill fails thousands of times
      expect(attempts).to.be.within(1, 20)
      expect(end.counters.failed).to.equal(attempts)
    })
  })

  describe('when groups have nothing to learn', () => {
    it('should filter groups above the mean-reward threshold and release their data', async () => {
      const { ops, log } = makeOps(5)
      const loop = new TrainingLoop(
        cfg({ filterMeanAbove: 0.5, totalSteps: 3 }),
        new TaskDataset(['a'], 1, false),
        ops,
        silentLogger(),
      )
      const end = await loop.run()
      await loop.drain()
      expect(end.counters.filtered).to.be.greaterThan(0)
      expect(log.released.length).to.be.at.least(end.counters.filtered - loop.running)
    })
  })

  describe('when a run is recovered from a checkpoint', () => {
    it('should continue at step k+1 with its counters, dataset position and version', async () => {
      const { ops } = makeOps(7)
      const a = new TrainingLoop(
        cfg({ totalSteps: 2 }),
        new TaskDataset(['a', 'b', 'c', 'd'], 1, true),
        ops,
        silentLogger(),
      )
      const saved: ControllerState = await a.run()
      await a.drain()
      const { ops: ops2, log: log2 } = makeOps(8)
      const b = new TrainingLoop(
        cfg({ totalSteps: 4 }),
        new TaskDataset(['a', 'b', 'c', 'd'], 1, true),
        ops2,
        silentLogger(),
      )
      b.restore(saved)
      expect(b.staleness.state()).to.deep.equal({ version: 2, accepted: 6, running: 0 })
      const end = await b.run()
      await b.drain()
      expect(log2.events[0]).to.equal('train 3@2')
      expect(end.step).to.equal(4)
      expect(end.counters.trained).to.equal(12)
    })
  })
})
