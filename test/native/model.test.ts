import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import { createModel, loadModel, type Model } from '../../native/index.ts'
import { debugConfig, maxAbsDiff, packed, pairs } from './helpers.ts'

// float32 forward of the same math in a different packing/order: differences come from summation order
// inside matmuls only (~1e-7 relative on log-probs near -12); 2e-5 absolute leaves ample margin.
const TOL = 2e-5

describe('a seeded debug model', () => {
  let model: Model
  let dir: string
  const config = debugConfig()

  beforeEach(async () => {
    model = await createModel({ config, seed: 7 })
    dir = mkdtempSync(join(tmpdir(), 'trn-model-'))
  })
  afterEach(() => {
    model.dispose()
    rmSync(dir, { recursive: true, force: true })
  })

  it('should report HF Qwen3 parameter names and a tied head', () => {
    const names = model.params.map((p) => p.name)
    expect(names).to.include('model.embed_tokens.weight')
    expect(names).to.include('model.layers.1.self_attn.q_norm.weight')
    expect(names).to.include('model.layers.0.mlp.down_proj.weight')
    expect(names).to.not.include('lm_head.weight')
    const q = model.params.find((p) => p.name === 'model.layers.0.self_attn.k_proj.weight')
    expect(q?.shape).to.deep.equal([2 * 8, 32])
  })

  it('should give the same weights for the same seed and different ones for another seed', async () => {
    const again = await createModel({ config, seed: 7 })
    const other = await createModel({ config, seed: 8 })
    const [a, b, c] = await Promise.all([model.parameters(), again.parameters(), other.parameters()])
    const n = 'model.layers.0.self_attn.q_proj.weight'
    expect(maxAbsDiff(a[n]!, b[n]!)).to.equal(0)
    expect(maxAbsDiff(a[n]!, c[n]!)).to.be.greaterThan(0)
    again.dispose()
    other.dispose()
  })

  it('should score each token, with 0 at the first token of every sequence', async () => {
    const b = packed([4, 6, 3], config.vocab_size, 1)
    const s = await model.logprobs(b)
    expect(s.logprobs).to.be.instanceOf(Float32Array)
    expect(s.logprobs.length).to.equal(13)
    for (const start of [0, 4, 10]) {
      expect(s.logprobs[start]).to.equal(0)
      expect(s.entropy[start]).to.equal(0)
    }
    for (let i = 1; i < 4; i++) {
      expect(s.logprobs[i]).to.be.lessThan(0)
      // a random init is near uniform: entropy close to log(vocab)
      expect(s.entropy[i]).to.be.closeTo(Math.log(config.vocab_size), 0.5)
    }
  })

  it('should give packed sequences the same log-probs as separate forwards', async () => {
    // 63 tokens: with the real vocabulary, logits are computed 27 rows at a time, so this crosses chunks
    const lengths = [5, 30, 1, 27]
    const b = packed(lengths, config.vocab_size, 2)
    const together = await model.logprobs(b, { temperature: 0.7 })
    let off = 0
    for (const len of lengths) {
      const one = {
        inputIds: b.inputIds.slice(off, off + len),
        cuSeqlens: new Int32Array([0, len]),
      }
      const alone = await model.logprobs(one, { temperature: 0.7 })
      const part = together.logprobs.slice(off, off + len)
      const d = maxAbsDiff(part, alone.logprobs)
      expect(d, `seq at ${off}: ${pairs(part, alone.logprobs)}`).to.be.at.most(TOL)
      expect(maxAbsDiff(together.entropy.slice(off, off + len), alone.entropy)).to.be.at.most(TOL)
      off += len
    }
  })

  it('should not let a sequence see the one before it', async () => {
    const b = packed([6, 6], config.vocab_size, 3)
    const base = await model.logprobs(b)
    const changed = { inputIds: b.inputIds.slice(), cuSeqlens: b.cuSeqlens }
    changed.inputIds[2] = (changed.inputIds[2]! + 1) % config.vocab_size
    const after = await model.logprobs(changed)
    expect(maxAbsDiff(base.logprobs.slice(6), after.logprobs.slice(6))).to.equal(0)
    expect(maxAbsDiff(base.logprobs.slice(3, 6), after.logprobs.slice(3, 6))).to.be.greaterThan(0)
  })

  it('should divide logits by the temperature', async () => {
    const b = packed([8], config.vocab_size, 4)
    const hot = await model.logprobs(b, { temperature: 2 })
    const cold = await model.logprobs(b, { temperature: 0.5 })
    expect(hot.entropy[3]!).to.be.greaterThan(cold.entropy[3]!)
  })

  it('should load what it saved in float32 with identical log-probs', async () => {
    const files = await model.save(dir, { dtype: 'float32' })
    expect(files).to.include('model.safetensors')
    expect(files).to.include('config.json')
    const saved = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'))
    expect(saved.torch_dtype).to.equal('float32')
    const back = await loadModel(dir)
    const b = packed([6, 5], config.vocab_size, 5)
    const [x, y] = [await model.logprobs(b), await back.logprobs(b)]
    expect(maxAbsDiff(x.logprobs, y.logprobs)).to.equal(0)
    back.dispose()
  })

  it('should round-trip bfloat16 weights exactly on a second save', async () => {
    await model.save(dir, { dtype: 'bfloat16' })
    const once = await loadModel(dir)
    const dir2 = mkdtempSync(join(tmpdir(), 'trn-model2-'))
    await once.save(dir2, { dtype: 'bfloat16' })
    const twice = await loadModel(dir2)
    const [p0, p1, p2] = await Promise.all([model.parameters(), once.parameters(), twice.parameters()])
    for (const name of Object.keys(p0)) {
      // bf16 keeps 8 bits of mantissa: relative error ≤ 2^-8 per weight
      const a = p0[name]!
      const b = p1[name]!
      let bad = 0
      for (let i = 0; i < a.length; i++) if (Math.abs(a[i]! - b[i]!) > Math.abs(a[i]!) / 256) bad++
      expect(bad, `${name}: weights off by more than 2^-8 relative`).to.equal(0)
      expect(maxAbsDiff(b, p2[name]!), name).to.equal(0)
    }
    const b = packed([9], config.vocab_size, 6)
    const [x, y] = [await model.logprobs(b), await once.logprobs(b)]
    expect(maxAbsDiff(x.logprobs, y.logprobs)).to.be.lessThan(0.05)
    once.dispose()
    twice.dispose()
    rmSync(dir2, { recursive: true, force: true })
  })

  it('should write and read a sharded checkpoint with an index', async () => {
    const files = await model.save(dir, { dtype: 'float16', maxShardBytes: 2_000_000 })
    expect(files).to.include('model.safetensors.index.json')
    const index = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8'))
    const shards = new Set(Object.values(index.weight_map as Record<string, string>))
    expect(shards.size).to.be.greaterThan(1)
    expect(Object.keys(index.weight_map)).to.have.length(model.params.length)
    const back = await loadModel(dir)
    const b = packed([7], config.vocab_size, 7)
    expect(maxAbsDiff((await model.logprobs(b)).logprobs, (await back.logprobs(b)).logprobs)).to.be.lessThan(
      0.05,
    )
    back.dispose()
  })
})

