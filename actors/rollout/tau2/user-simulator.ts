/**
 * The user simulator: an LLM at `econfig.user_llm_base_url` playing the customer. System prompt =
 * simulation guidelines + `<scenario>` (the task's user scenario). It sees the conversation role-flipped
 * (its own turns as `assistant`, the agent's text as `user`, its own tool results as `tool`) and may call
 * the domain's user tools (telecom, mock). It ends the episode with ###STOP###, ###TRANSFER### or
 * ###OUT-OF-SCOPE###.
 */
import type OpenAI from 'openai'
import { fail } from '../../../runtime/errors.ts'
import { parseToolCalls, withRequestSignal } from './agent.ts'
import type { OpenAITool } from './tools.ts'
import { type Message, renderUserScenario, type Task, type UserMessage } from './types.ts'

export const USER_STOP_TOKENS = ['###STOP###', '###TRANSFER###', '###OUT-OF-SCOPE###'] as const

export function userSystemPrompt(guidelines: string, task: Task, persona = ''): string {
  const g = guidelines.replace('<PERSONA_GUIDELINES>', persona)
  return `${g}\n\n<scenario>\n${renderUserScenario(task.user_scenario)}\n</scenario>`
}

type ChatMessage = OpenAI.Chat.Completions.ChatCompletionMessageParam

/** The simulator's role-flipped view of a trajectory. */
export function userView(system: string, trajectory: readonly Message[]): ChatMessage[] {
  const out: ChatMessage[] = [{ role: 'system', content: system }]
  for (const m of trajectory) {
    if (m.role === 'user') {
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
    } else if (m.role === 'assistant') {
      if (m.content && !m.tool_calls?.length) out.push({ role: 'user', content: m.content })
    } else if (m.role === 'tool' && m.requestor === 'user')
      out.push({ role: 'tool', tool_call_id: m.id, content: m.content })
  }
  return out
}

export function isUserStop(m: UserMessage): boolean {
  return typeof m.content === 'string' && USER_STOP_TOKENS.some((t) => (m.content as string).includes(t))
}

export interface UserSimOptions {
  client: OpenAI
  model: string
  guidelines: string
  task: Task
  tools: OpenAITool[]
  args?: Record<string, unknown>
}

export class UserSimulator {
  readonly system: string
  constructor(private readonly o: UserSimOptions) {
    this.system = userSystemPrompt(o.guidelines, o.task)
  }

  /** Next user message. Rejects with ENV_ERR_USER_LLM on a failed request or an empty turn. */
  async generate(trajectory: readonly Message[], signal?: AbortSignal): Promise<UserMessage> {
    let res: OpenAI.Chat.Completions.ChatCompletion
    try {
      res = await withRequestSignal(signal, (rs) =>
        this.o.client.chat.completions.create(
          {
            ...(this.o.args ?? {}),
            model: this.o.model,
            messages: userView(this.system, trajectory),
            ...(this.o.tools.length ? { tools: this.o.tools, tool_choice: 'auto' } : {}),
          } as OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming,
          { signal: rs },
        ),
      )
    } catch (err) {
      if (signal?.aborted) throw err
      throw fail('ENV_ERR_USER_LLM', (err as Error).message, undefined, err)
    }
    const msg = res.choices?.[0]?.message
    if (!msg) throw fail('ENV_ERR_USER_LLM', 'completion has no choices')
    const calls = parseToolCalls(msg.tool_calls, 'user')
    const content = msg.content ?? null
    if (!calls.length && !content?.trim())
      throw fail('ENV_ERR_USER_LLM', 'empty user turn (no text, no tool call)')
    return { role: 'user', content, tool_calls: calls.length ? calls : null }
  }
}
