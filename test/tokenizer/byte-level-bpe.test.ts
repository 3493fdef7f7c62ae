import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { expect } from 'chai'
import { splitIsolated } from '../../actors/tokenizer/byte-level-bpe.ts'
import { ModelTokenizer } from '../../actors/tokenizer/tokenizer.ts'
import { rng } from '../../runtime/rng.ts'
import { QWEN3_DIR, qwen3, WEATHER_TOOL } from '../fixtures/proxy/qwen3.ts'

/** Pieces that exercise every step: added tokens, NFC, the Split regex, byte-level mapping, BPE merges. */
const PIECES = [
  'Hello',
  ' world',
  "it's",
  " they'RE",
  '12345678',
  ' 3.14',
  '  ',
  '\n\n',
  '\r\n',
  '\t',
  ' \n ',
  '!!!',
  '{"id": "R7", "ok": true}',
  'naïve',
  'cafe\u0301', // e + combining acute: NFC composes it
  'Ωμέγα',
  '東京タワー',
  '🙂👍🏽',
  '\ud83d', // a lone high surrogate
  '\ude00x', // a lone low surrogate
  '\u0000\u0001',
  '<|im_start|>',
  '<|im_end|>',
  '<think>',
  '</tool_call>',
  '<|endoftext|>',
  'supercalifragilisticexpialidocious'.repeat(6),
  'é'.repeat(70),
  '\u00a0nbsp',
  '\u2028',
]

function randomText(rand: () => number): string {
  const n = 1 + Math.floor(rand() * 8)
  let s = ''
  for (let i = 0; i < n; i++) s += PIECES[Math.floor(rand() * PIECES.length)]!
  return s
}

function variant(edit: (json: Record<string, unknown>) => void): ModelTokenizer {
  const json = JSON.parse(readFileSync(join(QWEN3_DIR, 'tokenizer.json'), 'utf8')) as Record<string, unknown>
  edit(json)
  const config = JSON.parse(readFileSync(join(QWEN3_DIR, 'tokenizer_config.json'), 'utf8'))
  return new ModelTokenizer({ tokenizer: json, config })
}

function expectSameIds(tok: ModelTokenizer, texts: string[]): void {
  for (const text of texts) {
    expect(tok.encode(text), JSON.stringify(text)).to.deep.equal(tok.encodeReference(text))
  }
}

/** The library's regex_split, as it reads (matchAll): the reference for splitIsolated. */
function referenceSplit(text: string, re: RegExp): string[] {
  const out: string[] = []
  let prev = 0
  for (const m of text.matchAll(re)) {
    if (prev < m.index!) out.push(text.slice(prev, m.index))
    if (m[0].length > 0) out.push(m[0])
    prev = m.index! + m[0].length
  }
  if (prev < text.length) out.push(text.slice(prev))
  return out
}

