/**
 * Token ids as the elements of a JSON array (`1,2,3`, ASCII bytes), written straight into a buffer: the
 * HTTP engines' request bodies carry the whole prompt every turn, and TokenChain keeps these bytes so that
 * each turn serialises only its new tokens.
 */
import { fail } from '../../runtime/errors.ts'

/** `ids` as JSON array elements (`1,2,3`), ASCII. */
export function idsToJson(ids: ArrayLike<number>): Buffer {
  const out = Buffer.allocUnsafe(ids.length * 12)
  return out.subarray(0, writeIds(out, 0, ids, 0, ids.length))
}

/**
 * Write `ids[from..to)` as JSON array elements into `out` at byte `at` (a comma before each element but
 * the array's first); returns the end offset. `out` must have 12 bytes per id from `at`.
 */
export function writeIds(
  out: Uint8Array,
  at: number,
  ids: ArrayLike<number>,
  from: number,
  to: number,
): number {
  let o = at
  for (let i = from; i < to; i++) {
    if (i > 0) out[o++] = 44 // ','
    let v = ids[i]!
    if (!Number.isInteger(v) || v < -2147483648 || v > 2147483647)
      throw fail('PRX_ERR_BAD_REQUEST', `token id ${v} is not a 32-bit integer`)
    if (v < 0) {
      out[o++] = 45 // '-'
      v = -v
    }
    let digits = 1
    for (let p = 10; p <= v; p *= 10) digits++
    for (let d = o + digits - 1; d >= o; d--) {
      out[d] = 48 + (v % 10)
      v = Math.floor(v / 10)
    }
    o += digits
  }
  return o
}
