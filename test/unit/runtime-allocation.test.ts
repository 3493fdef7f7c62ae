import { expect } from 'chai'
import { parseAllocation, plan } from '../../runtime/allocation.ts'

function err(fn: () => unknown): { code: string; message: string } {
  try {
    fn()
  } catch (e) {
    return e as { code: string; message: string }
  }
  throw new Error('did not throw')
}

describe('allocation_mode', () => {
  describe('when the string is valid', () => {
    it('should parse inference and training pools with defaults of 1', () => {
      expect(parseAllocation('sglang:d4t2+archon:d4p1t2')).to.deep.equal({
        inference: { kind: 'inference', backend: 'sglang', d: 4, t: 2, p: 1 },
        training: { kind: 'training', backend: 'archon', d: 4, p: 1, t: 2, c: 1 },
      })
      expect(parseAllocation('embedded:d1+archon:d2').training?.d).to.equal(2)
      expect(parseAllocation('vllm:t2').inference).to.deep.equal({
        kind: 'inference',
        backend: 'vllm',
        d: 1,
        t: 2,
        p: 1,
      })
      expect(parseAllocation('archon:d2').inference).to.equal(undefined)
    })
  })

  describe('when the string is wrong', () => {
    const cases: [string, RegExp][] = [
      ['', /empty/],
      ['sglang', /backend:dims/],
      ['tgi:d2', /unknown backend "tgi"/],
      ['sglang:d4x2', /dimension "x"/],
      ['archon:d2d2', /"d" twice/],
      ['sglang:d0', /sizes are ≥ 1/],
      ['sglang:d4t', /unreadable dims/],
      ['sglang:d1+vllm:d1', /second inference pool/],
      ['archon:d1c2', /reserved/],
      ['sglang:', /unreadable dims/],
    ]
    for (const [mode, re] of cases) {
      it(`should reject ${JSON.stringify(mode)} naming the bad part`, () => {
        const e = err(() => parseAllocation(mode))
        expect(e.code).to.equal('CFG_ERR_VALUE')
        expect(e.message).to.match(re)
      })
    }
  })

  describe('when placing on nodes', () => {
    it('should place everything on one CPU node, one process per replica', () => {
      const p = plan(parseAllocation('embedded:d2+archon:d2'), { nNodes: 1, nGpusPerNode: 0 })
      expect(p.map((x) => `${x.role}${x.rank}@${x.node}`)).to.deep.equal([
        'engine0@0',
        'engine1@0',
        'trainer0@0',
        'trainer1@0',
      ])
      expect(p.every((x) => x.gpus.length === 0)).to.equal(true)
    })

    it('should fill 1 node of 8 GPUs', () => {
      const p = plan(parseAllocation('sglang:d2t2+archon:d2t2'), { nNodes: 1, nGpusPerNode: 8 })
      expect(p.filter((x) => x.role === 'engine').map((x) => x.gpus)).to.deep.equal([
        [0, 1],
        [2, 3],
      ])
      expect(p.filter((x) => x.role === 'trainer').map((x) => x.gpus[0])).to.deep.equal([4, 5, 6, 7])
    })

    it('should not split an inference server across 2 nodes', () => {
      const p = plan(parseAllocation('sglang:d3t2+archon:d2'), { nNodes: 2, nGpusPerNode: 4 })
      const eng = p.filter((x) => x.role === 'engine')
      expect(eng.map((x) => [x.node, x.gpus])).to.deep.equal([
        [0, [0, 1]],
        [0, [2, 3]],
        [1, [0, 1]],
      ])
      expect(p.filter((x) => x.role === 'trainer').map((x) => [x.node, x.gpus[0]])).to.deep.equal([
        [1, 2],
        [1, 3],
      ])
    })

    it('should place sglang:d4t2+archon:d4p1t2 on 4 nodes of 4 GPUs', () => {
      const p = plan(parseAllocation('sglang:d4t2+archon:d4p1t2'), { nNodes: 4, nGpusPerNode: 4 })
      expect(p.filter((x) => x.role === 'engine').map((x) => x.node)).to.deep.equal([0, 0, 1, 1])
      const tr = p.filter((x) => x.role === 'trainer')
      expect(tr).to.have.length(8)
      expect(tr.map((x) => x.node)).to.deep.equal([2, 2, 2, 2, 3, 3, 3, 3])
      expect(new Set(tr.map((x) => `${x.node}:${x.gpus[0]}`)).size).to.equal(8)
    })

    it('should refuse what does not fit, and GPU-only parallelism on CPU', () => {
      expect(err(() => plan(parseAllocation('sglang:t8'), { nNodes: 2, nGpusPerNode: 4 })).message).to.match(
        /needs 8 GPUs/,
      )
      expect(
        err(() => plan(parseAllocation('sglang:d3t2'), { nNodes: 1, nGpusPerNode: 4 })).message,
      ).to.match(/not enough GPUs/)
      expect(
        err(() => plan(parseAllocation('archon:d1p2'), { nNodes: 1, nGpusPerNode: 0 })).message,
      ).to.match(/needs GPUs/)
    })

    it('should give a CPU machine one trainer process per rank of d × t, tensor-parallel ranks adjacent', () => {
      const tr = plan(parseAllocation('archon:d2t2'), { nNodes: 1, nGpusPerNode: 0 }).filter(
        (x) => x.role === 'trainer',
      )
      expect(tr.map((x) => [x.rank, x.replica])).to.deep.equal([
        [0, 0],
        [1, 0],
        [2, 1],
        [3, 1],
      ])
    })
  })
})
