/**
 * What of the GPU checks and benchmark (bench/gpu.ts, bench/gpu/, bench/reference/) can run without a GPU:
 * the MFU formula on both sides, the input recipe, the update comparison, the RESULTS.md writer, option
 * checking, the no-CUDA path, and that the Python scripts compile.
 */
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import { updateErrors } from '../../bench/gpu/compare.ts'
import { benchMicroBatch } from '../../bench/gpu/inputs.ts'
import { H100_BF16_PEAK, matmulParams, mfu, stepFlops } from '../../bench/gpu/mfu.ts'
import { parseOptions } from '../../bench/gpu/options.ts'
import { appendResult } from '../../bench/gpu/results.ts'
import { buildInfo, readHfConfig, toNativeConfig } from '../../native/index.ts'

const root = new URL('../../', import.meta.url).pathname
const cfg17 = join(root, 'configs/models/qwen3-1.7b/config.json')

describe('the MFU formula', () => {
  // Qwen3-1.7B by hand: per layer q 2048·2048 + k,v 2·2048·1024 + o 2048·2048 + MLP 3·2048·6144
  // = 4194304 + 4194304 + 4194304 + 37748736 = 50331648; × 28 layers = 1409286144; + lm_head
  // 151936·2048 = 311164928 → P = 1720451072. 16384 tokens as 8 sequences of 2048: causal pairs
  // 8·2048·2049/2 = 16785408; flops = 6·P·16384 + 12·28·16·128·16785408
  // = 169127222181888 + 11550509236224 = 180677731418112.
  const P = 1720451072
  const FLOPS = 6 * P * 16384 + 12 * 28 * 16 * 128 * 16785408

  it('should count the matmul parameters of Qwen3-1.7B as computed by hand', () => {
    expect(matmulParams(readHfConfig(cfg17))).to.equal(P)
  })

  it('should count the FLOPs of a 16k-token step of Qwen3-1.7B as computed by hand', () => {
    expect(FLOPS).to.equal(180677731418112)
    expect(stepFlops(readHfConfig(cfg17), 16384, Array(8).fill(2048))).to.equal(FLOPS)
  })

  it('should count causal attention pairs per sequence, not over the packed row', () => {
    const cfg = readHfConfig(cfg17)
    const packed = stepFlops(cfg, 4, [1, 3]) - 6 * P * 4
    expect(packed).to.equal(12 * 28 * 16 * 128 * (1 + 6))
  })

  it('should give MFU as flops per second over 989 TFLOP/s', () => {
    expect(H100_BF16_PEAK).to.equal(989e12)
    expect(mfu(989e12, 2)).to.equal(0.5)
  })

  it('should give the same numbers from the Python side (bench/reference/mfu.py)', () => {
    const r = spawnSync('python3', [join(root, 'bench/reference/mfu.py'), cfg17, '16384', '2048'], {
      encoding: 'utf8',
    })
    expect(r.status, r.stderr).to.equal(0)
    const py = JSON.parse(r.stdout) as { matmul_params: number; flops: number }
    expect(py.matmul_params).to.equal(P)
    expect(py.flops).to.equal(FLOPS)
  })
})

describe('the benchmark model configs', () => {
  it('should give Qwen3-1.7B and Qwen3-8B shapes the native loader accepts', () => {
    const small = toNativeConfig(readHfConfig(cfg17))
    expect(small).to.include({ hiddenSize: 2048, numHiddenLayers: 28, numKeyValueHeads: 8, headDim: 128 })
    expect(small.tieWordEmbeddings).to.equal(true)
    const big = toNativeConfig(readHfConfig(join(root, 'configs/models/qwen3-8b/config.json')))
    expect(big).to.include({
      hiddenSize: 4096,
      intermediateSize: 12288,
      numHiddenLayers: 36,
      numAttentionHeads: 32,
    })
    expect(big.tieWordEmbeddings).to.equal(false)
  })
})

