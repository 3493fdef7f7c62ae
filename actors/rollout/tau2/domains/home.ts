/**
 * Home domain (project-owned, data in configs/domains/home): the lights of a small home. The quick-start
 * workload: a solo agent reads a ticket ("Turn on the kitchen light."), makes the one tool call that
 * does it, then calls `done`. Tiny on purpose, so that a randomly initialised tiny model sometimes
 * succeeds and RL has signal (see configs/models/quickstart).
 *
 * Database: `{ rooms: { <room>: { room, light: 'on' | 'off' } } }`. Agent tools only (`turn_on`, `turn_off`;
 * each returns the room), no user toolkit. Reward basis ENV_ASSERTION (the room ends in the asked state)
 * and ACTION (the gold call was made): calls on other rooms are not penalised, so that random
 * exploration is not cut short (the learner still has to find the one call that matters).
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

const switchTo =
  (light: Room['light']) =>
  (s: HomeState, a: Record<string, unknown>): Room => {
    const r = room(s, a.room)
    r.light = light
    return r
  }

const agentTools: ToolDef<HomeState>[] = [
  {
    name: 'turn_on',
    kind: 'write',
    description: 'Turn the light of a room on.',
    params: { room: roomParam },
    run: switchTo('on'),
  },
  {
    name: 'turn_off',
    kind: 'write',
    description: 'Turn the light of a room off.',
    params: { room: roomParam },
    run: switchTo('off'),
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
