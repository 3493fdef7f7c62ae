/**
 * Regression guard (llm.c expected_losses, torchtitan loss_compare): 10 seeded PPO steps of the debug
 * model must reproduce test/fixtures/native/expected-losses.json. After an intended change of the
 * numbers, regenerate it with `UPDATE_FIXTURES=1 npx mocha test/native/loss-trace.test.ts` and say why
 * in the commit.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { expect } from 'chai'
import { createModel, numThreads, type PpoMicroBatch, setNumThreads } from '../../native/index.ts'
import { debugConfig, microBatch } from './helpers.ts'

const fixture = new URL('../fixtures/native/expected-losses.json', import.meta.url).pathname

interface TraceStep {
  loss: number
  gradNorm: number
  entropy: number
  approxKl: number
}

async function trace(): Promise<TraceStep[]> {
  const config = debugConfig()
  const model = await createModel({ config, seed: 1234 })
  const mbs: PpoMicroBatch[] = [
    microBatch([12, 20, 9], config.vocab_size, 101, { prompt: 4 }),
    microBatch([16, 7], config.vocab_size, 202, { prompt: 3 }),
  ]
  // proximal log-probs of the initial policy, kept for all steps (several PPO epochs on one batch)
  for (const mb of mbs) {
    const lp = (await model.logprobs(mb, { temperature: 0.9 })).logprobs
    const behave = new Float32Array(lp.length)
    for (let i = 0; i < lp.length; i++) behave[i] = lp[i]! + 0.3 * Math.sin(i)
    mb.proxLogprobs = lp
    mb.behaveLogprobs = behave
  }
  const out: TraceStep[] = []
  for (let s = 0; s < 10; s++) {
    const st = await model.ppoStep(
      mbs,
      { epsClip: 0.2, epsClipHigher: 0.28, dualClip: 3, behavImpWeightCap: 5, temperature: 0.9 },
      {
        lr: 2e-4,
        weightDecay: 0.01,
        maxGradNorm: 1,
        schedule: { kind: 'cosine', warmupSteps: 2, totalSteps: 10 },
      },
    )
    out.push({ loss: st.loss, gradNorm: st.gradNorm, entropy: st.entropy, approxKl: st.approxKl })
  }
  model.dispose()
  return out
}

describe('the seeded debug model trained for 10 steps', () => {
  let threads = 1
  before(() => {
    threads = numThreads()
    setNumThreads(1) // one summation order
  })
  after(() => setNumThreads(threads))

  it('should reproduce the recorded loss trace', async () => {
    const got = await trace()
    if (process.env.UPDATE_FIXTURES === '1') {
      writeFileSync(
        fixture,
        `${JSON.stringify({ config: 'configs/models/qwen3-debug', steps: got }, null, 2)}\n`,
      )
    }
    expect(existsSync(fixture), `${fixture} missing: run with UPDATE_FIXTURES=1`).to.equal(true)
    const want = (JSON.parse(readFileSync(fixture, 'utf8')) as { steps: TraceStep[] }).steps
    expect(got).to.have.length(want.length)
    // float32 training: across machines/BLAS builds results differ by summation order (~1e-6 relative
    // per step, compounding over 10 steps); 1e-4 relative still catches any change of the math.
    for (let s = 0; s < want.length; s++) {
      for (const k of ['loss', 'gradNorm', 'entropy', 'approxKl'] as const) {
        const a = got[s]![k]
        const b = want[s]![k]
        expect(Math.abs(a - b), `step ${s + 1} ${k}: ${a} vs recorded ${b}`).to.be.at.most(
          1e-4 * Math.abs(b) + 1e-7,
        )
      }
    }
    // the trace must actually move (a frozen model would pass a trivially recorded trace)
    expect(got[9]!.loss).to.not.equal(got[0]!.loss)
    expect(got[9]!.approxKl).to.be.greaterThan(got[1]!.approxKl)
  })
})
