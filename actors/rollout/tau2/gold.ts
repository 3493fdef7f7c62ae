/**
 * Gold replay: play a task's gold actions as tool calls on a live environment and build the trajectory
 * an ideal agent would leave (each action as an assistant/user tool-call message plus its tool result,
 * then one assistant message saying every `communicate_info` string). Used by tests and the bench, and
 * useful to check a data directory: a consistent task replays with zero tool errors and full reward.
 */
import type { Environment } from './environment.ts'
import type { Message, Task, ToolMessage } from './types.ts'

export interface GoldReplay {
  trajectory: Message[]
  errors: { action_id: string; name: string; content: string }[]
}

export function goldTrajectory(env: Environment, task: Task): GoldReplay {
  const history = task.initial_state?.message_history ?? []
  env.setState(task.initial_state, history, true)
  const trajectory: Message[] = structuredClone(history) as Message[]
  const errors: GoldReplay['errors'] = []
  const actions = task.evaluation_criteria?.actions ?? []
  actions.forEach((a, i) => {
    const requestor = a.requestor ?? 'assistant'
    const call = { id: `gold_${i}`, name: a.name, arguments: structuredClone(a.arguments ?? {}), requestor }
    trajectory.push({ role: requestor, content: null, tool_calls: [call] })
    const msg: ToolMessage = env.getResponse(call)
    if (msg.error) errors.push({ action_id: a.action_id, name: a.name, content: msg.content })
    trajectory.push(msg)
  })
  const infos = task.evaluation_criteria?.communicate_info ?? []
  trajectory.push({ role: 'assistant', content: infos.length ? infos.join('. ') : 'Done.' })
  return { trajectory, errors }
}
