import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { expect } from 'chai'
import { parseOutput } from '../../actors/proxy/tool-parser.ts'
import { agentSystemPrompt } from '../../actors/rollout/tau2/agent.ts'
import { loadDomainData, loadTasks } from '../../actors/rollout/tau2/data.ts'
import { type ChatMessage, ChatTemplate } from '../../actors/tokenizer/chat-template.ts'
import { PromptBuilder } from '../../actors/tokenizer/incremental.ts'
import { ModelTokenizer } from '../../actors/tokenizer/tokenizer.ts'
import {
  buildFiles,
  DOMAIN,
  DOMAINS_DIR,
  enumerableCalls,
  MODEL_DIR,
  toolCallText,
  workloadTools,
} from '../../configs/models/quickstart/build.ts'
import { readHfConfig } from '../../native/config.ts'

/** A seeded generator of awkward text: ASCII, controls, Latin-1, CJK, emoji, template-looking tags. */
function randomTexts(n: number, seed: number): string[] {
  let s = seed
  const rnd = () => {
    s = (s * 1103515245 + 12345) % 2 ** 31
    return s / 2 ** 31
  }
  const pieces = [
    'a',
    ' ',
    '  ',
    '\n',
    '\t',
    '\r\n',
    'é',
    'ß',
    '中文',
    '😀',
    '\u0000',
    '<tool_call>',
    '</tool_call>',
    '<|im_end|>',
    '<|im_start|>',
    '{"name": "turn_on", "arguments": {"room": "kitchen"}}',
    '"',
    '\\',
    'kitchen',
    "'s",
    '123',
  ]
  return Array.from({ length: n }, () =>
    Array.from({ length: 1 + Math.floor(rnd() * 12) }, () => pieces[Math.floor(rnd() * pieces.length)]).join(
      '',
    ),
  )
}

