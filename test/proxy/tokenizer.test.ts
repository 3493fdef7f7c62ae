import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import { IncrementalDecoder } from '../../actors/proxy/chat-messages.ts'
import { type ChatMessage, ChatTemplate } from '../../actors/tokenizer/chat-template.ts'
import { ModelTokenizer } from '../../actors/tokenizer/tokenizer.ts'
import { QWEN3_DIR, qwen3, WEATHER_TOOL } from '../fixtures/proxy/qwen3.ts'

describe('tokenizer loaded from a model directory (Qwen3)', () => {
  it('should read the eos token and its id from tokenizer_config.json', () => {
    const { tokenizer } = qwen3()
    expect(tokenizer.eosToken).to.equal('<|im_end|>')
    expect(tokenizer.eosTokenIds).to.deep.equal([151645])
    expect(tokenizer.isEos(151645)).to.equal(true)
    expect(tokenizer.vocabSize).to.be.greaterThan(151668)
  })

  it('should encode special tokens written as text to their single ids', () => {
    const { tokenizer } = qwen3()
    expect(tokenizer.encode('<|im_start|>user\nhi<|im_end|>')).to.deep.equal([151644, 872, 198, 6023, 151645])
  })

  it('should decode a rendered conversation back to the same text', () => {
    const { tokenizer, template } = qwen3()
    const text = template.render(
      [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Météo à Paris? 東京は?' },
      ],
      { tools: [WEATHER_TOOL], addGenerationPrompt: true },
    )
    expect(tokenizer.decode(tokenizer.encode(text))).to.equal(text)
  })

  it('should pick up extra eos ids from generation_config.json', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tok-'))
    writeFileSync(join(dir, 'tokenizer.json'), readFileSync(join(QWEN3_DIR, 'tokenizer.json')))
    writeFileSync(join(dir, 'tokenizer_config.json'), readFileSync(join(QWEN3_DIR, 'tokenizer_config.json')))
    writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [151645, 151643] }))
    const tok = ModelTokenizer.fromDir(dir)
    expect(tok.eosTokenIds).to.deep.equal([151645, 151643])
  })

  it('should refuse a directory without tokenizer.json with PRX_ERR_TOKENIZER', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tok-'))
    expect(() => ModelTokenizer.fromDir(dir))
      .to.throw()
      .with.property('code', 'PRX_ERR_TOKENIZER')
  })
})

describe('chat template', () => {
  it('should render Qwen3 tools into the system header', () => {
    const { template } = qwen3()
    const text = template.render([{ role: 'user', content: 'hi' }], {
      tools: [WEATHER_TOOL],
      addGenerationPrompt: true,
    })
    expect(text).to.contain('<tools>\n{"type": "function", "function": {"name": "get_weather"')
    expect(text.endsWith('<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n')).to.equal(true)
  })

  it('should pass chat_template_kwargs such as enable_thinking', () => {
    const { template } = qwen3()
    const text = template.render([{ role: 'user', content: 'hi' }], {
      addGenerationPrompt: true,
      kwargs: { enable_thinking: false },
    })
    expect(text.endsWith('<|im_start|>assistant\n<think>\n\n</think>\n\n')).to.equal(true)
  })

  it('should turn raise_exception into PRX_ERR_TEMPLATE', () => {
    const t = new ChatTemplate(
      "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}",
    )
    const msgs: ChatMessage[] = [{ role: 'assistant', content: 'x' }]
    expect(() => t.render(msgs))
      .to.throw(/first must be user/)
      .with.property('code', 'PRX_ERR_TEMPLATE')
  })
})

describe('incremental decoding (streaming)', () => {
  it('should give growing prefixes of the full text, never a broken character, one token at a time', () => {
    const { tokenizer } = qwen3()
    const text = 'Météo à Paris: 東京は雨 🌧️, ok<think>x</think>'
    const ids = [...tokenizer.encode(text), 151645]
    const dec = new IncrementalDecoder(tokenizer)
    let last = ''
    for (const id of ids) {
      const now = dec.push([id])
      expect(text.startsWith(now), JSON.stringify(now)).to.equal(true)
      expect(now.includes('\uFFFD')).to.equal(false)
      expect(now.length).to.be.at.least(last.length)
      last = now
    }
    expect(last).to.equal(text)
  })
})
