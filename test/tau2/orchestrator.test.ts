import { expect } from 'chai'
import { validate } from '../../actors/rollout/tau2/config.ts'
import { loadTask } from '../../actors/rollout/tau2/data.ts'
import { EnvPool } from '../../actors/rollout/tau2/env-pool.ts'
import { openEpisodes } from '../../actors/rollout/tau2/session.ts'
import type { Tau2EpisodeInfo } from '../../actors/rollout/tau2/workflow.ts'
import { Tau2Workflow } from '../../actors/rollout/tau2/workflow.ts'
import { silentLogger } from '../../runtime/log.ts'
import {
  type Script,
  type ScriptedServer,
  startScriptedServer,
  turns,
} from '../fixtures/tau2/scripted-openai.ts'
import { DATA_DIR } from './helpers.ts'

const log = silentLogger()

describe('tau2 orchestrator through the openai client', () => {
  let server: ScriptedServer
  let pool: EnvPool
  let scripts: Record<string, Script>

  beforeEach(async () => {
    scripts = {}
    server = await startScriptedServer({
      agent: (r, n) => scripts.agent(r, n),
      user: (r, n) => scripts.user(r, n),
      judge: (r, n) => scripts.judge(r, n),
    })
    pool = new EnvPool({ workers: 0, log })
  })
  afterEach(async () => {
    await pool.destroy()
    await server.close()
  })

  async function run(econfig: Record<string, unknown>, taskId: string) {
    const cfg = validate({ data_dir: DATA_DIR, user_llm_base_url: server.url, user_llm: 'user', ...econfig })
    const wf = new Tau2Workflow(cfg, pool)
    const ac = new AbortController()
    const res = await wf.run(taskId, {
      baseURL: server.url,
      apiKey: 'sess-key',
      model: 'agent',
      signal: ac.signal,
      log,
    })
    return { reward: res.reward, info: res.info as Tau2EpisodeInfo }
  }

  describe('when the user ends with ###STOP###', () => {
    it('should run agent tool calls in the environment and reward the correct final database', async () => {
      scripts.agent = turns(
        {
          tool_calls: [{ name: 'update_task_status', arguments: { task_id: 'task_1', status: 'completed' } }],
        },
        { content: 'Task task_1 is now completed.' },
      )
      scripts.user = turns({ content: 'Please mark task_1 as completed.' }, { content: 'Thanks! ###STOP###' })
      const { reward, info } = await run({ domain: 'mock' }, 'update_task_1')
      expect(info.terminationReason).to.equal('user_stop')
      expect(reward).to.equal(1)
      expect(info.evaluation?.components.DB?.reward).to.equal(1)
      const roles = info.trajectory.map((m) => m.role)
      expect(roles).to.deep.equal(['assistant', 'user', 'assistant', 'tool', 'assistant', 'user'])
      expect(info.trajectory[0].content).to.equal('Hi! How can I help you today?')
      expect(info.trajectory[3]).to.include({ role: 'tool', error: false })
      // 1. the agent saw the policy, the tools, the user's text and its tool result
      const agentReqs = server.requests.filter((r) => r.model === 'agent')
      expect(agentReqs[0].auth).to.equal('Bearer sess-key')
      expect(agentReqs[0].body.messages[0].content).to.match(
        /^<instructions>\nYou are a customer service agent/,
      )
      expect(agentReqs[0].body.tool_choice).to.equal('auto')
      expect(agentReqs[0].body.tools?.map((t) => t.function.name)).to.include('update_task_status')
      expect(agentReqs[1].body.messages.map((m) => m.role)).to.deep.equal([
        'system',
        'assistant',
        'user',
        'assistant',
        'tool',
      ])
      // 2. the user simulator saw the conversation role-flipped, with its scenario in the system prompt
      const userReqs = server.requests.filter((r) => r.model === 'user')
      expect(userReqs[0].body.messages[0].content).to.contain('<scenario>\n')
      expect(userReqs[0].body.messages.slice(1)).to.deep.equal([
        { role: 'user', content: 'Hi! How can I help you today?' },
      ])
      expect(userReqs[0].body.tools?.map((t) => t.function.name)).to.deep.equal([
        'check_notifications',
        'dismiss_notification',
      ])
    })

    it('should give reward 0 and blame the agent when the database ends wrong', async () => {
      scripts.agent = turns({ content: 'I cannot help with that.' })
      scripts.user = turns({ content: 'Please mark task_1 as completed.' }, { content: 'Fine. ###STOP###' })
      const { reward, info } = await run({ domain: 'mock' }, 'update_task_1')
      expect(info.terminationReason).to.equal('user_stop')
      expect(reward).to.equal(0)
      expect(info.evaluation?.failed).to.include('DB')
      expect(info.evaluation?.failureSource).to.equal('agent')
    })
  })

  describe('when the agent transfers to a human', () => {
    it('should end on ###TRANSFER### and match the transfer action', async () => {
      scripts.agent = turns(
        {
          tool_calls: [
            { name: 'transfer_to_human_agents', arguments: { summary: 'wants all tasks deleted' } },
          ],
        },
        { content: 'YOU ARE BEING TRANSFERRED TO A HUMAN AGENT. PLEASE HOLD ON.' },
      )
      scripts.user = turns({ content: 'Delete all my tasks.' }, { content: '###TRANSFER###' })
      const { reward, info } = await run({ domain: 'mock' }, 'impossible_task_1')
      expect(info.terminationReason).to.equal('user_stop')
      expect(info.evaluation?.components.ACTION?.reward).to.equal(1)
      expect(reward).to.equal(1)
    })
  })

  describe('when the conversation never ends', () => {
    it('should stop at max_steps with reward 0', async () => {
      scripts.agent = turns({ content: 'Could you tell me more?' })
      scripts.user = turns({ content: 'Well, it is complicated.' })
      const { reward, info } = await run({ domain: 'mock', max_steps: 5 }, 'update_task_1')
      expect(info.terminationReason).to.equal('max_steps')
      expect(info.steps).to.equal(5)
      expect(reward).to.equal(0)
      expect(info.evaluation?.failureSource).to.equal('agent')
    })
  })

  describe('when tool calls keep failing', () => {
    it('should stop at max_errors and count every failed call', async () => {
      scripts.agent = turns({ tool_calls: [{ name: 'delete_everything', arguments: {} }] })
      scripts.user = turns({ content: 'Do it.' })
      const { info } = await run({ domain: 'mock', max_errors: 3 }, 'update_task_1')
      expect(info.terminationReason).to.equal('too_many_errors')
      expect(info.numErrors).to.equal(3)
      const tools = info.trajectory.filter((m) => m.role === 'tool')
      expect(tools.map((m) => m.content)).to.deep.equal(
        Array(3).fill("Error: Tool 'delete_everything' not found."),
      )
    })

    it('should report malformed tool arguments as a tool error', async () => {
      scripts.agent = turns(
        { tool_calls: [{ name: 'update_task_status', arguments: '{"task_id": ' }] },
        { content: 'Sorry.' },
      )
      scripts.user = turns({ content: 'Do it.' }, { content: '###STOP###' })
      const { info } = await run({ domain: 'mock' }, 'update_task_1')
      const tool = info.trajectory.find((m) => m.role === 'tool')
      expect(tool).to.include({ error: true })
      expect(info.numErrors).to.equal(1)
    })
  })

  describe('when running solo', () => {
    it('should let the agent work from the ticket with agent and user tools and stop on done', async () => {
      scripts.agent = turns(
        { tool_calls: [{ name: 'check_notifications', arguments: {} }] },
        {
          tool_calls: [{ name: 'update_task_status', arguments: { task_id: 'task_1', status: 'completed' } }],
        },
        { tool_calls: [{ name: 'done', arguments: {} }] },
      )
      scripts.user = () => ({ status: 500, message: 'the user simulator must not be called in solo mode' })
      const { reward, info } = await run({ domain: 'mock', solo_mode: true }, 'update_task_1')
      expect(info.terminationReason).to.equal('agent_stop')
      expect(reward).to.equal(1)
      expect(server.requests.filter((r) => r.model === 'user')).to.have.length(0)
      const first = server.requests[0].body
      expect(first.tool_choice).to.equal('required')
      expect(first.tools?.map((t) => t.function.name)).to.include.members([
        'done',
        'check_notifications',
        'update_task_status',
      ])
      expect(first.messages[0].content).to.contain(
        '<ticket>User needs to update the status of task_1 to completed.</ticket>',
      )
      expect(info.trajectory[0].role).to.equal('assistant')
      expect(info.trajectory[1]).to.include({ role: 'tool', requestor: 'assistant', error: false })
    })

    it('should require a user simulator URL outside solo mode', () => {
      const cfg = validate({ domain: 'mock', data_dir: DATA_DIR })
      expect(() => new Tau2Workflow(cfg, pool)).to.throw(/econfig.user_llm_base_url/)
    })

    it('should refuse solo mode for airline', () => {
      expect(() => validate({ domain: 'airline', solo_mode: true })).to.throw(/solo_mode/)
    })
  })

  describe('when the user simulator or the agent endpoint fails', () => {
    it('should end with user_error and blame the user simulator', async () => {
      scripts.agent = turns({ content: 'Hello?' })
      scripts.user = () => ({ status: 500, message: 'upstream exploded' })
      const { reward, info } = await run({ domain: 'mock', user_llm_args: {} }, 'update_task_1')
      expect(info.terminationReason).to.equal('user_error')
      expect(info.error).to.include({ code: 'ENV_ERR_USER_LLM', party: 'user_simulator' })
      expect(reward).to.equal(0)
      expect(info.evaluation?.failureSource).to.equal('user_simulator')
    })

    it('should end with agent_error and blame the agent', async () => {
      scripts.agent = () => ({ status: 400, message: 'context window exceeded' })
      scripts.user = turns({ content: 'Please mark task_1 as completed.' })
      const { reward, info } = await run({ domain: 'mock' }, 'update_task_1')
      expect(info.terminationReason).to.equal('agent_error')
      expect(info.error).to.include({ code: 'ENV_ERR_AGENT_LLM', party: 'agent' })
      expect(info.error?.message).to.contain('context window exceeded')
      expect(reward).to.equal(0)
    })

    it('should end with user_error on an empty user turn', async () => {
      scripts.agent = turns({ content: 'Hello?' })
      scripts.user = turns({ content: '   ' })
      const { info } = await run({ domain: 'mock' }, 'update_task_1')
      expect(info.terminationReason).to.equal('user_error')
    })
  })

  describe('when the user simulator calls its own tools', () => {
    it('should route them to the user toolkit and show the results only to the user', async () => {
      scripts.agent = turns(
        {
          tool_calls: [{ name: 'update_task_status', arguments: { task_id: 'task_1', status: 'completed' } }],
        },
        { content: 'Done.' },
      )
      scripts.user = turns(
        { tool_calls: [{ name: 'dismiss_notification', arguments: { notification_id: 'notif_1' } }] },
        { content: 'Please complete task_1.' },
        { content: '###STOP###' },
      )
      const { reward, info } = await run({ domain: 'mock' }, 'update_task_with_user_tools')
      expect(info.terminationReason).to.equal('user_stop')
      // the env assertion (notification read) needs the user's own tool call
      expect(info.evaluation?.components.ENV_ASSERTION?.reward).to.equal(1)
      expect(info.evaluation?.components.ACTION?.reward).to.equal(1)
      // data-caused: the gold actions leave the notification unread, so the user DB can never match
      // once the assertion holds (DB and ENV_ASSERTION are both in this task's basis)
      expect(info.evaluation?.components.DB?.notes).to.deep.equal([
        'user database differs from the gold outcome',
      ])
      expect(reward).to.equal(0)
      const agentReq = server.requests.filter((r) => r.model === 'agent')[0].body
      expect(agentReq.messages.map((m) => m.role)).to.deep.equal(['system', 'assistant', 'user'])
      const userReq = server.requests.filter((r) => r.model === 'user')[1].body
      expect(userReq.messages.map((m) => m.role)).to.deep.equal(['system', 'user', 'assistant', 'tool'])
    })
  })

  describe('when the task starts from a message history', () => {
    it('should replay the history into the environment and continue from its last message', async () => {
      scripts.agent = turns(
        {
          tool_calls: [{ name: 'update_task_status', arguments: { task_id: 'task_2', status: 'completed' } }],
        },
        { content: 'task_2 is completed.' },
      )
      scripts.user = turns({ content: 'Now mark it completed.' }, { content: '###STOP###' })
      const { reward, info } = await run({ domain: 'mock' }, 'update_task_with_message_history')
      expect(info.terminationReason).to.equal('user_stop')
      expect(info.trajectory.slice(0, 4).map((m) => m.role)).to.deep.equal([
        'user',
        'assistant',
        'tool',
        'assistant',
      ])
      // the history ended with agent text, so the user simulator speaks first
      expect(server.requests[0].model).to.equal('user')
      expect(info.evaluation?.components.ACTION?.reward).to.equal(1)
      expect(reward).to.equal(1)
    })
  })

  describe('when the episode is aborted', () => {
    it('should reject and free the environment session', async () => {
      scripts.agent = turns({ content: 'Hello?' })
      scripts.user = turns({ content: 'Hi.' })
      const cfg = validate({
        domain: 'mock',
        data_dir: DATA_DIR,
        user_llm_base_url: server.url,
        user_llm: 'user',
      })
      const ac = new AbortController()
      ac.abort(new Error('stop now'))
      const before = openEpisodes()
      let err: unknown
      try {
        await new Tau2Workflow(cfg, pool).run('update_task_1', {
          baseURL: server.url,
          apiKey: 'k',
          model: 'agent',
          signal: ac.signal,
          log,
        })
      } catch (e) {
        err = e
      }
      expect((err as Error)?.message).to.equal('stop now')
      expect(openEpisodes()).to.equal(before)
    })
  })

  describe('when a task has NL assertions in its reward basis', () => {
    const retailTask = () => {
      const t = loadTask(DATA_DIR, 'retail', '19')
      expect(t.evaluation_criteria?.reward_basis).to.include('NL_ASSERTION')
      expect(t.evaluation_criteria?.nl_assertions?.length).to.be.greaterThan(0)
      return t
    }
    const goldAgent = (): Script => {
      const actions = retailTask().evaluation_criteria?.actions ?? []
      return (_r, n) =>
        n < actions.length
          ? { tool_calls: [{ name: actions[n].name, arguments: actions[n].arguments }] }
          : { content: 'All done.' }
    }

    it('should report NL_ASSERTION as not evaluated without a judge', async () => {
      scripts.agent = goldAgent()
      scripts.user = turns({ content: 'Hi, I need help.' }, { content: '###STOP###' })
      const { reward, info } = await run({ domain: 'retail' }, '19')
      expect(info.evaluation?.notEvaluated).to.deep.equal(['NL_ASSERTION'])
      expect(info.evaluation?.complete).to.equal(false)
      expect(info.evaluation?.components.NL_ASSERTION?.notes[0]).to.contain('no judge configured')
      expect(info.evaluation?.components.DB?.reward).to.equal(1)
      expect(reward).to.equal(1)
    })

    it('should ask the judge and fold its verdict into the reward', async () => {
      scripts.agent = goldAgent()
      scripts.user = turns({ content: 'Hi, I need help.' }, { content: '###STOP###' })
      scripts.judge = turns({
        content: JSON.stringify({
          results: [{ expectedOutcome: 'x', reasoning: 'no', metExpectation: false }],
        }),
      })
      const { reward, info } = await run(
        { domain: 'retail', judge_llm_base_url: server.url, judge_llm: 'judge' },
        '19',
      )
      expect(info.evaluation?.complete).to.equal(true)
      expect(info.evaluation?.failed).to.deep.equal(['NL_ASSERTION'])
      expect(reward).to.equal(0)
      const judgeReq = server.requests.find((r) => r.model === 'judge')?.body
      expect(judgeReq?.messages[1].content).to.match(
        /^conversation:\nassistant: Hi! How can I help you today\?\nuser: Hi, I need help\./,
      )
      expect(judgeReq?.messages[1].content).to.contain('\n\nexpectedOutcomes:\n[')
    })

    it('should report a malformed judge answer as not evaluated', async () => {
      scripts.agent = goldAgent()
      scripts.user = turns({ content: 'Hi, I need help.' }, { content: '###STOP###' })
      scripts.judge = turns({ content: 'looks fine to me' })
      const { info } = await run(
        { domain: 'retail', judge_llm_base_url: server.url, judge_llm: 'judge' },
        '19',
      )
      expect(info.evaluation?.notEvaluated).to.deep.equal(['NL_ASSERTION'])
      expect(info.evaluation?.components.NL_ASSERTION?.notes[0]).to.contain('judge failed')
    })
  })
})