describe('byte-level BPE encoding (the fast path beside the library)', () => {
  describe('when splitting on a regex (Isolated)', () => {
    it('should give the pieces matchAll gives, also for empty matches over surrogate pairs', () => {
      const rand = rng(21)
      const texts = ['', 'x', '🙂🙂a', 'a\ud83d', ...Array.from({ length: 400 }, () => randomText(rand))]
      const regexes = [/\p{L}+|\p{N}/gu, /x*/gu, /x*/g, /(?=a)|\s+/gu, /🙂|\n+/gu, /\b/g]
      for (const re of regexes) {
        for (const text of texts) {
          expect(splitIsolated(text, re), `${re} on ${JSON.stringify(text)}`).to.deep.equal(
            referenceSplit(text, re),
          )
        }
      }
    })
  })

  describe('with the Qwen3 tokenizer (Split + ByteLevel, NFC)', () => {
    it('should take the fast path', () => {
      expect(qwen3().tokenizer.fastEncode).to.equal(true)
    })

    it('should give the library ids for 3000 random texts, each encoded twice (cache cold and warm)', () => {
      const { tokenizer } = qwen3()
      const rand = rng(3)
      const texts = Array.from({ length: 3000 }, () => randomText(rand))
      expectSameIds(tokenizer, texts)
      expectSameIds(tokenizer, texts)
    })

    it('should give the library ids for rendered conversations with tools', () => {
      const { tokenizer, builder } = qwen3()
      const text = builder.renderFull(
        [
          { role: 'system', content: 'You help with weather. 天気.' },
          { role: 'user', content: "What's it like in Zürich?\n\nAnd in 東京? 🙂" },
          {
            role: 'assistant',
            content: '',
            reasoning_content: 'Two cities.',
            tool_calls: [{ function: { name: 'get_weather', arguments: '{"city": "Zürich"}' } }],
          },
          { role: 'tool', content: '{"temp": 21.5, "sky": "clear"}' },
        ],
        { tools: [WEATHER_TOOL] },
      )
      expectSameIds(tokenizer, [text, text.slice(1), text.slice(0, -3)])
    })
  })

  describe('when decoding with the Qwen3 tokenizer (ByteLevel decoder)', () => {
    it('should take the fast path', () => {
      expect(qwen3().tokenizer.fastDecode).to.equal(true)
    })

    it('should give the library text for 3000 random id runs, special tokens kept or skipped', () => {
      const { tokenizer } = qwen3()
      const rand = rng(13)
      const texts = Array.from({ length: 200 }, () => randomText(rand))
      const pool = texts.flatMap((t) => tokenizer.encode(t))
      for (let i = 0; i < 3000; i++) {
        const n = 1 + Math.floor(rand() * 12)
        // real token runs (cut anywhere: split characters), any vocabulary id, added tokens, unknown ids
        const ids = Array.from({ length: n }, () => {
          const r = rand()
          if (r < 0.6) return pool[Math.floor(rand() * pool.length)]!
          if (r < 0.85) return Math.floor(rand() * tokenizer.vocabSize)
          if (r < 0.98) return 151643 + Math.floor(rand() * 26)
          return tokenizer.vocabSize + Math.floor(rand() * 1000)
        })
        const skip = rand() < 0.5
        expect(tokenizer.decode(ids, skip), JSON.stringify({ ids, skip })).to.equal(
          tokenizer.decodeReference(ids, skip),
        )
      }
    })
  })

  describe('with other byte-level layouts', () => {
    it('should match the library for GPT-2 style ByteLevel with its own regex and a prefix space', () => {
      const tok = variant((j) => {
        j.pre_tokenizer = { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true }
      })
      expect(tok.fastEncode).to.equal(true)
      const rand = rng(5)
      expectSameIds(
        tok,
        Array.from({ length: 600 }, () => randomText(rand)),
      )
    })

    it('should match the library where added tokens strip their neighbours or are normalized', () => {
      const tok = variant((j) => {
        const added = j.added_tokens as {
          content: string
          lstrip: boolean
          rstrip: boolean
          normalized: boolean
        }[]
        for (const a of added) {
          if (a.content === '<|im_start|>') a.rstrip = true
          if (a.content === '<|im_end|>') a.lstrip = true
          if (a.content === '<think>') {
            a.normalized = true
            a.rstrip = true
          }
        }
      })
      expect(tok.fastEncode).to.equal(true)
      const rand = rng(9)
      expectSameIds(tok, [
        'a  <|im_end|>  b <|im_start|>  c',
        ' <think> x <think>',
        ...Array.from({ length: 600 }, () => randomText(rand)),
      ])
    })

    it('should leave layouts it does not handle to the library', () => {
      const tok = variant((j) => {
        j.pre_tokenizer = { type: 'Whitespace' }
      })
      expect(tok.fastEncode).to.equal(false)
      expect(tok.encode('Hello world')).to.deep.equal(tok.encodeReference('Hello world'))
    })
  })
})
