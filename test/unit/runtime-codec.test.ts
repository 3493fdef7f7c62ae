import { expect } from 'chai'
import { BULK_BYTES, decode, encode } from '../../runtime/codec.ts'
import { asks, type Envelope, Kind, PROTOCOL_VERSION, tells } from '../../runtime/messages.ts'
import { askSamples, tellSamples } from '../fixtures/messages.ts'

const MAX = 1 << 30
function env(kind: number, type: string, body: unknown, id = 7, re = 0): Envelope {
  return { v: PROTOCOL_VERSION, kind, type, id, re, from: 'test/0', time: 1700000000000, body } as Envelope
}
function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (e) {
    return (e as { code?: string }).code
  }
  return undefined
}

describe('codec and message registry', () => {
  describe('when the samples and the union are compared', () => {
    it('should have exactly one sample per tell type and per ask type', () => {
      expect(Object.keys(tellSamples).sort()).to.deep.equal(Object.keys(tells).sort())
      expect(Object.keys(askSamples).sort()).to.deep.equal(Object.keys(asks).sort())
    })

    it('should round-trip every tell, ask and reply sample', () => {
      for (const [type, body] of Object.entries(tellSamples)) {
        expect(decode(encode(env(Kind.Tell, type, body)), MAX).body, type).to.deep.equal(body)
      }
      for (const [type, [req, res]] of Object.entries(askSamples)) {
        expect(decode(encode(env(Kind.Ask, type, req)), MAX).body, type).to.deep.equal(req)
        expect(decode(encode(env(Kind.Reply, type, res, 8, 7)), MAX).body, type).to.deep.equal(res)
      }
    })
  })

  describe('when bodies hold typed arrays', () => {
    it('should bring back each typed-array class with its values', () => {
      const data = {
        i8: new Int8Array([-1, 2]),
        u8: new Uint8Array([255]),
        i16: new Int16Array([-300]),
        u16: new Uint16Array([65000]),
        i32: new Int32Array([-5, 1 << 30]),
        u32: new Uint32Array([4000000000]),
        f32: new Float32Array([1.5, -2.25]),
        f64: new Float64Array([Math.PI]),
        i64: new BigInt64Array([-(2n ** 40n)]),
        nested: [{ ids: new Int32Array([3, 4, 5]) }],
      }
      const back = decode(encode(env(Kind.Ask, 'test:echo', { data })), MAX).body as { data: typeof data }
      for (const [k, v] of Object.entries(data)) expect(back.data[k as keyof typeof data], k).to.deep.equal(v)
      expect(back.data.f32).to.be.instanceOf(Float32Array)
    })

    it('should send large arrays as their own frames and view them without copying', () => {
      const big = new Float32Array(BULK_BYTES) // 4 × BULK_BYTES bytes
      big[0] = 1
      big[big.length - 1] = 2
      const frames = encode(env(Kind.Ask, 'test:echo', { data: { big, small: new Int32Array([1]) } }))
      expect(frames).to.have.length(2)
      expect(frames[1].byteLength).to.equal(big.byteLength)
      expect(frames[0].byteLength).to.be.lessThan(200)
      const back = (decode(frames, MAX).body as { data: { big: Float32Array } }).data.big
      expect(back.buffer).to.equal(frames[1].buffer)
      expect(back[0]).to.equal(1)
      expect(back[back.length - 1]).to.equal(2)
    })

    it('should copy a misaligned bulk frame into an aligned array', () => {
      const big = new Float64Array(BULK_BYTES / 8).fill(0.5)
      const frames = encode(env(Kind.Ask, 'test:echo', { data: big }))
      const shifted = new Uint8Array(frames[1].byteLength + 1)
      shifted.set(frames[1], 1)
      const back = decode([frames[0], shifted.subarray(1)], MAX).body as { data: Float64Array }
      expect(back.data[10]).to.equal(0.5)
    })
  })

  describe('when frames are bad', () => {
    const good = encode(env(Kind.Ask, 'test:echo', { data: 1 }))

    it('should reject a truncated frame with RT_ERR_DECODE', () => {
      expect(codeOf(() => decode([good[0].subarray(0, good[0].length - 3)], MAX))).to.equal('RT_ERR_DECODE')
    })

    it('should reject a wrong protocol version and keep the id for an error reply', () => {
      const bad = encode({ ...env(Kind.Ask, 'test:echo', { data: 1 }), v: 2 } as Envelope)
      try {
        decode(bad, MAX)
        expect.fail('decoded')
      } catch (e) {
        const err = e as { code: string; message: string; details: { id: number; kind: number } }
        expect(err.code).to.equal('RT_ERR_VERSION')
        expect(err.message).to.contain('expected 1')
        expect(err.details.id).to.equal(7)
        expect(err.details.kind).to.equal(Kind.Ask)
      }
    })

    it('should reject an oversized message before parsing it', () => {
      expect(codeOf(() => decode(good, 4))).to.equal('RT_ERR_OVERSIZE')
    })

    it('should reject bodies of the wrong shape, unknown types and extra fields', () => {
      expect(codeOf(() => decode(encode(env(Kind.Tell, 'dir:heartbeat', { id: 5 })), MAX))).to.equal(
        'RT_ERR_SHAPE',
      )
      expect(codeOf(() => decode(encode(env(Kind.Tell, 'no:such', {})), MAX))).to.equal('RT_ERR_SHAPE')
      expect(codeOf(() => decode(encode(env(Kind.Tell, 'dir:heartbeat', { id: 'a', x: 1 })), MAX))).to.equal(
        'RT_ERR_SHAPE',
      )
    })

    it('should reject a bulk reference to a missing frame', () => {
      const frames = encode(env(Kind.Ask, 'test:echo', { data: new Uint8Array(BULK_BYTES) }))
      expect(codeOf(() => decode([frames[0]], MAX))).to.equal('RT_ERR_DECODE')
    })

    it('should name the path of a shape error', () => {
      try {
        decode(encode(env(Kind.Reply, 'dir:lookup', { entries: [{ id: 'x' }] })), MAX)
        expect.fail('decoded')
      } catch (e) {
        expect((e as Error).message).to.contain('body.entries[0].role')
      }
    })
  })
})
