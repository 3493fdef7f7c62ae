import { fileURLToPath } from 'node:url'
import { expect } from 'chai'
import { validate } from '../../actors/rollout/tau2/config.ts'
import { type DomainData, loadDomainData, loadTasks } from '../../actors/rollout/tau2/data.ts'
import { HOME_ROOMS } from '../../actors/rollout/tau2/domains/home.ts'
import { EnvPool } from '../../actors/rollout/tau2/env-pool.ts'
import { Environment } from '../../actors/rollout/tau2/environment.ts'
import { evaluateEpisode } from '../../actors/rollout/tau2/evaluation.ts'
import { goldTrajectory } from '../../actors/rollout/tau2/gold.ts'
import type { Message } from '../../actors/rollout/tau2/types.ts'
import { type Tau2EpisodeInfo, Tau2Workflow } from '../../actors/rollout/tau2/workflow.ts'
import { workloadTools } from '../../configs/models/quickstart/build.ts'
import { silentLogger } from '../../runtime/log.ts'
import {
  type Script,
  type ScriptedServer,
  startScriptedServer,
  turns,
} from '../fixtures/tau2/scripted-openai.ts'

/** The project-owned domain data (configs/domains, tau2's flat layout). */
const DOMAINS_DIR = fileURLToPath(new URL('../../configs/domains', import.meta.url))
const log = silentLogger()

/** An assistant turn of tool calls followed by their tool results, as the orchestrator records them. */
function callTurn(
  env: Environment,
  calls: { name: string; arguments: Record<string, unknown> }[],
  n: number,
) {
  const tc = calls.map((c, i) => ({ id: `c${n}_${i}`, ...c, requestor: 'assistant' as const }))
  const out: Message[] = [{ role: 'assistant', content: null, tool_calls: tc }]
  for (const c of tc) out.push(env.getResponse(c))
  return out
}

