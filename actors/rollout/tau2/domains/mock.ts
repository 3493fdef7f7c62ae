/**
 * Mock domain (SPEC §4.4): a tiny task tracker for tests. Agent tools over `{tasks, users}`, user tools
 * over a notifications DB; solo mode supported.
 */
import { FloatRules } from '../pyjson.ts'
import { type EnvFn, opt, p, str, type ToolDef, toolMap, transferTool } from '../tools.ts'
import type { DomainModule } from './domain.ts'

type Obj = Record<string, any>
interface AgentS {
  db: { tasks: Record<string, Obj>; users: Record<string, Obj> }
}
interface UserS {
  db: { notifications: Record<string, Obj> }
}

const task = (s: AgentS, id: string): Obj => {
  const t = s.db.tasks[id]
  if (!t) throw new Error(`Task ${id} not found`)
  return t
}
const notification = (s: UserS, id: string): Obj => {
  const n = s.db.notifications[id]
  if (!n) throw new Error(`Notification ${id} not found`)
  return n
}

const agentTools: ToolDef<AgentS>[] = [
  {
    name: 'create_task',
    kind: 'write',
    description: 'Create a new task for a user.',
    params: {
      user_id: p(str('The ID of the user creating the task')),
      title: p(str('The title of the task')),
      description: opt({
        anyOf: [{ type: 'string' }, { type: 'null' }],
        description: 'Optional description of the task',
      }),
    },
    run: (s, a) => {
      const u = s.db.users[a.user_id as string]
      if (!u) throw new Error(`User ${a.user_id} not found`)
      const id = `task_${Object.keys(s.db.tasks).length + 1}`
      const t = { task_id: id, title: a.title, description: a.description ?? null, status: 'pending' }
      s.db.tasks[id] = t
      u.tasks.push(id)
      return t
    },
  },
  {
    name: 'get_users',
    kind: 'read',
    description: 'Get all users in the database.',
    params: {},
    run: (s) => Object.values(s.db.users),
  },
  {
    name: 'update_task_status',
    kind: 'write',
    description: 'Update the status of a task.',
    params: {
      task_id: p(str('The ID of the task to update')),
      status: p(str('The new status of the task', { enum: ['pending', 'completed'] })),
    },
    run: (s, a) => {
      const t = task(s, a.task_id as string)
      t.status = a.status
      return t
    },
  },
  transferTool<AgentS>(
    "Transfer the user to a human agent, with a summary of the user's issue. Only transfer if the user explicitly asks for a human agent, or if the user's issue cannot be resolved with the available tools.",
  ),
]

const agentEnvFns: Record<string, EnvFn<AgentS>> = {
  assert_number_of_tasks: (s, a) => {
    const u = s.db.users[a.user_id as string]
    if (!u) throw new Error(`User ${a.user_id} not found`)
    return u.tasks.length === a.expected_number
  },
  assert_task_status: (s, a) => task(s, a.task_id as string).status === a.expected_status,
}

const userTools: ToolDef<UserS>[] = [
  {
    name: 'check_notifications',
    kind: 'read',
    description: 'Check the notifications on your device.',
    params: {},
    run: (s) => Object.values(s.db.notifications),
  },
  {
    name: 'dismiss_notification',
    kind: 'write',
    description: 'Dismiss (mark as read) a notification on your device.',
    params: { notification_id: p(str('The ID of the notification to dismiss')) },
    run: (s, a) => {
      const n = notification(s, a.notification_id as string)
      n.status = 'read'
      return n
    },
  },
]

const userEnvFns: Record<string, EnvFn<UserS>> = {
  add_notification: (s, a) => {
    const id = a.notification_id as string
    const n = { notification_id: id, message: a.message, status: 'unread', task_id: a.task_id ?? null }
    s.db.notifications[id] = n
    return n
  },
  assert_notification_status: (s, a) =>
    notification(s, a.notification_id as string).status === a.expected_status,
}

function normalizeAgent(db: Record<string, any>) {
  for (const t of Object.values(db.tasks ?? {}) as Obj[]) if (!('description' in t)) t.description = null
  return db
}
function normalizeUser(db: Record<string, any>) {
  for (const n of Object.values(db.notifications ?? {}) as Obj[]) if (!('task_id' in n)) n.task_id = null
  return db
}

const agentToolMap = toolMap(agentTools)
const userToolMap = toolMap(userTools)

export const mock: DomainModule = {
  name: 'mock',
  soloSupported: true,
  create(data) {
    const a: AgentS = { db: normalizeAgent(structuredClone(data.db)) as AgentS['db'] }
    const u: UserS = {
      db: normalizeUser(structuredClone(data.userDb ?? { notifications: {} })) as UserS['db'],
    }
    return {
      agent: {
        state: a,
        tools: agentToolMap,
        envFns: new Map(Object.entries(agentEnvFns)),
        db: () => a.db,
        setDb: (db) => {
          a.db = normalizeAgent(db) as AgentS['db']
        },
        floats: FloatRules.none,
      },
      user: {
        state: u,
        tools: userToolMap,
        envFns: new Map(Object.entries(userEnvFns)),
        db: () => u.db,
        setDb: (db) => {
          u.db = normalizeUser(db) as UserS['db']
        },
        floats: FloatRules.none,
      },
      sync: () => {},
    }
  },
}
