/**
 * Home domain (project-owned, data in configs/domains/home): the lights of a small home. The quick-start
 * workload: a solo agent reads a ticket ("Turn on the kitchen light."), makes the one tool call that
 * does it, then calls `done`. Tiny on purpose, so that a randomly initialised tiny model sometimes
 * succeeds and RL has signal (see configs/models/quickstart).
 *
 * Database: `{ rooms: { <room>: { room, light: 'on' | 'off' } } }`. One agent tool, `toggle_light(room)`
 * (returns the room), no user toolkit. Reward basis DB + ENV_ASSERTION + ACTION: the home must end exactly
 * as asked, so every call on another room, or a second toggle, fails the task — success means the first
 * call was the right one, which is the signal a tiny model learns from.
 */
import { FloatRules } from '../pyjson.ts'
import { type EnvFn, p, str, type ToolDef, toolMap } from '../tools.ts'
import type { DomainModule } from './domain.ts'

/** The rooms of the home (the `room` parameter's enum: a closed set, so every call is enumerable). */
export const HOME_ROOMS = ['kitchen', 'bedroom', 'bathroom', 'office'] as const

interface Room {
  room: string
  light: 'on' | 'off'
}
interface HomeState {
  db: { rooms: Record<string, Room> }
}

const roomParam = p(str('The room', { enum: [...HOME_ROOMS] }))

const room = (s: HomeState, name: unknown): Room => {
  const r = s.db.rooms[name as string]
  if (!r) throw new Error(`Room ${name} not found`)
  return r
}

const agentTools: ToolDef<HomeState>[] = [
  {
    name: 'toggle_light',
    kind: 'write',
    description: 'Flip the light switch of a room: on becomes off, off becomes on.',
    params: { room: roomParam },
    run: (s, a) => {
      const r = room(s, a.room)
      r.light = r.light === 'on' ? 'off' : 'on'
      return r
    },
  },
]

const agentEnvFns: Record<string, EnvFn<HomeState>> = {
  /** env assertion: the room's light is in the expected state */
  assert_light: (s, a) => room(s, a.room).light === a.expected,
}

const agentToolMap = toolMap(agentTools)

export const home: DomainModule = {
  name: 'home',
  soloSupported: true,
  create(data) {
    const a: HomeState = { db: structuredClone(data.db) as HomeState['db'] }
    return {
      agent: {
        state: a,
        tools: agentToolMap,
        envFns: new Map(Object.entries(agentEnvFns)),
        db: () => a.db,
        setDb: (db) => {
          a.db = db as HomeState['db']
        },
        floats: FloatRules.none,
      },
      user: undefined,
      sync: () => {},
    }
  },
}