describe('the benchmark micro-batch', () => {
  const mb = benchMicroBatch(4096, 512, 151936, 5)

  it('should pack tokens/seqlen sequences and mask exactly each first token', () => {
    expect(Array.from(mb.cuSeqlens)).to.deep.equal([0, 512, 1024, 1536, 2048, 2560, 3072, 3584, 4096])
    const unmasked = [...mb.lossMask.keys()].filter((i) => mb.lossMask[i] === 0)
    expect(unmasked).to.deep.equal([0, 512, 1024, 1536, 2048, 2560, 3072, 3584])
  })

  it('should draw ids in the vocabulary, prox = behave in (−3, −0.1) and advantages ~ N(0, 1)', () => {
    expect(Math.min(...mb.inputIds)).to.be.at.least(0)
    expect(Math.max(...mb.inputIds)).to.be.below(151936)
    expect(Math.min(...mb.proxLogprobs)).to.be.at.least(-3)
    expect(Math.max(...mb.proxLogprobs)).to.be.at.most(-0.1)
    expect(Array.from(mb.behaveLogprobs!)).to.deep.equal(Array.from(mb.proxLogprobs))
    const a = Array.from(mb.advantages)
    const mean = a.reduce((s, x) => s + x, 0) / a.length
    const sd = Math.sqrt(a.reduce((s, x) => s + (x - mean) ** 2, 0) / a.length)
    // 4096 draws: the sample mean's sd is 1/64, the sample sd's about 0.011
    expect(Math.abs(mean)).to.be.below(0.06)
    expect(Math.abs(sd - 1)).to.be.below(0.05)
  })

  it('should give the same batch for the same seed and another for another seed', () => {
    expect(Array.from(benchMicroBatch(4096, 512, 151936, 5).advantages)).to.deep.equal(
      Array.from(mb.advantages),
    )
    expect(benchMicroBatch(4096, 512, 151936, 6).inputIds[1]).to.not.equal(mb.inputIds[1])
  })
})

describe('the update comparison', () => {
  const before = { a: [1, 2, 3], b: [0, 0] }

  it('should be 0 for identical updates and ‖Δgot − Δref‖/‖Δref‖ otherwise', () => {
    const after = { a: [1.1, 2, 3], b: [0, 0.3] }
    expect(updateErrors(before, after, before, after).global).to.equal(0)
    const got = { a: [1.1, 2, 3], b: [0, 0.6] }
    const r = updateErrors(before, after, before, got)
    expect(r.tensors.find((t) => t.name === 'a')!.relErr).to.equal(0)
    expect(r.tensors.find((t) => t.name === 'b')).to.deep.include({ refNorm: 0.3, gotNorm: 0.6 })
    expect(r.tensors.find((t) => t.name === 'b')!.relErr).to.be.closeTo(1, 1e-12)
    expect(r.global).to.be.closeTo(0.3 / Math.sqrt(0.01 + 0.09), 1e-12)
  })

  it('should call a tensor that moved on one side only infinitely wrong', () => {
    const r = updateErrors(before, before, before, { a: [1, 2, 3], b: [0, 1e-9] })
    expect(r.tensors.find((t) => t.name === 'b')!.relErr).to.equal(Number.POSITIVE_INFINITY)
  })

  it('should refuse snapshots that disagree on a tensor', () => {
    expect(() => updateErrors(before, { a: [1, 2, 3] }, before, before)).to.throw(/b missing/)
    expect(() => updateErrors(before, { a: [1, 2], b: [0, 0] }, before, before)).to.throw(/lengths/)
  })
})

describe('bench/RESULTS.md', () => {
  let dir: string
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'bench-results-'))
  })
  afterEach(() => rmSync(dir, { recursive: true, force: true }))

  it('should start with the table header and get one row per run', () => {
    const file = join(dir, 'RESULTS.md')
    const row = {
      date: '2026-11-28 02:00',
      card: 'NVIDIA H100 80GB HBM3',
      command: 'npm run bench:gpu -- --ckpt',
      tokS: 30000.4,
      refTokS: 23034.8,
      ratio: 1.3024,
      mfu: 0.41234,
      notes: 'a | b',
    }
    appendResult(file, row)
    appendResult(file, { ...row, dpScaling: 0.9512 })
    const lines = readFileSync(file, 'utf8').trimEnd().split('\n')
    expect(lines.filter((l) => l.startsWith('| date |'))).to.have.length(1)
    expect(lines.at(-2)).to.equal(
      '| 2026-11-28 02:00 | NVIDIA H100 80GB HBM3 | `npm run bench:gpu -- --ckpt` | 30000 | 23035 | 1.302 | 0.4123 | — | a \\| b |',
    )
    expect(lines.at(-1)).to.contain('| 0.951 |')
  })
})

