import { expect } from 'chai'
import { validate } from '../../actors/rollout/tau2/config.ts'
import { EnvPool } from '../../actors/rollout/tau2/env-pool.ts'
import type { Tau2EpisodeInfo } from '../../actors/rollout/tau2/workflow.ts'
import { Tau2Workflow } from '../../actors/rollout/tau2/workflow.ts'
import { silentLogger } from '../../runtime/log.ts'
import { type ScriptedServer, startScriptedServer, turns } from '../fixtures/tau2/scripted-openai.ts'
import { DATA_DIR } from './helpers.ts'

const log = silentLogger()
const call = (task_id: string) => ({
  id: 'c',
  name: 'update_task_status',
  arguments: { task_id, status: 'completed' },
  requestor: 'assistant' as const,
})

async function rejection(p: Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await p
  } catch (err) {
    return err as { code?: string; message: string }
  }
  throw new Error('expected a rejection')
}

describe('tau2 environment pool', () => {
  describe('when running TypeScript workers', () => {
    let pool: EnvPool
    beforeEach(() => {
      pool = new EnvPool({ workers: 2, log })
    })
    afterEach(() => pool.destroy())

    it('should keep each episode on the thread that opened it', async () => {
      const eps = await Promise.all(
        [0, 1, 2, 3].map((i) => pool.open(DATA_DIR, 'mock', 'update_task_1', false, `ep${i}`)),
      )
      const threads = new Set(eps.map((e) => e.thread))
      expect(threads.size, 'episodes spread over both threads').to.equal(2)
      // state persists between ops of one episode, and episodes are independent
      const first = await pool.tools('ep0', [call('task_1')])
      expect(first[0]).to.include({ error: false })
      const again = await pool.tools('ep0', [{ ...call('task_9') }])
      expect(again[0].content).to.equal('Error: Task task_9 not found')
      for (const e of eps) {
        const r = await pool.tools(e.episodeId, [
          { id: 'g', name: 'get_users', arguments: {}, requestor: 'assistant' },
        ])
        expect(r[0].error).to.equal(false)
      }
      await Promise.all(eps.map((e) => pool.close(e.episodeId)))
      const lost = await rejection(pool.tools('ep0', [call('task_1')]))
      expect(lost.code).to.equal('ENV_ERR_EPISODE_LOST')
    })

    it('should return coded errors from the worker', async () => {
      const err = await rejection(pool.open(DATA_DIR, 'mock', 'no_such_task', false))
      expect(err.code).to.equal('ENV_ERR_UNKNOWN_TASK')
    })
  })

  describe('when a worker thread dies', () => {
    let pool: EnvPool
    beforeEach(() => {
      pool = new EnvPool({ workers: 2, log })
    })
    afterEach(() => pool.destroy())

    it('should fail only the episodes on that thread and keep serving the others', async () => {
      const eps = await Promise.all(
        [0, 1, 2, 3].map((i) => pool.open(DATA_DIR, 'mock', 'update_task_1', false, `c${i}`)),
      )
      const victim = eps[0]
      const onVictim = eps.filter((e) => e.thread === victim.thread)
      const survivors = eps.filter((e) => e.thread !== victim.thread)
      expect(survivors.length).to.be.greaterThan(0)

      // 1. the worker exits while running an op of the victim episode
      const crash = await rejection(pool.crash(victim.episodeId, 'exit'))
      expect(crash.code).to.equal('ENV_ERR_WORKER_CRASH')
      expect(crash.message).to.contain(victim.episodeId)
      // 2. every episode that lived on that thread is lost, with a clear error
      for (const e of onVictim) {
        const err = await rejection(pool.tools(e.episodeId, [call('task_1')]))
        expect(err.code, e.episodeId).to.equal('ENV_ERR_EPISODE_LOST')
      }
      // 3. episodes on the other thread carry on with their state
      for (const e of survivors) {
        const r = await pool.tools(e.episodeId, [call('task_1')])
        expect(r[0]).to.include({ error: false })
      }
      // 4. the pool replaced the thread and serves new episodes
      const fresh = await Promise.all(
        [0, 1, 2].map((i) => pool.open(DATA_DIR, 'mock', 'update_task_1', false, `n${i}`)),
      )
      for (const e of fresh)
        expect((await pool.tools(e.episodeId, [call('task_1')]))[0].error).to.equal(false)
    })

    it('should turn an exception inside a worker op into a coded error for that episode only', async () => {
      const a = await pool.open(DATA_DIR, 'mock', 'update_task_1', false, 'a')
      const err = await rejection(pool.crash(a.episodeId, 'throw'))
      expect(err.message).to.contain('simulated worker fault')
      expect((await pool.tools(a.episodeId, [call('task_1')]))[0].error).to.equal(false)
    })
  })

  describe('when whole episodes run through workers', () => {
    let server: ScriptedServer
    let pool: EnvPool
    beforeEach(async () => {
      server = await startScriptedServer({
        agent: turns(
          {
            tool_calls: [
              { name: 'update_task_status', arguments: { task_id: 'task_1', status: 'completed' } },
            ],
          },
          { content: 'Done.' },
        ),
        user: turns({ content: 'Complete task_1 please.' }, { content: '###STOP###' }),
      })
      pool = new EnvPool({ workers: 2, log })
    })
    afterEach(async () => {
      await pool.destroy()
      await server.close()
    })

    it('should run an episode with its environment in a worker thread and reward it', async () => {
      const cfg = validate({
        domain: 'mock',
        data_dir: DATA_DIR,
        user_llm_base_url: server.url,
        user_llm: 'user',
      })
      const wf = new Tau2Workflow(cfg, pool)
      const ctx = {
        baseURL: server.url,
        apiKey: 'k',
        model: 'agent',
        signal: new AbortController().signal,
        log,
      }
      const res = await wf.run('update_task_1', ctx)
      expect(res.reward).to.equal(1)
      expect((res.info as Tau2EpisodeInfo).terminationReason).to.equal('user_stop')
    })
  })
})
