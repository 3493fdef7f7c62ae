/**
 * The tau2 agent: an LLM behind an OpenAI-compatible endpoint (in training, a proxy session), reached
 * with the official `openai` client. It sees the policy in its system prompt, the conversation as
 * chat messages, and the domain tools; it answers with text or tool calls (never both, per prompt).
 * Solo mode adds a `done` tool, forces tool use, and turns `done` into `###STOP###`.
 */
import type OpenAI from 'openai'
import { fail } from '../../../runtime/errors.ts'
import type { OpenAITool } from './tools.ts'
import type { AssistantMessage, Message, ToolCall } from './types.ts'

export const AGENT_INSTRUCTION = [
  'You are a customer service agent that helps the user according to the <policy> provided below.',
  'In each turn you can either:',
  '- Send a message to the user.',
  '- Make a tool call.',
  'You cannot do both at the same time.',
  '',
  'Try to be helpful and always follow the policy. Always make sure you generate valid JSON only.',
].join('\n')

export const SOLO_INSTRUCTION = [
  'You are a customer service agent working alone on the ticket below, according to the <policy> provided below.',
  'You cannot talk to the customer: plan the tool calls that resolve the ticket and make them one at a time.',
  'The tools include the ones that act on the customer device.',
  'When the ticket is resolved (or cannot be resolved), call the `done` tool once and nothing else.',
  '',
  'Always follow the policy. Always make sure you generate valid JSON only.',
].join('\n')

export const STOP = '###STOP###'

const DONE_TOOL: OpenAITool = {
  type: 'function',
  function: {
    name: 'done',
    description: 'Call this when the task is complete (or cannot be completed).',
    parameters: { type: 'object', properties: {}, required: [], additionalProperties: false },
  },
}

export function agentSystemPrompt(policy: string, solo: boolean, ticket?: string | null): string {
  if (!solo) return `<instructions>\n${AGENT_INSTRUCTION}\n</instructions>\n<policy>\n${policy}\n</policy>`
  return `<instructions>\n${SOLO_INSTRUCTION}\n</instructions>\n<policy>\n${policy}\n</policy>\n<ticket>${ticket ?? ''}</ticket>`
}

type ChatMessage = OpenAI.Chat.Completions.ChatCompletionMessageParam

/**
 * Run one request under a child of the episode's signal, unlinking it afterwards: the openai client
 * leaves a listener on the signal it is given, which would pile up over a long episode.
 */
export async function withRequestSignal<T>(
  signal: AbortSignal | undefined,
  fn: (s?: AbortSignal) => Promise<T>,
): Promise<T> {
  if (!signal) return fn(undefined)
  const ac = new AbortController()
  const onAbort = () => ac.abort(signal.reason)
  if (signal.aborted) ac.abort(signal.reason)
  else signal.addEventListener('abort', onAbort, { once: true })
  try {
    return await fn(ac.signal)
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}

/** The agent's view of a trajectory as chat messages. */
export function agentView(system: string, trajectory: readonly Message[]): ChatMessage[] {
  const out: ChatMessage[] = [{ role: 'system', content: system }]
  for (const m of trajectory) {
    if (m.role === 'assistant') {
      if (m.tool_calls?.length)
        out.push({
          role: 'assistant',
          content: m.content ?? null,
          tool_calls: m.tool_calls.map((c) => ({
            id: c.id,
            type: 'function' as const,
            function: {
              name: c.name,
              arguments: typeof c.arguments === 'string' ? c.arguments : JSON.stringify(c.arguments),
            },
          })),
        })
      else out.push({ role: 'assistant', content: m.content ?? '' })
    } else if (m.role === 'user') {
      if (m.content && !m.tool_calls?.length) out.push({ role: 'user', content: m.content })
    } else if (m.role === 'tool' && (m.requestor ?? 'assistant') === 'assistant')
      out.push({ role: 'tool', tool_call_id: m.id, content: m.content })
  }
  return out
}

/** Parse the tool calls of a completion; unparseable arguments stay a string (the tool then errors). */
export function parseToolCalls(
  calls: OpenAI.Chat.Completions.ChatCompletionMessageToolCall[] | undefined,
  requestor: 'assistant' | 'user',
): ToolCall[] {
  const out: ToolCall[] = []
  for (const c of calls ?? []) {
    if (c.type !== 'function') continue
    let args: unknown
    try {
      args = c.function.arguments ? JSON.parse(c.function.arguments) : {}
    } catch {
      args = c.function.arguments
    }
    out.push({ id: c.id, name: c.function.name, arguments: args as Record<string, unknown>, requestor })
  }
  return out
}

export interface AgentOptions {
  client: OpenAI
  model: string
  policy: string
  tools: OpenAITool[]
  solo: boolean
  ticket?: string | null
  /** extra request fields (temperature, max_tokens, …) */
  args?: Record<string, unknown>
}

export class LLMAgent {
  readonly system: string
  constructor(private readonly o: AgentOptions) {
    this.system = agentSystemPrompt(o.policy, o.solo, o.ticket)
  }

  /** Next assistant message; a solo `done` call becomes `###STOP###`. Rejects with ENV_ERR_AGENT_LLM. */
  async generate(trajectory: readonly Message[], signal?: AbortSignal): Promise<AssistantMessage> {
    const tools = this.o.solo ? [...this.o.tools, DONE_TOOL] : this.o.tools
    let res: OpenAI.Chat.Completions.ChatCompletion
    try {
      res = await withRequestSignal(signal, (rs) =>
        this.o.client.chat.completions.create(
          {
            ...(this.o.args ?? {}),
            model: this.o.model,
            messages: agentView(this.system, trajectory),
            ...(tools.length ? { tools, tool_choice: this.o.solo ? 'required' : 'auto' } : {}),
          } as OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming,
          { signal: rs },
        ),
      )
    } catch (err) {
      if (signal?.aborted) throw err
      throw fail('ENV_ERR_AGENT_LLM', (err as Error).message, undefined, err)
    }
    const msg = res.choices?.[0]?.message
    if (!msg) throw fail('ENV_ERR_AGENT_LLM', 'completion has no choices')
    const calls = parseToolCalls(msg.tool_calls, 'assistant')
    if (this.o.solo && calls.some((c) => c.name === 'done')) return { role: 'assistant', content: STOP }
    return { role: 'assistant', content: msg.content ?? null, tool_calls: calls.length ? calls : null }
  }
}
