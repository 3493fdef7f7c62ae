/**
 * Python-compatible JSON text and number formatting.
 *
 * tau2 serialises tool results with Python's `json.dumps(x, default=str)` and hashes databases with
 * `json.dumps(model_dump(), sort_keys=True)`. To give the agent the same text and to make DB hashes
 * canonical, this module reproduces Python's defaults: `", "` / `": "` separators, `ensure_ascii`
 * escapes, float `repr` (`100.0`, `1e-06`), and `round(x, n)` with round-half-even on exact ties.
 *
 * JavaScript has one number type, so which numbers are floats is declared by the caller as
 * {@link FloatRule}s: key-path suffixes (`*` matches any key or index), e.g. `payment_methods.*.amount`.
 */
import { createHash } from 'node:crypto'

/** A key-path suffix naming float-typed fields; segments separated by `.`, `*` matches anything. */
export type FloatRule = string

/** Compiled float rules: for speed, indexed by the last key. */
export class FloatRules {
  private readonly byLast = new Map<string, string[][]>()
  constructor(rules: readonly FloatRule[]) {
    for (const r of rules) {
      const segs = r.split('.')
      const last = segs[segs.length - 1]
      const list = this.byLast.get(last) ?? []
      list.push(segs)
      this.byLast.set(last, list)
    }
  }
  /** Whether the value at `path` (innermost key last) is float-typed. */
  isFloat(path: readonly (string | number)[]): boolean {
    if (path.length === 0) return false
    const cands = this.byLast.get(String(path[path.length - 1]))
    if (!cands) return false
    outer: for (const segs of cands) {
      if (segs.length > path.length) continue
      for (let i = 1; i <= segs.length; i++) {
        const s = segs[segs.length - i]
        if (s !== '*' && s !== String(path[path.length - i])) continue outer
      }
      return true
    }
    return false
  }
  static readonly none = new FloatRules([])
  /**
   * Canonical (sorted-key) text of frozen depth-2 objects — the entities of a database table shared,
   * unmodified, by every environment built from the same data (see cow.ts). Safe to cache because
   * frozen objects never change.
   */
  readonly sortedEntityText = new WeakMap<object, string>()
}

/** Python `repr(float(x))`. */
export function pyFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'NaN'
  if (x === Number.POSITIVE_INFINITY) return 'Infinity'
  if (x === Number.NEGATIVE_INFINITY) return '-Infinity'
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0'
  // shortest round-tripping digits, as Python's repr uses
  const [mant, expStr] = x.toExponential().split('e')
  const exp = Number(expStr)
  const neg = mant.startsWith('-')
  const digits = mant.replace('-', '').replace('.', '')
  const sign = neg ? '-' : ''
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits
    const e = Math.abs(exp) < 10 ? `0${Math.abs(exp)}` : String(Math.abs(exp))
    return `${sign}${m}e${exp < 0 ? '-' : '+'}${e}`
  }
  if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`
  if (digits.length <= exp + 1) return `${sign}${digits}${'0'.repeat(exp + 1 - digits.length)}.0`
  return `${sign}${digits.slice(0, exp + 1)}.${digits.slice(exp + 1)}`
}

/** Python `repr(int)`/`repr(float)` for a value whose type is known. */
export function pyNumber(x: number, isFloat: boolean): string {
  if (isFloat || !Number.isInteger(x)) return pyFloatRepr(x)
  return Number.isSafeInteger(x) ? String(x) : BigInt(x).toString()
}

/** Python `round(x, n)` for floats: correctly rounded, half-even on exact decimal ties. */
export function pyRound(x: number, n = 2): number {
  if (!Number.isFinite(x)) return x
  const fixed = x.toFixed(n)
  const exact = Math.abs(x).toFixed(Math.min(100, n + 30))
  const tail = exact.slice(exact.indexOf('.') + 1 + n)
  if (tail[0] === '5' && /^50*$/.test(tail)) {
    // exact tie (the value is dyadic, so the scaled value is exact): Python rounds half to even
    const scaled = Math.floor(Math.abs(x) * 10 ** n)
    const chosen = scaled % 2 === 0 ? scaled : scaled + 1
    const mag = chosen / 10 ** n
    return x < 0 ? -mag : mag
  }
  return Number(fixed)
}

const NON_ASCII = /[^\x00-\x7f]/

function escapeString(s: string): string {
  // JSON.stringify escapes `"`, `\\` and control characters exactly as Python does; only non-ASCII differs
  if (!NON_ASCII.test(s)) return JSON.stringify(s)
  let out = '"'
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c === 0x22) out += '\\"'
    else if (c === 0x5c) out += '\\\\'
    else if (c === 0x0a) out += '\\n'
    else if (c === 0x0d) out += '\\r'
    else if (c === 0x09) out += '\\t'
    else if (c === 0x08) out += '\\b'
    else if (c === 0x0c) out += '\\f'
    else if (c < 0x20 || c > 0x7f) out += `\\u${c.toString(16).padStart(4, '0')}`
    else out += s[i]
  }
  return `${out}"`
}

