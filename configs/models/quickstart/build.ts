/**
 * Builds the quick-start model directory (this folder): `tokenizer.json`, `tokenizer_config.json`,
 * `generation_config.json` and `config.json` (a tiny Qwen3). Run `npm run quickstart:model`; the files
 * are committed, and test/quickstart/tokenizer.test.ts fails when they drift from what this script makes.
 *
 * The tokenizer is the project's own, designed for a tiny model learning the `home` tau2 domain
 * (configs/domains/home) in minutes on a CPU:
 *   - byte-level BPE: the 256 byte tokens encode any text, exactly (round trip), plus MERGES merges
 *     learned (standard BPE training) on the texts that vary between the workload's prompts: tickets and
 *     tool results, so that a room or a light state is one token;
 *   - ChatML special tokens `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` (eos);
 *   - the tags `<tool_response>`, `</tool_response>`, `<tools>`, `</tools>` as ordinary added tokens;
 *   - workload phrases as added tokens: the fixed texts every prompt of the workload repeats (the solo
 *     agent's instructions + the domain policy, each tool's JSON schema line, the template's tool header)
 *     and every whole tool call of the domain (`<tool_call>{"name": "turn_on", "arguments": {"room":
 *     "kitchen"}}</tool_call>`; the domain's parameters are enums, so the calls are a closed set), in the
 *     four JSON spellings models and templates write (see toolCallSpellings).
 *
 * Why: prompts shrink from ~1,500 byte tokens to ~60 (the CPU trainer's cost grows with length²), and a
 * whole tool call is one token, so a randomly initialised model (near-uniform over ~290 tokens) emits the
 * right call now and then: RL has signal from the first step. Decoded text is still the exact text the
 * proxy's tool parser reads. Added tokens match longest-first before byte-level splitting, so a phrase
 * only applies where the exact text occurs; anything else falls back to bytes.
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Template } from '@huggingface/jinja'
import { agentSystemPrompt } from '../../../actors/rollout/tau2/agent.ts'
import { loadDomainData, loadTasks } from '../../../actors/rollout/tau2/data.ts'
import { Environment } from '../../../actors/rollout/tau2/environment.ts'
import type { OpenAITool } from '../../../actors/rollout/tau2/tools.ts'

export const MODEL_DIR = fileURLToPath(new URL('.', import.meta.url))
export const DOMAINS_DIR = fileURLToPath(new URL('../../domains', import.meta.url))
export const DOMAIN = 'home'

/** The tiny Qwen3 (vocab_size and token ids are filled in from the tokenizer). */
export const MODEL_DIMS = {
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 16,
  max_position_embeddings: 2048,
  rope_theta: 10000,
  initializer_range: 0.1,
}

/** BPE merges learned on the workload's variable texts. */
export const MERGES = 64

export const SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'] as const
/**
 * Tag tokens. `<tool_call>` / `</tool_call>` are deliberately not tokens of their own: a lone
 * `</tool_call>` would end a turn (stop string) without a call; calls the vocabulary lacks are spelled
 * in bytes (still parsed by the proxy).
 */
export const TOOL_TAGS = ['<tool_response>', '</tool_response>', '<tools>', '</tools>']

/** The tool header the template writes before the tool schemas (one phrase token). */
export const TOOLS_HEADER =
  '# Tools\nCall a tool by writing <tool_call>{"name": <tool name>, "arguments": <arguments object>}</tool_call>.\n<tools>'

/**
 * ChatML with tools, Qwen-style tool calls, without thinking:
 *   <|im_start|>system\n{TOOLS_HEADER}\n{tool json}\n…</tools>\n\n{system}<|im_end|>\n
 *   <|im_start|>user\n{content}<|im_end|>\n
 *   <|im_start|>assistant\n{content}<tool_call>{"name": "…", "arguments": {…}}</tool_call>…<|im_end|>\n
 *   <|im_start|>tool\n<tool_response>{content}</tool_response><|im_end|>\n
 *   <|im_start|>assistant\n                                   (generation prompt)
 * An assistant turn renders exactly as the model writes it (content, then calls, then eos), so the
 * proxy's incremental prompts never need a re-render. Tools come before the system text: the solo agent's
 * system text ends with the ticket, which so sits at a fixed distance before the generation prompt (what
 * a tiny model must read is where relative attention finds it most easily).
 */
