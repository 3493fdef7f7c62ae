/**
 * The one codec of the bus. An envelope travels as one or more ZeroMQ frames:
 *
 *   frame 0:  msgpack [v, kind, type, id, re, from, time, body]
 *   frame 1…: raw bytes of each large typed array in `body` (≥ BULK_BYTES), in order of appearance
 *
 * Typed arrays (Int8/16/32, Uint8/16/32, Float32/64, BigInt64) are a msgpack extension (type 0x42):
 * small ones carry their bytes inline; large ones carry the index of the frame that holds them, so a
 * 64 MB array is never copied into the msgpack buffer — ZeroMQ sends it as its own frame and the
 * receiver gets a typed-array view over the received frame (a copy only when misaligned).
 *
 * Decoding validates size, msgpack, envelope shape, protocol version and the body's shape for its type
 * (runtime/messages.ts). Every rejection is a CodedError (RT_ERR_DECODE / _VERSION / _SHAPE / _OVERSIZE)
 * carrying, when the envelope could be read that far, the request's id and sender so the receiver can
 * answer an ask with an error reply.
 */
import { addExtension, Packr } from 'msgpackr'
import { fail } from './errors.ts'
import { checkBody, type Envelope, Kind, PROTOCOL_VERSION } from './messages.ts'

/** Typed arrays at least this large travel as their own frame. */
export const BULK_BYTES = 64 * 1024

type TypedArray =
  | Int8Array
  | Uint8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | Float32Array
  | Float64Array
  | BigInt64Array
type TypedCtor = {
  new (buf: ArrayBufferLike, off: number, len: number): TypedArray
  BYTES_PER_ELEMENT: number
}

const KINDS: TypedCtor[] = [
  Int8Array,
  Uint8Array,
  Int16Array,
  Uint16Array,
  Int32Array,
  Uint32Array,
  Float32Array,
  Float64Array,
  BigInt64Array,
] as unknown as TypedCtor[]

// Encode/decode are synchronous, so the frames of the message being (un)packed live here for the
// duration of one call.
let outFrames: Uint8Array[] | null = null
let inFrames: readonly Uint8Array[] | null = null

function view(ctor: TypedCtor, bytes: Uint8Array): TypedArray {
  const n = ctor.BYTES_PER_ELEMENT
  if (bytes.byteLength % n !== 0)
    throw fail('RT_ERR_DECODE', `typed array of ${bytes.byteLength} bytes is not a multiple of ${n}`)
  if (bytes.byteOffset % n === 0) return new ctor(bytes.buffer, bytes.byteOffset, bytes.byteLength / n)
  const copy = new Uint8Array(bytes.byteLength)
  copy.set(bytes)
  return new ctor(copy.buffer, 0, bytes.byteLength / n)
}

// Extension payload: [kind u8][mode u8] then, mode 0: the array's bytes inline; mode 1: u32le frame index.
KINDS.forEach((ctor, kind) => {
  addExtension({
    Class: ctor as unknown as new (...a: unknown[]) => unknown,
    type: 0x42,
    pack(v: TypedArray) {
      if (outFrames && v.byteLength >= BULK_BYTES) {
        outFrames.push(new Uint8Array(v.buffer, v.byteOffset, v.byteLength))
        const b = Buffer.allocUnsafe(6)
        b[0] = kind
        b[1] = 1
        b.writeUInt32LE(outFrames.length - 1, 2)
        return b
      }
      const b = Buffer.allocUnsafe(2 + v.byteLength)
      b[0] = kind
      b[1] = 0
      b.set(new Uint8Array(v.buffer, v.byteOffset, v.byteLength), 2)
      return b
    },
    unpack(b: Buffer) {
      const c = KINDS[b[0]]
      if (!c || b.length < 2) throw fail('RT_ERR_DECODE', 'bad typed-array extension')
      if (b[1] === 1) {
        if (b.length !== 6) throw fail('RT_ERR_DECODE', 'bad bulk reference')
        const i = b.readUInt32LE(2)
        const f = i > 0 ? inFrames?.[i] : undefined
        if (!f) throw fail('RT_ERR_DECODE', `typed array refers to missing frame ${i}`)
        return view(c, f)
      }
      if (b[1] !== 0) throw fail('RT_ERR_DECODE', 'bad typed-array mode')
      return view(c, b.subarray(2))
    },
  })
})

const packr = new Packr({ useRecords: false, moreTypes: false, bundleStrings: false })

/** Encode an envelope into frames (frame 0 msgpack; then bulk typed arrays). */
export function encode(env: Envelope): Uint8Array[] {
  const frames: Uint8Array[] = [new Uint8Array(0)]
  outFrames = frames
  try {
    frames[0] = packr.pack([env.v, env.kind, env.type, env.id, env.re, env.from, env.time, env.body])
  } finally {
    outFrames = null
  }
  return frames
}

/** Sum of frame sizes. */
export function frameBytes(frames: readonly Uint8Array[]): number {
  let n = 0
  for (const f of frames) n += f.byteLength
  return n
}

/** Details of a rejected frame: enough to answer an ask with an error reply. */
export interface RejectInfo {
  id?: number
  from?: string
  kind?: number
  type?: string
}

/**
 * Decode and validate frames into an envelope. Throws CodedError with `details` = RejectInfo.
 * @param maxBytes total frame bytes allowed (checked before any parsing)
 */
export function decode(frames: readonly Uint8Array[], maxBytes: number): Envelope {
  const size = frameBytes(frames)
  if (size > maxBytes) throw fail('RT_ERR_OVERSIZE', `${size} bytes > ${maxBytes}`, {})
  const head = frames[0]
  if (!head || head.byteLength === 0) throw fail('RT_ERR_DECODE', 'empty frame', {})
  let a: unknown
  inFrames = frames
  try {
    a = packr.unpack(head)
  } catch (e) {
    const c = (e as { code?: string }).code
    if (c?.startsWith('RT_ERR_')) throw e
    throw fail('RT_ERR_DECODE', (e as Error).message, {})
  } finally {
    inFrames = null
  }
  if (!Array.isArray(a) || a.length !== 8)
    throw fail('RT_ERR_DECODE', 'envelope is not an 8-element array', {})
  const [v, kind, type, id, re, from, time, body] = a as [
    unknown,
    unknown,
    unknown,
    unknown,
    unknown,
    unknown,
    unknown,
    unknown,
  ]
  const info: RejectInfo = {}
  if (typeof id === 'number') info.id = id
  if (typeof from === 'string') info.from = from
  if (typeof kind === 'number') info.kind = kind
  if (typeof type === 'string') info.type = type
  if (v !== PROTOCOL_VERSION)
    throw fail(
      'RT_ERR_VERSION',
      `bad protocol v${String(v)}, expected ${PROTOCOL_VERSION}`,
      info as Record<string, unknown>,
    )
  if (
    typeof kind !== 'number' ||
    kind < Kind.Tell ||
    kind > Kind.Error ||
    typeof type !== 'string' ||
    typeof id !== 'number' ||
    typeof re !== 'number' ||
    typeof from !== 'string' ||
    typeof time !== 'number'
  )
    throw fail('RT_ERR_SHAPE', 'envelope fields have wrong types', info as Record<string, unknown>)
  const env = { v, kind, type, id, re, from, time, body } as Envelope
  const problem = checkBody(env)
  if (problem) throw fail('RT_ERR_SHAPE', `${type}: ${problem}`, info as Record<string, unknown>)
  return env
}