describe('quick-start tokenizer (configs/models/quickstart)', () => {
  let tok: ModelTokenizer
  let template: ChatTemplate

  before(() => {
    tok = ModelTokenizer.fromDir(MODEL_DIR)
    template = ChatTemplate.forTokenizer(tok)
  })

  describe('when the committed files are compared with the build script', () => {
    it('should be exactly what build.ts makes (rerun `npm run quickstart:model` after changing the domain or the agent prompt)', () => {
      // compared as JSON: the formatter may lay the committed files out differently
      for (const [name, obj] of Object.entries(buildFiles()))
        expect(JSON.parse(readFileSync(join(MODEL_DIR, name), 'utf8')), name).to.deep.equal(obj)
    })

    it('should have a model config whose vocabulary and eos match the tokenizer', () => {
      const cfg = readHfConfig(MODEL_DIR)
      expect(cfg.vocab_size).to.equal(tok.vocabSize)
      expect(tok.eosToken).to.equal('<|im_end|>')
      expect(cfg.eos_token_id).to.equal(tok.tokenToId('<|im_end|>'))
      expect(tok.eosTokenIds).to.deep.equal([cfg.eos_token_id])
      expect(tok.vocabSize).to.be.below(400)
    })
  })

  describe('when arbitrary text is encoded', () => {
    it('should decode back to exactly the same text', () => {
      for (const text of randomTexts(300, 7))
        expect(tok.decode(tok.encode(text)), JSON.stringify(text)).to.equal(text)
    })

    it('should fall back to one token per byte for text without added tokens', () => {
      expect(tok.encode('héllo')).to.deep.equal([...Buffer.from('héllo', 'utf8')])
    })

    it('should encode every whole tool call of the domain as one token that decodes to the text the proxy parses', () => {
      const calls = enumerableCalls(workloadTools())
      expect(calls).to.include(toolCallText('toggle_light', { room: 'kitchen' }))
      expect(calls).to.include('<tool_call>{"name": "done", "arguments": {}}</tool_call>')
      expect(calls).to.include(
        '<tool_call>\n{"name": "toggle_light", "arguments": {"room": "office"}}\n</tool_call>',
      )
      expect(calls).to.include('<tool_call>{"name":"toggle_light","arguments":{"room":"office"}}</tool_call>')
      for (const call of calls) {
        const ids = tok.encode(call)
        expect(ids, call).to.have.length(1)
        const parsed = parseOutput(tok.decode(ids), { tools: true, reasoning: false, idPrefix: 'c' })
        expect(parsed.malformed).to.equal(0)
        expect(parsed.toolCalls).to.have.length(1)
        const body = JSON.parse(call.slice('<tool_call>'.length, -'</tool_call>'.length))
        expect(parsed.toolCalls[0].name).to.equal(body.name)
        expect(JSON.parse(parsed.toolCalls[0].arguments)).to.deep.equal(body.arguments)
      }
    })

    it('should spell a call the vocabulary lacks in bytes, still parseable', () => {
      const text = '<tool_call>{"name": "turn_on", "arguments": {"room": "garage"}}</tool_call>'
      const ids = tok.encode(text)
      expect(ids.length).to.be.above(10)
      const parsed = parseOutput(tok.decode(ids), { tools: true, reasoning: false, idPrefix: 'c' })
      expect(parsed.toolCalls.map((c) => [c.name, JSON.parse(c.arguments)])).to.deep.equal([
        ['turn_on', { room: 'garage' }],
      ])
    })

    it('should give a room and a light state single tokens (BPE merges learned on tickets and tool results)', () => {
      const ticket = tok.encode('Turn on the kitchen light.')
      expect(ticket.length).to.be.at.most(6)
      for (const word of [' kitchen', ' bedroom', ' bathroom', ' office', ' on', ' off'])
        expect(tok.encode(word), word).to.have.length(1)
    })
  })

  describe('when the chat template renders a tool conversation', () => {
    const tools = () => workloadTools()
    const messages = (): ChatMessage[] => [
      { role: 'system', content: 'You are an assistant.' },
      { role: 'user', content: 'Light the kitchen, please.' },
      {
        role: 'assistant',
        content: '',
        tool_calls: [
          { id: 'a', type: 'function', function: { name: 'toggle_light', arguments: '{"room": "kitchen"}' } },
        ],
      },
      { role: 'tool', content: '{"room": "kitchen", "light": "on"}', tool_call_id: 'a' },
      { role: 'assistant', content: 'The kitchen light is on.' },
    ]

    it('should write ChatML turns, the tool schemas and Qwen-style tool calls', () => {
      const text = template.render(messages(), { tools: tools(), addGenerationPrompt: true })
      expect(text.startsWith('<|im_start|>system\n# Tools\n')).to.equal(true)
      expect(text).to.contain('</tools>\n\nYou are an assistant.<|im_end|>\n')
      for (const t of tools()) expect(text).to.contain(`{"name": "${t.function.name}"`)
      expect(tools().map((t) => t.function.name)).to.deep.equal(['toggle_light', 'done'])
      expect(text).to.contain('<tools>\n{"type": "function", "function": {"name": "toggle_light"')
      expect(text).to.contain('<|im_end|>\n<|im_start|>user\nLight the kitchen, please.<|im_end|>\n')
      expect(text).to.contain(
        '<|im_start|>assistant\n<tool_call>{"name": "toggle_light", "arguments": {"room": "kitchen"}}</tool_call><|im_end|>\n',
      )
      expect(text).to.contain(
        '<|im_start|>tool\n<tool_response>{"room": "kitchen", "light": "on"}</tool_response><|im_end|>\n',
      )
      expect(text.endsWith('The kitchen light is on.<|im_end|>\n<|im_start|>assistant\n')).to.equal(true)
      expect(tok.decode(tok.encode(text))).to.equal(text)
    })

    it('should render an assistant tool call back into the text the proxy parses into the same call', () => {
      const text = template.render(messages().slice(0, 3), {})
      const turn = text.slice(text.lastIndexOf('<|im_start|>assistant\n') + '<|im_start|>assistant\n'.length)
      const out = turn.slice(0, turn.indexOf('<|im_end|>'))
      const parsed = parseOutput(out, { tools: true, reasoning: false, idPrefix: 'c' })
      expect(parsed.content).to.equal('')
      expect(parsed.toolCalls.map((c) => [c.name, JSON.parse(c.arguments)])).to.deep.equal([
        ['toggle_light', { room: 'kitchen' }],
      ])
      // the model's own call text re-renders to the same single token
      expect(tok.encode(out)).to.deep.equal([
        tok.tokenToId(toolCallText('toggle_light', { room: 'kitchen' })),
      ])
      // as the agent sends it back (compact arguments JSON), the rendered call is one token too
      const compact = messages().slice(0, 3)
      compact[2].tool_calls = [
        { id: 'a', type: 'function', function: { name: 'toggle_light', arguments: '{"room":"kitchen"}' } },
      ]
      const t2 = template.render(compact, {})
      const call = t2.slice(t2.lastIndexOf('<tool_call>'), t2.lastIndexOf('<|im_end|>'))
      expect(call).to.equal(
        '<tool_call>{"name": "toggle_light", "arguments": {"room":"kitchen"}}</tool_call>',
      )
      expect(tok.encode(call)).to.have.length(1)
    })

    it('should render without tools or a system message as plain ChatML', () => {
      const text = template.render([{ role: 'user', content: 'hi' }], { addGenerationPrompt: true })
      expect(text).to.equal('<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n')
    })

    it('should let the proxy extend prompts incrementally after a tool turn', () => {
      const builder = new PromptBuilder(tok, template)
      const delta = builder.delta(
        [{ role: 'tool', content: '{"room": "kitchen", "light": "on"}', tool_call_id: 'a' }],
        { tools: tools() },
        { prevReasoning: 'none', outputEndsWithEos: true },
      )
      expect(delta.kind).to.equal('extend')
      if (delta.kind === 'extend')
        expect(delta.text).to.equal(
          '\n<|im_start|>tool\n<tool_response>{"room": "kitchen", "light": "on"}</tool_response><|im_end|>\n<|im_start|>assistant\n',
        )
    })
  })

  describe('when the solo home agent prompt is rendered', () => {
    it('should be a short prompt (the workload phrases apply) that round-trips exactly', () => {
      const data = loadDomainData(DOMAINS_DIR, DOMAIN)
      for (const task of loadTasks(DOMAINS_DIR, DOMAIN, 'train')) {
        const system = agentSystemPrompt(data.policySolo ?? data.policy, true, task.ticket)
        const text = template.render([{ role: 'system', content: system }], {
          tools: workloadTools(),
          addGenerationPrompt: true,
        })
        const ids = tok.encode(text)
        expect(tok.decode(ids)).to.equal(text)
        // ~1,500 characters; bytes alone would be as many tokens
        expect(text.length).to.be.above(1200)
        expect(ids.length, task.id).to.be.below(80)
      }
    })
  })
})
