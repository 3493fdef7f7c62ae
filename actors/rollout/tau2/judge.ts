/**
 * NL-assertion judge (SPEC §6.5): one LLM call grading each expected outcome against the conversation.
 * Reached with the `openai` client at `econfig.judge_llm_base_url`; without one, NL assertions stay
 * "not evaluated" (never passed).
 */
import type OpenAI from 'openai'
import { fail } from '../../../runtime/errors.ts'
import { withRequestSignal } from './agent.ts'
import { pyReprStrList } from './pyjson.ts'
import type { Message } from './types.ts'

export const JUDGE_SYSTEM = [
  'TASK',
  '- You will be given a list of expected outcomes and a conversation that was collected during a test case run.',
  '- The conversation is between an agent and a customer.',
  '- Your job is to evaluate whether the agent satisfies each of the expected outcomes.',
  '- Grade each expected outcome individually.',
  '',
  'FORMAT',
  '- Your response should be a JSON object with the following fields:',
  '- `reasoning`: a short explanation for your classification',
  '- `metExpectation`: `true` if the agent satisfies the expected outcomes, `false` otherwise',
  '- `expectedOutcome`: repeat the expectation from the input that you are grading',
  '',
  'Example response structure:',
  '{"results": [{"expectedOutcome": "<one of the expected outcomes from the input>", "reasoning": "<reasoning>", "metExpectation": <false or true>}]}',
].join('\n')

export function judgeUserPrompt(trajectory: readonly Message[], assertions: readonly string[]): string {
  const lines = trajectory
    .filter((m) => m.role !== 'system')
    .map((m) => `${m.role}: ${m.content === null || m.content === undefined ? 'None' : m.content}`)
  return `conversation:\n${lines.join('\n')}\n\nexpectedOutcomes:\n${pyReprStrList(assertions)}`
}

export interface JudgeOptions {
  client: OpenAI
  model: string
  args?: Record<string, unknown>
}

/** Grade NL assertions; resolves `{reward, notes}`, rejects with ENV_ERR_JUDGE. */
export async function judgeNlAssertions(
  o: JudgeOptions,
  trajectory: readonly Message[],
  assertions: readonly string[],
  signal?: AbortSignal,
): Promise<{ reward: number; notes: string[] }> {
  let text: string | null | undefined
  try {
    const res = await withRequestSignal(signal, (rs) =>
      o.client.chat.completions.create(
        {
          ...(o.args ?? {}),
          model: o.model,
          messages: [
            { role: 'system', content: JUDGE_SYSTEM },
            { role: 'user', content: judgeUserPrompt(trajectory, assertions) },
          ],
        } as OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming,
        { signal: rs },
      ),
    )
    text = res.choices?.[0]?.message?.content
  } catch (err) {
    throw fail('ENV_ERR_JUDGE', (err as Error).message, undefined, err)
  }
  let parsed: { results?: { expectedOutcome?: string; reasoning?: string; metExpectation?: unknown }[] }
  try {
    const body = (text ?? '').replace(/^```(?:json)?\s*|\s*```$/g, '')
    parsed = JSON.parse(body)
  } catch {
    throw fail('ENV_ERR_JUDGE', `answer is not JSON: ${(text ?? '').slice(0, 200)}`)
  }
  const results = parsed.results
  if (
    !Array.isArray(results) ||
    results.length === 0 ||
    results.some((r) => typeof r?.metExpectation !== 'boolean')
  )
    throw fail(
      'ENV_ERR_JUDGE',
      `answer lacks results[].metExpectation booleans: ${(text ?? '').slice(0, 200)}`,
    )
  const failed = results.filter((r) => !r.metExpectation)
  return {
    reward: failed.length ? 0 : 1,
    notes: failed.map((r) => `not met: ${r.expectedOutcome ?? '?'} (${r.reasoning ?? ''})`),
  }
}
