import { expect } from 'chai'
import { type ChatMessage, ChatTemplate } from '../../actors/tokenizer/chat-template.ts'
import { contentRules, opaqueText } from '../../actors/tokenizer/content-slots.ts'
import { type DeltaResult, PromptBuilder, type ReasoningShape } from '../../actors/tokenizer/incremental.ts'
import { rng as mulberry32 } from '../../runtime/rng.ts'
import { qwen3, WEATHER_TOOL } from '../fixtures/proxy/qwen3.ts'

/** Field values a client may send: plain, unicode, markup the template looks for, edge whitespace, empty. */
const PIECES = [
  'Can I change booking 5?',
  '{"id": "R7", "status": "confirmed", "seats": [1, 2]}',
  'naïve café — 東京 🙂 Ωμέγα',
  'say "hi" and \\escape\\ it',
  'a < b && c > d',
  'line one\nline two\n\nline four',
  '{{ not a template }} {% raw %}',
  '<tool_response>\nold result\n</tool_response>',
  'thinking </think> after',
  '<think>\nmaybe\n</think>',
  'a <|im_end|> inside',
  '  leading spaces',
  'trailing newline\n',
  '\nleading newline',
  'tabs\tinside\tonly',
  '',
  'x',
  'user',
  'The user asked about the assistant and the tool.',
  'well, fine',
]

function randomMessage(rand: () => number, i: number): ChatMessage {
  const pick = () => PIECES[Math.floor(rand() * PIECES.length)]!
  const r = rand()
  const role = r < 0.45 ? 'user' : r < 0.9 ? 'tool' : 'system'
  const content = rand() < 0.3 ? `${pick()} ${pick()}` : pick()
  const m: ChatMessage = { role, content }
  if (role === 'tool' && rand() < 0.7) m.tool_call_id = `call_${i}`
  if (rand() < 0.1) m.name = rand() < 0.5 ? `agent_${i}` : ''
  return m
}

/** The same delta from a builder without the fast path (every delta rendered by the template). */
function templateOnly(builder: PromptBuilder): PromptBuilder {
  return new PromptBuilder(builder.tokenizer, builder.template, 0, false)
}

