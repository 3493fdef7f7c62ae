/**
 * tau2 data types: tasks as they appear in `tasks.json`, and the messages of a trajectory.
 * Shapes follow the tau2 data files (snake_case keys) so tasks and recorded histories load unchanged.
 */

export type Requestor = 'assistant' | 'user'

export interface ToolCall {
  id: string
  name: string
  arguments: Record<string, unknown>
  requestor?: Requestor
}

export interface SystemMessage {
  role: 'system'
  content: string
}

export interface AssistantMessage {
  role: 'assistant'
  content?: string | null
  tool_calls?: ToolCall[] | null
  turn_idx?: number | null
  timestamp?: string | null
}

export interface UserMessage {
  role: 'user'
  content?: string | null
  tool_calls?: ToolCall[] | null
  turn_idx?: number | null
  timestamp?: string | null
}

export interface ToolMessage {
  role: 'tool'
  /** the id of the tool call this answers */
  id: string
  content: string
  requestor?: Requestor
  error?: boolean
  turn_idx?: number | null
  timestamp?: string | null
}

export type Message = SystemMessage | AssistantMessage | UserMessage | ToolMessage

export type RewardType = 'DB' | 'ENV_ASSERTION' | 'NL_ASSERTION' | 'ACTION' | 'COMMUNICATE'
export const REWARD_TYPES: readonly RewardType[] = [
  'DB',
  'ENV_ASSERTION',
  'NL_ASSERTION',
  'ACTION',
  'COMMUNICATE',
]

export interface Action {
  action_id: string
  requestor?: Requestor
  name: string
  arguments: Record<string, unknown>
  info?: string | null
  compare_args?: string[] | null
}

export interface EnvFunctionCall {
  env_type: Requestor
  func_name: string
  arguments: Record<string, unknown>
}

export interface EnvAssertion extends EnvFunctionCall {
  assert_value?: boolean
  message?: string | null
}

export interface StructuredInstructions {
  domain: string
  reason_for_call: string
  known_info?: string | null
  unknown_info?: string | null
  task_instructions: string
}

export interface UserScenario {
  persona?: string | null
  instructions: string | StructuredInstructions
}

export interface InitialState {
  initialization_data?: {
    agent_data?: Record<string, unknown> | null
    user_data?: Record<string, unknown> | null
  } | null
  initialization_actions?: EnvFunctionCall[] | null
  message_history?: Message[] | null
}

export interface EvaluationCriteria {
  actions?: Action[] | null
  env_assertions?: EnvAssertion[] | null
  communicate_info?: string[] | null
  nl_assertions?: string[] | null
  reward_basis?: RewardType[] | null
}

export interface Task {
  id: string
  description?: { purpose?: string | null; relevant_policies?: string | null; notes?: string | null } | null
  user_scenario: UserScenario
  ticket?: string | null
  initial_state?: InitialState | null
  evaluation_criteria?: EvaluationCriteria | null
  user_tools?: string[] | null
  [extra: string]: unknown
}

/** Why an episode ended (tau2's TerminationReason values). */
export type TerminationReason =
  | 'agent_stop'
  | 'user_stop'
  | 'max_steps'
  | 'too_many_errors'
  | 'timeout'
  | 'agent_error'
  | 'user_error'
  | 'infrastructure_error'
  | 'env_error'

/** `str(user_scenario)` exactly as tau2 renders it for the user simulator. */
export function renderUserScenario(s: UserScenario): string {
  const indent = (t: string) =>
    t
      .split('\n')
      .map((l) => (l.trim() ? `\t${l}` : l))
      .join('\n')
  const lines: string[] = []
  if (s.persona) lines.push('Persona:', indent(s.persona))
  const ins = s.instructions
  let text: string
  if (typeof ins === 'string') text = ins
  else {
    const parts = [`Domain: ${ins.domain}`, `Reason for call:\n${indent(ins.reason_for_call)}`]
    if (ins.known_info) parts.push(`Known info:\n${indent(ins.known_info)}`)
    if (ins.unknown_info) parts.push(`Unknown info:\n${indent(ins.unknown_info)}`)
    parts.push(`Task instructions:\n${indent(ins.task_instructions)}`)
    text = parts.join('\n')
  }
  lines.push('Instructions:', indent(text))
  return lines.join('\n')
}
