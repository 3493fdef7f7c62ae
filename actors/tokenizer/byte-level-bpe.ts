/**
 * A faster `encode` for byte-level BPE tokenizers (the GPT-2, Llama 3 and Qwen2/Qwen3 layouts of
 * tokenizer.json), built from the parts of an @huggingface/tokenizers `Tokenizer` and giving the same ids.
 *
 * Why: the proxy tokenizes each turn's new messages, and the library spent ~60–90 µs on a 100-character
 * delta here, half of it mapping every pre-token to byte-level characters through TextEncoder and arrays
 * and flattening arrays of arrays. This runs the same pipeline, in the same order, with the same library
 * pieces (added-token splitters, normalizer, the Split pre-tokenizer's regex, the BPE model), except that
 *   - the byte-level mapping is a table lookup per UTF-16 unit (UTF-8 encoded by hand, a lone surrogate
 *     as U+FFFD as TextEncoder does), and
 *   - each pre-token's ids are remembered (a bounded map), so a word seen before skips byte-level mapping,
 *     BPE merges and id lookups.
 *
 *   text ─ split on added tokens (lstrip/rstrip honoured) ─ normalize ─ split on normalized added tokens
 *        ─ pre-tokens (Split regex, or the ByteLevel regex) ─ ids per pre-token (cached: byte-level + BPE)
 *
 * `ByteLevelBpe.of` answers null for any other layout (and for a library whose internals moved), and the
 * caller keeps the library's encode; `ByteLevelDecoder` does the same for decode (ByteLevel decoders).
 * test/tokenizer/byte-level-bpe.test.ts compares both with the library on many texts and id runs.
 */
import type { Tokenizer } from '@huggingface/tokenizers'

/** The fields of the library's Tokenizer this relies on (plain properties in @huggingface/tokenizers 0.x). */
interface Internals {
  splitter_unnormalized: { split(text: string): string[] }
  splitter_normalized: { split(text: string): string[] }
  added_tokens_map: Map<string, { id: number; lstrip: boolean; rstrip: boolean }>
  normalizer: ((text: string) => string) | null
  pre_tokenizer: unknown
  model: ((tokens: string[]) => string[]) & { tokens_to_ids: Map<string, number>; unk_token_id?: number }
  remove_space?: boolean
  do_lowercase_and_remove_accent?: boolean
}

interface ByteLevelPre {
  byte_encoder: Record<number, string>
  pattern: RegExp
  add_prefix_space: boolean
  use_regex: boolean
}

type Json = Record<string, unknown> | null | undefined

/** pre-tokens remembered (cleared when full) */
const WORD_CACHE_MAX = 1 << 16
/** longer pre-tokens are not remembered */
const WORD_CACHE_CHARS = 128

/**
 * The Split pre-tokenizer's "Isolated" behaviour (the library's regex_split): the matches and the text
 * between them, in order, empty pieces dropped. An exec loop on one regex instead of `matchAll`, which
 * clones the regex and allocates an iterator per call; an empty match advances as matchAll does.
 */
export function splitIsolated(text: string, re: RegExp): string[] {
  const unicode = re.unicode || re.flags.includes('v')
  const out: string[] = []
  let prev = 0
  re.lastIndex = 0
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    const at = m.index
    const full = m[0]
    if (prev < at) out.push(text.slice(prev, at))
    if (full.length > 0) out.push(full)
    else re.lastIndex = advance(text, re.lastIndex, unicode)
    prev = at + full.length
  }
  if (prev < text.length) out.push(text.slice(prev))
  return out
}

/** ECMAScript AdvanceStringIndex: one code unit, or one code point in unicode mode. */
function advance(text: string, i: number, unicode: boolean): number {
  if (!unicode || i + 1 >= text.length) return i + 1
  const c = text.charCodeAt(i)
  if (c < 0xd800 || c > 0xdbff) return i + 1
  const d = text.charCodeAt(i + 1)
  return d >= 0xdc00 && d <= 0xdfff ? i + 2 : i + 1
}

export class ByteLevelBpe {
  private readonly cache = new Map<string, number[]>()

  private constructor(
    private readonly t: Internals,
    /** byte → its byte-level character */
    private readonly table: string[],
    /** text → pre-tokens (before the byte-level mapping) */
    private readonly words: (text: string) => string[],
  ) {}

