import { expect } from 'chai'
import { createModel, type Generation, type Model, type SamplingParams } from '../../native/index.ts'
import { debugConfig, maxAbsDiff, pairs, rng } from './helpers.ts'

// The KV-cache path and the recompute path do the same float32 math in a different order (one token vs
// the whole sequence per matmul): ~1e-6 on log-probs near -6; 1e-4 absolute is a wide, safe bound.
const TOL = 1e-4
const V = 512

function prompts(lengths: number[], seed: number): Int32Array[] {
  const r = rng(seed)
  return lengths.map((n) => Int32Array.from({ length: n }, () => Math.floor(r() * V)))
}

function concat(a: Int32Array, b: Int32Array): Int32Array {
  const o = new Int32Array(a.length + b.length)
  o.set(a)
  o.set(b, a.length)
  return o
}

describe('a debug model generating', () => {
  let model: Model
  const config = debugConfig({ vocab_size: V, eos_token_id: V - 1 })
  beforeEach(async () => {
    model = await createModel({ config, seed: 21 })
  })
  afterEach(() => model.dispose())

  it('should return the same tokens and log-probs with the KV cache as recomputing from scratch', async () => {
    const ps = prompts([3, 9, 1, 6], 1)
    const reqs = ps.map((prompt, i) => ({ prompt, maxNewTokens: [12, 5, 16, 9][i] }))
    const s: SamplingParams = { temperature: 0.8, topP: 0.95, topK: 200, seed: 5, stopIds: [] }
    const cached = await model.generate(reqs, s)
    const fresh = await model.generate(reqs, { ...s, kvCache: false })
    for (let i = 0; i < reqs.length; i++) {
      expect(cached[i]!.finish).to.equal('length')
      expect(cached[i]!.tokens.length).to.equal(reqs[i]!.maxNewTokens)
      expect(Array.from(cached[i]!.tokens)).to.deep.equal(Array.from(fresh[i]!.tokens))
      const d = maxAbsDiff(cached[i]!.logprobs, fresh[i]!.logprobs)
      expect(d, pairs(cached[i]!.logprobs, fresh[i]!.logprobs)).to.be.at.most(TOL)
    }
  })

  it('should report the log-probs the trainer recomputes for the same tokens', async () => {
    const ps = prompts([4, 7], 2)
    const out = await model.generate(
      ps.map((prompt) => ({ prompt, maxNewTokens: 10 })),
      { temperature: 0.7, seed: 9, stopIds: [] },
    )
    for (let i = 0; i < ps.length; i++) {
      const ids = concat(ps[i]!, out[i]!.tokens)
      const lp = await model.logprobs(
        { inputIds: ids, cuSeqlens: new Int32Array([0, ids.length]) },
        { temperature: 0.7 },
      )
      const tail = lp.logprobs.slice(ps[i]!.length)
      expect(maxAbsDiff(tail, out[i]!.logprobs), pairs(tail, out[i]!.logprobs)).to.be.at.most(TOL)
    }
  })

  it('should decode greedily and deterministically at temperature 0', async () => {
    const req = [{ prompt: prompts([5], 3)[0]!, maxNewTokens: 12 }]
    const a = await model.generate(req, { temperature: 0, stopIds: [] })
    const b = await model.generate(req, { temperature: 0, stopIds: [] })
    expect(Array.from(a[0]!.tokens)).to.deep.equal(Array.from(b[0]!.tokens))
    // each greedy token is the most likely one: no other token beats its log-prob
    const ids = concat(req[0]!.prompt, a[0]!.tokens)
    const lp = await model.logprobs({ inputIds: ids, cuSeqlens: new Int32Array([0, ids.length]) })
    expect(maxAbsDiff(lp.logprobs.slice(5), a[0]!.logprobs)).to.be.at.most(TOL)
    for (const x of a[0]!.logprobs) expect(x).to.be.greaterThan(-Math.log(V))
  })

  it('should give different samples for different seeds and equal ones for equal seeds', async () => {
    const prompt = prompts([4], 4)[0]!
    const out = await model.generate(
      [
        { prompt, maxNewTokens: 8, seed: 1 },
        { prompt, maxNewTokens: 8, seed: 2 },
        { prompt, maxNewTokens: 8, seed: 1 },
      ],
      { temperature: 1, stopIds: [] },
    )
    expect(Array.from(out[0]!.tokens)).to.deep.equal(Array.from(out[2]!.tokens))
    expect(Array.from(out[0]!.tokens)).to.not.deep.equal(Array.from(out[1]!.tokens))
  })

  it('should stop at a stop id and include it', async () => {
    const req = [{ prompt: prompts([6], 5)[0]!, maxNewTokens: 10 }]
    const free = await model.generate(req, { temperature: 0, stopIds: [] })
    const stop = free[0]!.tokens[3]!
    const first = free[0]!.tokens.indexOf(stop)
    const out = await model.generate(req, { temperature: 0, stopIds: [stop] })
    expect(out[0]!.finish).to.equal('stop')
    expect(out[0]!.tokens.length).to.equal(first + 1)
    expect(out[0]!.tokens[first]).to.equal(stop)
  })

  it('should use the config eos_token_id as the default stop id', async () => {
    const req = [{ prompt: prompts([6], 6)[0]!, maxNewTokens: 10 }]
    const free = await model.generate(req, { temperature: 0, stopIds: [] })
    const eos = free[0]!.tokens[2]!
    const m = await createModel({
      config: debugConfig({ vocab_size: V, eos_token_id: [V - 2, eos] }),
      seed: 21,
    })
    const out = await m.generate(req, { temperature: 0 })
    expect(out[0]!.finish).to.equal('stop')
    expect(out[0]!.tokens.length).to.equal(free[0]!.tokens.indexOf(eos) + 1)
    m.dispose()
  })

  it('should continue exactly after an abort when resumed from the partial output', async () => {
    const reqs = prompts([5, 2], 7).map((prompt, i) => ({ prompt, maxNewTokens: 40, seed: 100 + i }))
    const s: SamplingParams = { temperature: 1, topP: 0.9, stopIds: [] }
    const whole = await model.generate(reqs, s)
    const ac = new AbortController()
    const partial = await model.generate(reqs, s, {
      signal: ac.signal,
      onProgress: (steps) => {
        if (steps >= 3) ac.abort()
      },
    })
    for (let i = 0; i < reqs.length; i++) {
      const p = partial[i]!
      expect(p.finish).to.equal('abort')
      expect(p.tokens.length).to.be.within(3, 39)
      expect(Array.from(p.tokens)).to.deep.equal(Array.from(whole[i]!.tokens.slice(0, p.tokens.length)))
    }
    const resumed: Generation[] = await model.generate(
      reqs.map((r, i) => ({ ...r, resume: partial[i]! })),
      s,
    )
    for (let i = 0; i < reqs.length; i++) {
      expect(resumed[i]!.finish).to.equal('length')
      expect(Array.from(resumed[i]!.tokens)).to.deep.equal(Array.from(whole[i]!.tokens))
      expect(maxAbsDiff(resumed[i]!.logprobs, whole[i]!.logprobs)).to.be.at.most(TOL)
    }
  })

  it('should return no tokens when the signal is already aborted', async () => {
    const ac = new AbortController()
    ac.abort()
    const out = await model.generate(
      [{ prompt: new Int32Array([1, 2]), maxNewTokens: 5 }],
      {},
      { signal: ac.signal },
    )
    expect(out[0]!.finish).to.equal('abort')
    expect(out[0]!.tokens.length).to.equal(0)
  })

  it('should reject an empty prompt, a bad topP and a missing budget with TRN_ERR_ARG', async () => {
    const e1 = await model.generate([{ prompt: new Int32Array(0), maxNewTokens: 2 }]).catch((e) => e)
    expect(e1.code).to.equal('TRN_ERR_ARG')
    const e2 = await model
      .generate([{ prompt: new Int32Array([1]), maxNewTokens: 2 }], { topP: 0 })
      .catch((e) => e)
    expect(e2.code).to.equal('TRN_ERR_ARG')
    const e3 = await model.generate([{ prompt: new Int32Array([1]) }]).catch((e) => e)
    expect(e3.code).to.equal('TRN_ERR_ARG')
    expect(e3.message).to.match(/maxNewTokens/)
  })
})