describe('home domain (quick-start workload)', () => {
  let data: DomainData

  before(() => {
    data = loadDomainData(DOMAINS_DIR, 'home')
  })

  describe('when every task is replayed from its gold actions', () => {
    it('should give no tool errors and reward 1.0 on every task of the train split', () => {
      const tasks = loadTasks(DOMAINS_DIR, 'home', 'train')
      expect(tasks).to.have.length(2 * HOME_ROOMS.length)
      for (const task of tasks) {
        const g = goldTrajectory(new Environment(data, { solo: true }), task)
        expect(g.errors, task.id).to.deep.equal([])
        const r = evaluateEpisode(data, task, g.trajectory, 'agent_stop', true)
        expect(r.basis, task.id).to.have.members(['DB', 'ENV_ASSERTION', 'ACTION'])
        expect(r.replayMismatches, task.id).to.deep.equal([])
        expect(r.complete, task.id).to.equal(true)
        expect(r.reward, task.id).to.equal(1)
      }
    })
  })

  describe('when an agent acts on a task', () => {
    const task = () => loadTasks(DOMAINS_DIR, 'home', 'all').find((t) => t.id === 'turn_on_kitchen')!
    function episode(turnsOfCalls: { name: string; arguments: Record<string, unknown> }[][]) {
      const t = task()
      const env = new Environment(data, { solo: true })
      env.setState(t.initial_state, [], true)
      const traj = turnsOfCalls.flatMap((calls, i) => callTurn(env, calls, i))
      return evaluateEpisode(data, t, traj, 'agent_stop', true)
    }

    it('should start from the task state (the kitchen light off, the office light on)', () => {
      const env = new Environment(data, { solo: true })
      env.setState(task().initial_state, [], true)
      const rooms = (env.domain.agent.db() as { rooms: Record<string, { light: string }> }).rooms
      expect(rooms.kitchen.light).to.equal('off')
      expect(rooms.office.light).to.equal('on')
    })

    it('should flip the light with toggle_light and reward the one right call', () => {
      const r = episode([[{ name: 'toggle_light', arguments: { room: 'kitchen' } }]])
      expect(r.reward).to.equal(1)
    })

    it('should give 0 for the wrong room', () => {
      const r = episode([[{ name: 'toggle_light', arguments: { room: 'bedroom' } }]])
      expect(r.reward).to.equal(0)
      expect(r.failed).to.have.members(['DB', 'ENV_ASSERTION', 'ACTION'])
    })

    it('should give 0 when the right call comes with a call on another room', () => {
      const r = episode([
        [{ name: 'toggle_light', arguments: { room: 'office' } }],
        [{ name: 'toggle_light', arguments: { room: 'kitchen' } }],
      ])
      expect(r.reward).to.equal(0)
      expect(r.failed).to.deep.equal(['DB'])
    })

    it('should give 0 when the right call is undone by a second toggle', () => {
      const r = episode([
        [{ name: 'toggle_light', arguments: { room: 'kitchen' } }],
        [{ name: 'toggle_light', arguments: { room: 'kitchen' } }],
      ])
      expect(r.reward).to.equal(0)
      expect(r.failed).to.have.members(['DB', 'ENV_ASSERTION'])
    })

    it('should give 0 for a call on an unknown room, with a tool error', () => {
      const env = new Environment(data, { solo: true })
      const msg = env.getResponse({ id: 'x', name: 'toggle_light', arguments: { room: 'garage' } })
      expect(msg.error).to.equal(true)
      expect(msg.content).to.match(/^Error: toggle_light\(\) argument 'room'/)
    })
  })

  describe('when run solo through Tau2Workflow and the openai client', () => {
    let server: ScriptedServer
    let pool: EnvPool
    let agent: Script

    beforeEach(async () => {
      server = await startScriptedServer({
        agent: (r, n) => agent(r, n),
        user: () => ({ status: 500, message: 'no user simulator in solo mode' }),
      })
      pool = new EnvPool({ workers: 0, log })
    })
    afterEach(async () => {
      await pool.destroy()
      await server.close()
    })

    async function run(taskId: string) {
      const cfg = validate({ domain: 'home', data_dir: DOMAINS_DIR, solo_mode: true, max_steps: 6 })
      const res = await new Tau2Workflow(cfg, pool).run(taskId, {
        baseURL: server.url,
        apiKey: 'key',
        model: 'agent',
        signal: new AbortController().signal,
        log,
      })
      return { reward: res.reward, info: res.info as Tau2EpisodeInfo }
    }

    it('should reward 1 for the right call then done, with the ticket in the system prompt', async () => {
      agent = turns(
        { tool_calls: [{ name: 'toggle_light', arguments: { room: 'bathroom' } }] },
        { tool_calls: [{ name: 'done', arguments: {} }] },
      )
      const { reward, info } = await run('turn_off_bathroom')
      expect(info.terminationReason).to.equal('agent_stop')
      expect(reward).to.equal(1)
      const first = server.requests[0].body
      expect(first.messages[0].content).to.contain('<ticket>Turn off the bathroom light.</ticket>')
      expect(first.tools?.map((t) => t.function.name)).to.have.members(['toggle_light', 'done'])
      // the quick-start tokenizer's tool phrases are built from these exact schemas
      expect(first.tools).to.deep.equal(workloadTools())
    })

    it('should reward 0 when the agent runs out of steps before done', async () => {
      agent = turns(
        { tool_calls: [{ name: 'toggle_light', arguments: { room: 'bathroom' } }] },
        { tool_calls: [{ name: 'toggle_light', arguments: { room: 'office' } }] },
        { tool_calls: [{ name: 'toggle_light', arguments: { room: 'office' } }] },
      )
      const { reward, info } = await run('turn_off_bathroom')
      expect(info.terminationReason).to.equal('max_steps')
      expect(reward).to.equal(0)
    })
  })
})