  /**
   * The fast encoder for `tok` built from `json` (its tokenizer.json), or null when the layout is not a
   * byte-level BPE one this handles: model BPE; normalizer none or NFC; pre-tokenizer ByteLevel with its
   * regex, or Sequence[Split (Isolated), ByteLevel without regex or prefix space]; post-processor none or
   * ByteLevel.
   */
  static of(tok: Tokenizer, json: Record<string, unknown>): ByteLevelBpe | null {
    const t = tok as unknown as Internals
    const type = (x: unknown) => (x as Json)?.type
    const model = json.model as Json
    const norm = json.normalizer as Json
    const post = json.post_processor as Json
    const pre = json.pre_tokenizer as Json
    if (type(model) !== 'BPE' || model!.dropout != null) return null
    if (norm && type(norm) !== 'NFC') return null
    if (post && type(post) !== 'ByteLevel') return null
    if (t.remove_space === true || t.do_lowercase_and_remove_accent) return null
    if (
      typeof t.splitter_unnormalized?.split !== 'function' ||
      typeof t.splitter_normalized?.split !== 'function' ||
      !(t.added_tokens_map instanceof Map) ||
      typeof t.model !== 'function' ||
      !(t.model.tokens_to_ids instanceof Map)
    )
      return null
    let byteLevel: ByteLevelPre
    let words: (text: string) => string[]
    if (type(pre) === 'ByteLevel' && (pre as Record<string, unknown>).use_regex !== false) {
      byteLevel = t.pre_tokenizer as ByteLevelPre
      if (!(byteLevel?.pattern instanceof RegExp) || !byteLevel.use_regex) return null
      const { pattern, add_prefix_space: prefix } = byteLevel
      words = (text) => (prefix && !text.startsWith(' ') ? ` ${text}` : text).match(pattern) ?? []
    } else if (type(pre) === 'Sequence') {
      const parts = (pre as { pretokenizers?: Json[] }).pretokenizers ?? []
      const [split, bl] = parts
      if (
        parts.length !== 2 ||
        type(split) !== 'Split' ||
        String(split!.behavior).toLowerCase() !== 'isolated' ||
        split!.invert === true ||
        type(bl) !== 'ByteLevel' ||
        bl!.use_regex !== false ||
        bl!.add_prefix_space === true
      )
        return null
      const inner = (t.pre_tokenizer as { tokenizers?: unknown[] }).tokenizers
      const splitter = inner?.[0] as { pattern?: unknown } | undefined
      byteLevel = inner?.[1] as ByteLevelPre
      if (
        !(splitter?.pattern instanceof RegExp) ||
        !splitter.pattern.global ||
        byteLevel?.use_regex !== false
      )
        return null
      // our own copy: exec moves lastIndex, and the library's matchAll starts from the original's
      const pattern = new RegExp(splitter.pattern.source, splitter.pattern.flags)
      words = (text) => splitIsolated(text, pattern)
    } else {
      return null
    }
    const table = Array.from({ length: 256 }, (_, b) => byteLevel.byte_encoder?.[b])
    if (!table.every((c) => typeof c === 'string')) return null
    return new ByteLevelBpe(t, table as string[], words)
  }

  /** Token ids of `text`, no special tokens added: the same as the library's `encode(text).ids`. */
  encode(text: string): number[] {
    const t = this.t
    const out: number[] = []
    const sections = t.splitter_unnormalized.split(text)
    this.stripAround(sections)
    for (const section of sections) {
      if (section.length === 0) continue
      const added = t.added_tokens_map.get(section)
      if (added) {
        out.push(added.id)
        continue
      }
      const normalized = t.normalizer ? t.normalizer(section) : section
      if (normalized.length === 0) continue
      const subs = t.splitter_normalized.split(normalized)
      this.stripAround(subs)
      for (const sub of subs) {
        if (sub.length === 0) continue
        const a = t.added_tokens_map.get(sub)
        if (a) out.push(a.id)
        else for (const w of this.words(sub)) this.pushWord(w, out)
      }
    }
    return out
  }

  /** An added token with lstrip/rstrip trims the text next to it (the library does this in place, in order). */
  private stripAround(parts: string[]): void {
    const map = this.t.added_tokens_map
    for (let i = 0; i < parts.length; i++) {
      const a = map.get(parts[i]!)
      if (!a) continue
      if (a.lstrip && i > 0) parts[i - 1] = parts[i - 1]!.trimEnd()
      if (a.rstrip && i < parts.length - 1) parts[i + 1] = parts[i + 1]!.trimStart()
    }
  }

  private pushWord(word: string, out: number[]): void {
    let ids = this.cache.get(word)
    if (ids === undefined) {
      const t = this.t
      const tokens = t.model([this.byteLevel(word)])
      ids = tokens.map(
        (tk) => t.added_tokens_map.get(tk)?.id ?? t.model.tokens_to_ids.get(tk) ?? t.model.unk_token_id!,
      )
      if (word.length <= WORD_CACHE_CHARS) {
        if (this.cache.size >= WORD_CACHE_MAX) this.cache.clear()
        this.cache.set(word, ids)
      }
    }
    for (let i = 0; i < ids.length; i++) out.push(ids[i]!)
  }