/** Literal template output (a Jinja string expression, so whitespace control never eats it). */
const lit = (s: string) => `{{ ${JSON.stringify(s)} }}`

export const CHAT_TEMPLATE = [
  '{%- set ns = namespace(start=0) -%}',
  "{%- if messages and messages[0].role == 'system' -%}{%- set ns.start = 1 -%}{%- endif -%}",
  '{%- if tools or ns.start == 1 -%}',
  lit('<|im_start|>system\n'),
  '{%- if tools -%}',
  lit(TOOLS_HEADER),
  '{%- for tool in tools -%}',
  lit('\n'),
  '{{ tool | tojson }}{%- endfor -%}',
  lit('\n</tools>'),
  '{%- if ns.start == 1 -%}',
  lit('\n\n'),
  '{%- endif -%}{%- endif -%}',
  '{%- if ns.start == 1 -%}{{ messages[0].content }}{%- endif -%}',
  lit('<|im_end|>\n'),
  '{%- endif -%}',
  '{%- for message in messages[ns.start:] -%}',
  "{%- if message.role == 'assistant' -%}",
  lit('<|im_start|>assistant\n'),
  '{%- if message.content -%}{{ message.content }}{%- endif -%}',
  '{%- if message.tool_calls -%}{%- for tc in message.tool_calls -%}',
  '{%- if tc.function -%}{%- set f = tc.function -%}{%- else -%}{%- set f = tc -%}{%- endif -%}',
  lit('<tool_call>{"name": "'),
  '{{ f.name }}',
  lit('", "arguments": '),
  '{%- if f.arguments is string -%}{{ f.arguments }}{%- else -%}{{ f.arguments | tojson }}{%- endif -%}',
  lit('}</tool_call>'),
  '{%- endfor -%}{%- endif -%}',
  lit('<|im_end|>\n'),
  "{%- elif message.role == 'tool' -%}",
  lit('<|im_start|>tool\n<tool_response>'),
  '{{ message.content }}',
  lit('</tool_response><|im_end|>\n'),
  '{%- else -%}',
  lit('<|im_start|>'),
  '{{ message.role }}',
  lit('\n'),
  '{{ message.content }}',
  lit('<|im_end|>\n'),
  '{%- endif -%}',
  '{%- endfor -%}',
  '{%- if add_generation_prompt -%}',
  lit('<|im_start|>assistant\n'),
  '{%- endif -%}',
].join('')

/** The solo agent's `done` tool, as actors/rollout/tau2/agent.ts sends it. */
export const DONE_TOOL: OpenAITool = {
  type: 'function',
  function: {
    name: 'done',
    description: 'Call this when the task is complete (or cannot be completed).',
    parameters: { type: 'object', properties: {}, required: [], additionalProperties: false },
  },
}

/** The tools the solo agent sends for the domain (domain tools, then `done`). */
export function workloadTools(): OpenAITool[] {
  const env = new Environment(loadDomainData(DOMAINS_DIR, DOMAIN), { solo: true })
  return [...env.agentToolSchemas(), DONE_TOOL]
}

/** The exact text of one tool call as the model writes it (Python json.dumps spacing, as Qwen writes). */
export function toolCallText(name: string, args: Record<string, unknown>): string {
  return `<tool_call>${pyJson({ name, arguments: args })}</tool_call>`
}

function pyJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(pyJson).join(', ')}]`
  if (v && typeof v === 'object')
    return `{${Object.entries(v)
      .map(([k, x]) => `${JSON.stringify(k)}: ${pyJson(x)}`)
      .join(', ')}}`
  return JSON.stringify(v)
}

/** Every call of the tools whose parameters are all enums (the cartesian product of the enums). */
export function enumerableCalls(tools: OpenAITool[]): string[] {
  const out: string[] = []
  for (const t of tools) {
    const props = Object.entries(t.function.parameters.properties) as [string, { enum?: unknown[] }][]
    if (props.some(([, s]) => !s.enum)) continue
    let combos: Record<string, unknown>[] = [{}]
    for (const [k, s] of props) combos = combos.flatMap((c) => (s.enum ?? []).map((v) => ({ ...c, [k]: v })))
    for (const args of combos) out.push(...toolCallSpellings(t.function.name, args))
  }
  return out
}

/**
 * The spellings of one call that get a token each (all parse to the same call): as Qwen-style models
 * write it (json.dumps spacing, also with Qwen's newlines inside the tags), as this chat template renders
 * an earlier call (the agent sends arguments as compact JSON), and fully compact.
 */
export function toolCallSpellings(name: string, args: Record<string, unknown>): string[] {
  const all = [
    toolCallText(name, args),
    `<tool_call>\n${pyJson({ name, arguments: args })}\n</tool_call>`,
    `<tool_call>{"name": ${JSON.stringify(name)}, "arguments": ${JSON.stringify(args)}}</tool_call>`,
    `<tool_call>${JSON.stringify({ name, arguments: args })}</tool_call>`,
  ]
  return [...new Set(all)]
}

/** The workload's fixed phrases: the solo system prompt up to the ticket, each tool schema line. */
export function workloadPhrases(tools: OpenAITool[]): string[] {
  const data = loadDomainData(DOMAINS_DIR, DOMAIN)
  const system = agentSystemPrompt(data.policySolo ?? data.policy, true, '')
  const cut = system.indexOf('<ticket>')
  const toolLine = new Template('{{ t | tojson }}')
  return [
    system.slice(0, cut + '<ticket>'.length),
    '</ticket>',
    TOOLS_HEADER,
    ...tools.map((t) => toolLine.render({ t })),
  ]
}

/** GPT-2's pre-tokenizer split (what the ByteLevel pre-tokenizer with use_regex applies). */
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu

/** The texts that differ between episodes of the workload (tickets, every tool result) and the role names. */
export function workloadCorpus(): string[] {
  const data = loadDomainData(DOMAINS_DIR, DOMAIN)
  const out: string[] = []
  for (const task of loadTasks(DOMAINS_DIR, DOMAIN, 'all')) {
    // the role names every episode repeats
    out.push('system\n', 'assistant\n', 'tool\n')
    if (task.ticket) out.push(task.ticket)
    const env = new Environment(data, { solo: true })
    env.setState(task.initial_state, [], true)
    for (const t of env.agentToolSchemas()) {
      const props = Object.entries(t.function.parameters.properties) as [string, { enum?: unknown[] }][]
      if (props.length !== 1 || !props[0][1].enum) continue
      for (const v of props[0][1].enum)
        out.push(env.getResponse({ id: 'c', name: t.function.name, arguments: { [props[0][0]]: v } }).content)
    }
  }
  return out
}

/**
 * Standard byte-level BPE training: split with the GPT-2 pattern, map bytes to the byte alphabet, then
 * repeatedly merge the most frequent adjacent pair (ties: the lexicographically smallest) `n` times.
 */
export function trainMerges(texts: string[], alphabet: string[], n: number): [string, string][] {
  const counts = new Map<string, number>()
  for (const text of texts)
    for (const m of text.matchAll(GPT2_SPLIT)) {
      const w = [...Buffer.from(m[0], 'utf8')].map((b) => alphabet[b]).join('\u0000')
      counts.set(w, (counts.get(w) ?? 0) + 1)
    }
  let words = [...counts].map(([w, c]) => ({ syms: w.split('\u0000'), c }))
  const merges: [string, string][] = []
  while (merges.length < n) {
    const pairs = new Map<string, number>()
    for (const { syms, c } of words)
      for (let i = 0; i + 1 < syms.length; i++) {
        const k = `${syms[i]}\u0000${syms[i + 1]}`
        pairs.set(k, (pairs.get(k) ?? 0) + c)
      }
    let best: string | undefined
    let bestCount = 1
    for (const [k, c] of pairs)
      if (c > bestCount || (c === bestCount && best !== undefined && k < best)) {
        best = k
        bestCount = c
      }
    if (best === undefined) break
    const [a, b] = best.split('\u0000') as [string, string]
    merges.push([a, b])
    words = words.map(({ syms, c }) => {
      const out: string[] = []
      for (let i = 0; i < syms.length; i++) {
        if (i + 1 < syms.length && syms[i] === a && syms[i + 1] === b) {
          out.push(a + b)
          i++
        } else out.push(syms[i])
      }
      return { syms: out, c }
    })
  }
  return merges
}

/** GPT-2's byte → printable character map (the ByteLevel pre-tokenizer's alphabet). */
function byteAlphabet(): string[] {
  const printable: number[] = []
  for (let b = 33; b <= 126; b++) printable.push(b)
  for (let b = 161; b <= 172; b++) printable.push(b)
  for (let b = 174; b <= 255; b++) printable.push(b)
  const out: string[] = new Array(256)
  let extra = 0
  for (let b = 0; b < 256; b++) out[b] = String.fromCodePoint(printable.includes(b) ? b : 256 + extra++)
  return out
}

export interface QuickstartFiles {
  'tokenizer.json': Record<string, unknown>
  'tokenizer_config.json': Record<string, unknown>
  'generation_config.json': Record<string, unknown>
  'config.json': Record<string, unknown>
}

/** Everything this folder holds, as objects (deterministic). */
export function buildFiles(): QuickstartFiles {
  const tools = workloadTools()
  const alphabet = byteAlphabet()
  const vocab: Record<string, number> = {}
  alphabet.forEach((c, b) => {
    vocab[c] = b
  })
  const merges = trainMerges(workloadCorpus(), alphabet, MERGES)
  for (const [a, b] of merges) vocab[a + b] = Object.keys(vocab).length
  const base = Object.keys(vocab).length
  const added: { content: string; special: boolean }[] = [
    ...SPECIAL_TOKENS.map((content) => ({ content, special: true })),
    ...TOOL_TAGS.map((content) => ({ content, special: false })),
    ...workloadPhrases(tools).map((content) => ({ content, special: false })),
    ...enumerableCalls(tools).map((content) => ({ content, special: false })),
  ]
  const seen = new Set<string>()
  for (const a of added) {
    if (seen.has(a.content)) throw new Error(`duplicate added token ${JSON.stringify(a.content)}`)
    seen.add(a.content)
  }
  const addedTokens = added.map((a, i) => ({
    id: base + i,
    content: a.content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: a.special,
  }))
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: true }
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: null,
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: merges.map(([a, b]) => `${a} ${b}`),
    },
  }
  const idOf = (t: string) => addedTokens.find((a) => a.content === t)!.id
  const tokenizerConfig = {
    add_bos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: Object.fromEntries(addedTokens.map(({ id, ...rest }) => [String(id), rest])),
    bos_token: null,
    eos_token: '<|im_end|>',
    pad_token: '<|endoftext|>',
    unk_token: null,
    chat_template: CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    errors: 'replace',
    model_max_length: MODEL_DIMS.max_position_embeddings,
    split_special_tokens: false,
    tokenizer_class: 'PreTrainedTokenizerFast',
  }
  const eos = idOf('<|im_end|>')
  const config = {
    architectures: ['Qwen3ForCausalLM'],
    model_type: 'qwen3',
    vocab_size: base + addedTokens.length,
    ...MODEL_DIMS,
    hidden_act: 'silu',
    rms_norm_eps: 1e-6,
    rope_scaling: null,
    tie_word_embeddings: true,
    attention_bias: false,
    attention_dropout: 0.0,
    use_sliding_window: false,
    bos_token_id: idOf('<|endoftext|>'),
    eos_token_id: eos,
    pad_token_id: idOf('<|endoftext|>'),
    torch_dtype: 'float32',
  }
  const generation = {
    bos_token_id: config.bos_token_id,
    eos_token_id: [eos],
    pad_token_id: config.pad_token_id,
  }
  return {
    'tokenizer.json': tokenizer,
    'tokenizer_config.json': tokenizerConfig,
    'generation_config.json': generation,
    'config.json': config,
  }
}

/** The file text as written (2-space JSON, trailing newline). */
export function fileText(obj: Record<string, unknown>): string {
  return `${JSON.stringify(obj, null, 2)}\n`
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const files = buildFiles()
  for (const [name, obj] of Object.entries(files)) writeFileSync(join(MODEL_DIR, name), fileText(obj))
  const cfg = files['config.json'] as { vocab_size: number }
  process.stdout.write(`wrote ${Object.keys(files).join(', ')} to ${MODEL_DIR} (vocab ${cfg.vocab_size})\n`)
}