describe('when calls or inputs are wrong', () => {
  const config = debugConfig({ vocab_size: 64 })
  let model: Model
  beforeEach(async () => {
    model = await createModel({ config, seed: 1 })
  })
  afterEach(() => {
    try {
      model.dispose()
    } catch {
      // already disposed by the test
    }
  })

  it('should reject cuSeqlens that do not cover the tokens with TRN_ERR_ARG', async () => {
    const b = { inputIds: new Int32Array([1, 2, 3]), cuSeqlens: new Int32Array([0, 2]) }
    const err = await model.logprobs(b).catch((e) => e)
    expect(err.code).to.equal('TRN_ERR_ARG')
    expect(err.message).to.match(/cuSeqlens/)
  })

  it('should reject token ids outside the vocabulary with TRN_ERR_ARG', async () => {
    const b = { inputIds: new Int32Array([1, 64]), cuSeqlens: new Int32Array([0, 2]) }
    const err = await model.logprobs(b).catch((e) => e)
    expect(err.code).to.equal('TRN_ERR_ARG')
  })

  it('should reject a second concurrent call on one model with TRN_ERR_BUSY', async () => {
    const b = packed([32, 32], 64, 1)
    const first = model.logprobs(b)
    const err = await model.logprobs(b).catch((e) => e)
    expect(err.code).to.equal('TRN_ERR_BUSY')
    expect((await first).logprobs.length).to.equal(64)
  })

  it('should keep the JS event loop running while a call works off the thread', async () => {
    const b = packed([64, 64, 64, 64], 64, 2)
    const call = model.logprobs(b)
    let turns = 0
    const spin = async () => {
      // each await of setImmediate is one full event-loop turn, possible only if the JS thread is free
      while (
        !(await Promise.race([
          call.then(() => true),
          new Promise<false>((r) => setImmediate(() => r(false))),
        ]))
      )
        turns++
    }
    await spin()
    expect(turns).to.be.greaterThan(0)
    expect((await call).logprobs.length).to.equal(256)
  })

  it('should reject calls after dispose with TRN_ERR_DISPOSED', async () => {
    model.dispose()
    const err = await model.logprobs(packed([3], 64, 1)).catch((e) => e)
    expect(err.code).to.equal('TRN_ERR_DISPOSED')
  })

  it('should refuse unsupported configs with TRN_ERR_CONFIG naming the key', async () => {
    const err = await createModel({ config: debugConfig({ rope_scaling: { type: 'yarn' } }) }).catch((e) => e)
    expect(err.code).to.equal('TRN_ERR_CONFIG')
    expect(err.message).to.match(/rope_scaling/)
    const err2 = await createModel({ config: debugConfig({ num_key_value_heads: 3 }) }).catch((e) => e)
    expect(err2.code).to.equal('TRN_ERR_CONFIG')
  })

  it('should refuse a checkpoint that lacks a tensor with TRN_ERR_CHECKPOINT', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trn-bad-'))
    try {
      await model.save(dir, { dtype: 'float32' })
      const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'))
      cfg.num_hidden_layers = 3
      writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg))
      const err = await loadModel(dir).catch((e) => e)
      expect(err.code).to.equal('TRN_ERR_CHECKPOINT')
      expect(err.message).to.match(/model\.layers\.2\./)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('should refuse a truncated safetensors file with TRN_ERR_CHECKPOINT', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trn-trunc-'))
    try {
      await model.save(dir, { dtype: 'float32' })
      const f = join(dir, 'model.safetensors')
      const buf = readFileSync(f)
      writeFileSync(f, buf.subarray(0, buf.length - 100))
      const err = await loadModel(dir).catch((e) => e)
      expect(err.code).to.equal('TRN_ERR_CHECKPOINT')
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