  /** `word`'s UTF-8 bytes as byte-level characters (what the ByteLevel pre-tokenizer writes). */
  byteLevel(word: string): string {
    const table = this.table
    let out = ''
    for (let i = 0; i < word.length; i++) {
      let c = word.charCodeAt(i)
      if (c < 0x80) {
        out += table[c]
        continue
      }
      if (c < 0x800) {
        out += table[0xc0 | (c >> 6)]! + table[0x80 | (c & 63)]
        continue
      }
      if (c >= 0xd800 && c <= 0xdbff && i + 1 < word.length) {
        const d = word.charCodeAt(i + 1)
        if (d >= 0xdc00 && d <= 0xdfff) {
          const cp = ((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000
          out +=
            table[0xf0 | (cp >> 18)]! +
            table[0x80 | ((cp >> 12) & 63)] +
            table[0x80 | ((cp >> 6) & 63)] +
            table[0x80 | (cp & 63)]
          i++
          continue
        }
      }
      // a lone surrogate: TextEncoder writes U+FFFD
      if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd
      out += table[0xe0 | (c >> 12)]! + table[0x80 | ((c >> 6) & 63)] + table[0x80 | (c & 63)]
    }
    return out
  }
}

/** The fields of the library's Tokenizer that decoding relies on. */
interface DecodeInternals {
  model: { vocab: (string | null | undefined)[]; unk_token?: string | null }
  special_tokens: string[]
  decoder: { byte_decoder?: Record<string, number | string>; added_tokens?: { content: string }[] } | null
}

/**
 * `decode` for a ByteLevel decoder, giving the library's text: tokens → vocabulary strings (special ones
 * dropped when asked), added tokens kept as they are, every run of other tokens mapped back to bytes and
 * read as UTF-8 (invalid sequences → U+FFFD, as the library's TextDecoder). The library found each token in
 * the added-token list by a linear search and spread every run into an array of characters.
 */
export class ByteLevelDecoder {
  private readonly utf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true })
  private bytes = new Uint8Array(1024)

  private constructor(
    private readonly vocab: (string | null | undefined)[],
    private readonly unk: string | null | undefined,
    private readonly special: Set<string>,
    private readonly added: Set<string>,
    /** byte-level character code → byte (0 for other characters: what the library's lookup miss stores) */
    private readonly byteOf: Uint8Array,
  ) {}

  /** The decoder for `tok` (its tokenizer.json is `json`), or null unless its decoder is ByteLevel. */
  static of(tok: Tokenizer, json: Record<string, unknown>): ByteLevelDecoder | null {
    const t = tok as unknown as DecodeInternals
    if ((json.decoder as Json)?.type !== 'ByteLevel') return null
    const table = t.decoder?.byte_decoder
    if (!table || !Array.isArray(t.model?.vocab) || !Array.isArray(t.special_tokens)) return null
    if (!Array.isArray(t.decoder?.added_tokens)) return null
    const byteOf = new Uint8Array(65536)
    for (const [ch, value] of Object.entries(table)) {
      // the library's table holds byte numbers as strings ("33"); Uint8Array converts them
      const b = Number(value)
      if (ch.length !== 1 || !Number.isInteger(b) || b < 0 || b > 255) return null
      byteOf[ch.charCodeAt(0)] = b
    }
    return new ByteLevelDecoder(
      t.model.vocab,
      t.model.unk_token,
      new Set(t.special_tokens),
      new Set(t.decoder!.added_tokens!.map((a) => a.content)),
      byteOf,
    )
  }

  /** Text of `ids` (what the library's `decode(ids, {skip_special_tokens, clean_up_tokenization_spaces: false})` gives). */
  decode(ids: ArrayLike<number>, skipSpecial: boolean): string {
    let text = ''
    let n = 0
    for (let i = 0; i < ids.length; i++) {
      // an id outside the vocabulary with no unk token: the library joins it as ''
      const s = this.vocab[ids[i]!] ?? this.unk ?? ''
      if (skipSpecial && this.special.has(s)) continue
      if (this.added.has(s)) {
        if (n > 0) text += this.utf8.decode(this.bytes.subarray(0, n))
        n = 0
        text += s
        continue
      }
      if (n + s.length * 2 > this.bytes.length) {
        const next = new Uint8Array(Math.max(this.bytes.length * 2, n + s.length * 2))
        next.set(this.bytes.subarray(0, n))
        this.bytes = next
      }
      for (let k = 0; k < s.length; k++) {
        const c = s.charCodeAt(k)
        // a character outside the byte-level alphabet (or a surrogate pair, one character to the library):
        // the library's lookup misses and Uint8Array stores 0
        if (c >= 0xd800 && c <= 0xdbff && k + 1 < s.length) {
          const d = s.charCodeAt(k + 1)
          if (d >= 0xdc00 && d <= 0xdfff) k++
          this.bytes[n++] = 0
          continue
        }
        this.bytes[n++] = this.byteOf[c]!
      }
    }
    if (n > 0) text += this.utf8.decode(this.bytes.subarray(0, n))
    return text
  }
}