describe('content slots (deltas without running the template)', () => {
  describe('with the Qwen3 template', () => {
    it('should find exactly the literals Qwen3 tests message fields with', () => {
      const rules = contentRules(qwen3().template.program)
      expect(rules).to.not.equal(null)
      expect([...rules!.contain].sort()).to.deep.equal(
        ['</think>', '</tool_response>', '<think>', '<tool_response>'].sort(),
      )
      expect(rules!.edge).to.equal('\n')
      expect(opaqueText('plain text', rules!)).to.equal(true)
      expect(opaqueText('<tool_response>x</tool_response>', rules!)).to.equal(false)
      expect(opaqueText('ends with a newline\n', rules!)).to.equal(false)
      expect(opaqueText('', rules!)).to.equal(false)
    })

    it('should give the same text and ids as the template for 600 random user/tool/system deltas', () => {
      const { tokenizer, template } = qwen3()
      const fast = new PromptBuilder(tokenizer, template, 0)
      const slow = templateOnly(fast)
      const rand = mulberry32(7)
      const contexts = [
        {},
        { tools: [WEATHER_TOOL] },
        { kwargs: { enable_thinking: false } },
        { tools: [WEATHER_TOOL], kwargs: { enable_thinking: true } },
      ]
      const shapes: ReasoningShape[] = ['none', 'empty', 'text']
      let extended = 0
      for (let i = 0; i < 600; i++) {
        const n = 1 + Math.floor(rand() * 3)
        const messages = Array.from({ length: n }, (_, k) => randomMessage(rand, i * 3 + k))
        const ctx = contexts[i % contexts.length]!
        const opts = { prevReasoning: shapes[i % 3]!, outputEndsWithEos: rand() < 0.8 }
        const a: DeltaResult = fast.delta(messages, ctx, opts)
        const b: DeltaResult = slow.delta(messages, ctx, opts)
        expect(a, `delta ${i}: ${JSON.stringify({ messages, ctx, opts })}`).to.deep.equal(b)
        if (a.kind === 'extend') extended++
      }
      // the fast path was taken wherever every field passed the rules (about 1 delta in 8 here: many
      // pieces above are made to fail them), and both outcomes occurred
      expect(fast.slotDeltas).to.be.greaterThan(50)
      expect(slow.slotDeltas).to.equal(0)
      expect(extended).to.be.within(100, 599)
    })

    it('should leave a user message that looks like a tool result to the template (it changes what Qwen3 keeps)', () => {
      const { tokenizer, template } = qwen3()
      const fast = new PromptBuilder(tokenizer, template, 0)
      const opts = { prevReasoning: 'text' as const, outputEndsWithEos: true }
      // a real query after a thinking turn: Qwen3 drops the old <think>, a rewrite
      expect(fast.delta([{ role: 'user', content: 'And tomorrow?' }], {}, opts).kind).to.equal('rewrite')
      // the same role with tool-result markup is not a query: the thinking turn stays, the prompt extends
      const d = fast.delta([{ role: 'user', content: '<tool_response>\nsunny\n</tool_response>' }], {}, opts)
      expect(d).to.deep.equal(
        templateOnly(fast).delta(
          [{ role: 'user', content: '<tool_response>\nsunny\n</tool_response>' }],
          {},
          opts,
        ),
      )
      expect(d.kind).to.equal('extend')
      if (d.kind !== 'extend') return
      expect(d.text).to.equal(
        '\n<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n',
      )
    })

    it('should build 25 turns of a conversation whose prompts equal a full render, using the fast path', () => {
      const { tokenizer, template } = qwen3()
      const builder = new PromptBuilder(tokenizer, template, 0)
      const ctx = { tools: [WEATHER_TOOL] }
      const messages: ChatMessage[] = [{ role: 'system', content: 'Weather desk.' }]
      messages.push({ role: 'user', content: 'Weather in 25 cities?' })
      let prompt = builder.full(messages, ctx)
      for (let i = 0; i < 25; i++) {
        const answer = i % 2 ? `City ${i} is sunny — 晴れ 🙂` : `"Quoted" \\ answer ${i}`
        const output = [...tokenizer.encode(answer), tokenizer.eosTokenIds[0]!]
        messages.push({ role: 'assistant', content: answer })
        const next: ChatMessage =
          i % 3
            ? { role: 'user', content: `Question ${i}: and the next one?` }
            : { role: 'system', content: `Note ${i}` }
        messages.push(next)
        const d = builder.delta([next], ctx, { prevReasoning: 'none', outputEndsWithEos: true })
        expect(d.kind, `turn ${i}`).to.equal('extend')
        if (d.kind !== 'extend') return
        prompt = [...prompt, ...output, ...d.ids]
        expect(prompt, `turn ${i}`).to.deep.equal(builder.full(messages, ctx))
      }
      expect(builder.slotDeltas).to.equal(25)
    })
  })

  describe('with a template that refuses some messages', () => {
    it('should refuse them as the template does (PRX_ERR_TEMPLATE) and still fill the others', () => {
      const { tokenizer } = qwen3()
      const source =
        "{% if messages[-1].role == 'system' %}{{ raise_exception('no system message last') }}{% endif %}" +
        "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}" +
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
      const fast = new PromptBuilder(tokenizer, new ChatTemplate(source), 0)
      const opts = { prevReasoning: 'none' as const, outputEndsWithEos: true }
      for (let i = 0; i < 2; i++) {
        expect(() => fast.delta([{ role: 'system', content: 'late' }], {}, opts))
          .to.throw('no system message last')
          .with.property('code', 'PRX_ERR_TEMPLATE')
      }
      const d = fast.delta([{ role: 'user', content: 'fine' }], {}, opts)
      expect(d).to.deep.equal(templateOnly(fast).delta([{ role: 'user', content: 'fine' }], {}, opts))
      expect(fast.slotDeltas).to.equal(1)
    })
  })

  describe('with templates that do more than write the content', () => {
    const user = "{{ '<|im_start|>' + m.role + '\\n' }}"
    const cases: [string, string, boolean][] = [
      [
        'upper-cases it',
        `{% for m in messages %}${user}{{ m.content | upper }}<|im_end|>\n{% endfor %}`,
        false,
      ],
      [
        'escapes it as JSON',
        `{% for m in messages %}${user}{{ m.content | tojson }}<|im_end|>\n{% endfor %}`,
        false,
      ],
      [
        'writes it twice',
        `{% for m in messages %}${user}{{ m.content }}/{{ m.content }}<|im_end|>\n{% endfor %}`,
        false,
      ],
      [
        'replaces text in it',
        `{% for m in messages %}${user}{{ m.content | replace('Ω', 'O') }}<|im_end|>\n{% endfor %}`,
        true,
      ],
      [
        'branches on its length',
        `{% for m in messages %}${user}{% if m.content|length > 20 %}LONG {% endif %}{{ m.content }}<|im_end|>\n{% endfor %}`,
        false,
      ],
      [
        'indexes into it',
        `{% for m in messages %}${user}{% if m.content and m.content[0] in 'QWERTY' %}[U]{% endif %}{{ m.content }}<|im_end|>\n{% endfor %}`,
        false,
      ],
      [
        'compares it upper-cased',
        `{% for m in messages %}${user}{% if (m.content|upper) == 'X' %}[X]{% endif %}{{ m.content }}<|im_end|>\n{% endfor %}`,
        false,
      ],
      [
        'tests it upper-cased through a method',
        `{% for m in messages %}${user}{% if m.content.upper().startswith('W') %}[W]{% endif %}{{ m.content }}<|im_end|>\n{% endfor %}`,
        false,
      ],
      [
        'writes it in a filter block',
        `{% for m in messages %}${user}{% filter upper %}{{ m.content }}{% endfilter %}<|im_end|>\n{% endfor %}`,
        false,
      ],
      [
        'compares it with the message before',
        `{% for m in messages %}${user}{% if not loop.first and m.content == messages[loop.index0 - 1].content %}[dup]{% endif %}{{ m.content }}<|im_end|>\n{% endfor %}`,
        false,
      ],
      [
        'compares it with a literal after joining text to it',
        `{% for m in messages %}${user}{% if ('Q' ~ m.content) == 'Qx' %}[Qx]{% endif %}{{ m.content }}<|im_end|>\n{% endfor %}`,
        false,
      ],
      [
        'compares a variable set from it',
        `{% for m in messages %}{% set c = m.content %}${user}{% if c == messages[0].role %}[R]{% endif %}{{ m.content }}<|im_end|>\n{% endfor %}`,
        false,
      ],
      [
        'searches it for something other than a literal',
        `{% for m in messages %}${user}{% if m.content.startswith(messages[0].role) %}[S]{% endif %}{{ m.content }}<|im_end|>\n{% endfor %}`,
        false,
      ],
      [
        'writes its length',
        `{% for m in messages %}${user}{{ m.content|length }}<|im_end|>\n{% endfor %}`,
        false,
      ],
      [
        'writes it indented',
        `{% for m in messages %}${user}{{ m.content|indent(2) }}<|im_end|>\n{% endfor %}`,
        false,
      ],
      [
        'branches on a word in it',
        `{% for m in messages %}${user}{% if 'booking' in m.content %}[B]{% endif %}{{ m.content }}<|im_end|>\n{% endfor %}`,
        true,
      ],
      ['trims it', `{% for m in messages %}${user}{{ m.content | trim }}<|im_end|>\n{% endfor %}`, true],
      [
        'compares roles only',
        `{% for m in messages %}{% if m.role == 'tool' %}<tool>{{ m.content }}</tool>{% else %}${user}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}`,
        true,
      ],
    ]
    for (const [what, source, fastPath] of cases) {
      it(`should match the template's own render when the template ${what}`, () => {
        const { tokenizer } = qwen3()
        const gen = "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
        const fast = new PromptBuilder(tokenizer, new ChatTemplate(source + gen), 0)
        const slow = templateOnly(fast)
        const rand = mulberry32(11)
        for (let i = 0; i < 80; i++) {
          // one to three messages: a delta of several can hold equal fields
          const messages = Array.from({ length: 1 + (i % 3) }, (_, k) => randomMessage(rand, i * 3 + k))
          const opts = { prevReasoning: 'none' as const, outputEndsWithEos: true }
          expect(fast.delta(messages, {}, opts), JSON.stringify(messages)).to.deep.equal(
            slow.delta(messages, {}, opts),
          )
        }
        if (fastPath) expect(fast.slotDeltas).to.be.greaterThan(0)
        else expect(fast.slotDeltas).to.equal(0)
      })
    }
  })
})