describe('bench:gpu options', () => {
  it('should take the defaults of issue 8 and the given values', () => {
    expect(parseOptions([])).to.deep.include({
      tokens: 16384,
      seqlen: 2048,
      steps: 5,
      warmup: 2,
      ckpt: false,
      gpus: 1,
      skipSingle: false,
      ckptLayers: -1,
      refCkptLayers: -1,
    })
    expect(parseOptions(['--ckpt', '--gpus', '2', '--tokens', '4096', '--skip-single'])).to.deep.include({
      ckpt: true,
      gpus: 2,
      tokens: 4096,
      skipSingle: true,
    })
    // the reference follows --ckpt-layers unless given its own
    expect(parseOptions(['--ckpt', '--ckpt-layers', '14'])).to.deep.include({
      ckptLayers: 14,
      refCkptLayers: 14,
    })
    expect(parseOptions(['--ckpt', '--ckpt-layers', '8', '--ref-ckpt-layers', 'all'])).to.deep.include({
      ckptLayers: 8,
      refCkptLayers: -1,
    })
  })

  it('should refuse --ckpt-layers without --ckpt, or below -1, with CFG_ERR_VALUE', () => {
    for (const argv of [
      ['--ckpt-layers', '4'],
      ['--ckpt', '--ref-ckpt-layers=-1'],
      ['--ckpt', '--ckpt-layers', 'some'],
      ['--ref-ckpt-layers', '3'],
    ])
      expect(() => parseOptions(argv), argv.join(' '))
        .to.throw()
        .with.property('code', 'CFG_ERR_VALUE')
  })

  it('should refuse tokens that are not a multiple of seqlen with CFG_ERR_VALUE', () => {
    expect(() => parseOptions(['--tokens', '1000', '--seqlen', '300']))
      .to.throw(/multiple of --seqlen/)
      .with.property('code', 'CFG_ERR_VALUE')
    expect(() => parseOptions(['--gpus', '0']))
      .to.throw()
      .with.property('code', 'CFG_ERR_VALUE')
  })

  it('should refuse an unknown option with CFG_ERR_UNKNOWN_KEY', () => {
    expect(() => parseOptions(['--gpu', '2']))
      .to.throw()
      .with.property('code', 'CFG_ERR_UNKNOWN_KEY')
  })
})

describe('on a machine without CUDA', () => {
  before(function () {
    if (buildInfo().cuda) this.skip() // a CUDA build measures instead (bench/gpu.ts on the GPU machine)
  })

  const run = (script: string) =>
    spawnSync(process.execPath, ['--import', 'tsx', join(root, script)], { cwd: root, encoding: 'utf8' })

  it('bench:gpu should say why and end with RESULT gpu skipped=no-cuda (exit 0)', () => {
    const r = run('bench/gpu.ts')
    expect(r.status, r.stderr).to.equal(0)
    expect(r.stdout.trimEnd().split('\n').at(-1)).to.equal('RESULT gpu skipped=no-cuda')
    expect(r.stderr).to.match(/without CUDA|no CUDA device/)
  })

  it('the parity driver should end with PARITY skipped=no-cuda (exit 0)', () => {
    const r = run('bench/gpu/parity.ts')
    expect(r.status, r.stderr).to.equal(0)
    expect(r.stdout.trimEnd().split('\n').at(-1)).to.equal('PARITY skipped=no-cuda')
  })

  it('the SGLang group interop check should end with INTEROP skipped=… (exit 0)', () => {
    const r = run('bench/gpu/sglang-interop.ts')
    expect(r.status, r.stderr).to.equal(0)
    expect(r.stdout.trimEnd().split('\n').at(-1)).to.match(/^INTEROP skipped=needs-2-gpus/)
  })
})

describe('the Python scripts', () => {
  it('should all compile with python3', () => {
    const files = ['bench/reference', 'bench/gpu'].flatMap((d) =>
      readdirSync(join(root, d))
        .filter((f) => f.endsWith('.py'))
        .map((f) => join(root, d, f)),
    )
    expect(files.map((f) => f.split('/').at(-1))).to.include.members([
      'ppo_ref.py',
      'qwen3_ref.py',
      'mfu.py',
      'parity_case.py',
      'hf_parity.py',
    ])
    // compile() checks syntax without writing __pycache__
    const code = 'import sys\nfor f in sys.argv[1:]: compile(open(f, encoding="utf-8").read(), f, "exec")'
    const r = spawnSync('python3', ['-c', code, ...files], { encoding: 'utf8' })
    expect(r.status, r.stderr).to.equal(0)
  })
})