export interface DumpOptions {
  sortKeys?: boolean
  floats?: FloatRules
}

/**
 * Python `json.dumps(value)` with default separators and `ensure_ascii=True`.
 * `undefined` object members are skipped (absent), `null` prints `null`.
 */
export function pyDumps(value: unknown, opts: DumpOptions = {}): string {
  const floats = opts.floats ?? FloatRules.none
  const sortKeys = opts.sortKeys ?? false
  const path: (string | number)[] = []
  const parts: string[] = []
  const walk = (v: unknown): void => {
    if (v === null || v === undefined) parts.push('null')
    else if (typeof v === 'string') parts.push(escapeString(v))
    else if (typeof v === 'number') parts.push(pyNumber(v, floats.isFloat(path)))
    else if (typeof v === 'boolean') parts.push(v ? 'true' : 'false')
    else if (Array.isArray(v)) {
      parts.push('[')
      for (let i = 0; i < v.length; i++) {
        if (i) parts.push(', ')
        path.push(i)
        walk(v[i])
        path.pop()
      }
      parts.push(']')
    } else if (typeof v === 'object') {
      const cacheable = sortKeys && path.length === 2 && Object.isFrozen(v)
      if (cacheable) {
        const hit = floats.sortedEntityText.get(v as object)
        if (hit !== undefined) {
          parts.push(hit)
          return
        }
      }
      const start = parts.length
      walkObject(v as Record<string, unknown>)
      if (cacheable) {
        const text = parts.splice(start).join('')
        floats.sortedEntityText.set(v as object, text)
        parts.push(text)
      }
    } else parts.push(escapeString(String(v)))
  }
  const walkObject = (v: Record<string, unknown>): void => {
    {
      let keys = Object.keys(v as object).filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      if (sortKeys) keys = keys.sort(cmpCodePoints)
      parts.push('{')
      for (let i = 0; i < keys.length; i++) {
        if (i) parts.push(', ')
        parts.push(escapeString(keys[i]), ': ')
        path.push(keys[i])
        walk((v as Record<string, unknown>)[keys[i]])
        path.pop()
      }
      parts.push('}')
    }
  }
  walk(value)
  return parts.join('')
}

/** Python sorts str keys by code point; JS default sort is by UTF-16 unit (same for the BMP). */
function cmpCodePoints(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

/** tau2's `get_db_hash`: sha256 hex of the sorted-key Python dump. */
export function dbHash(db: unknown, floats: FloatRules): string {
  return createHash('sha256')
    .update(pyDumps(db, { sortKeys: true, floats }))
    .digest('hex')
}

/**
 * tau2's `to_json_str` for a tool result: strings verbatim; top-level numbers/bools as Python `str()`
 * (`"True"`, `"4.0"`); everything else as `json.dumps`.
 */
export function toolResultText(result: unknown, floats: FloatRules, topIsFloat = false): string {
  if (typeof result === 'string') return result
  if (typeof result === 'boolean') return result ? 'True' : 'False'
  if (typeof result === 'number') return pyNumber(result, topIsFloat)
  if (result === undefined || result === null) return 'null'
  return pyDumps(result, { floats })
}

/** Python `str(list_of_str)` (used by the NL-assertion prompt). */
export function pyReprStrList(items: readonly string[]): string {
  return `[${items.map(pyReprStr).join(', ')}]`
}

/** Python `repr(str)`: single quotes unless the text has a single quote and no double quote. */
export function pyReprStr(s: string): string {
  const q = s.includes("'") && !s.includes('"') ? '"' : "'"
  let out = q
  for (const ch of s) {
    const c = ch.codePointAt(0) as number
    if (ch === '\\') out += '\\\\'
    else if (ch === q) out += `\\${q}`
    else if (ch === '\n') out += '\\n'
    else if (ch === '\r') out += '\\r'
    else if (ch === '\t') out += '\\t'
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, '0')}`
    else out += ch
  }
  return out + q
}
