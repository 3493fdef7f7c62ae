/** POST {prefix}/rl/set_reward {interaction_id?, reward} and POST {prefix}/rl/end_session. */
import type { FastifyPluginAsync } from 'fastify'
import { bearer } from '../app.ts'
import { setRewardSchema } from '../openai.ts'
import type { ProxyService } from '../service.ts'

export const rlRoutes: FastifyPluginAsync<{ service: ProxyService }> = async (app, { service }) => {
  app.post<{ Params: { sid?: string }; Body: { interaction_id?: string | null; reward: number } }>(
    '/rl/set_reward',
    { schema: { body: setRewardSchema } },
    async (req) => {
      const s = service.authenticate(req.params.sid, bearer(req.headers.authorization))
      const r = await service.setReward(s.id, req.body.reward, req.body.interaction_id)
      return { ok: true, interaction_id: r.interactionId }
    },
  )
  app.post<{ Params: { sid?: string } }>('/rl/end_session', async (req) => {
    const s = service.authenticate(req.params.sid, bearer(req.headers.authorization))
    const r = await service.endSession(s.id)
    return { ok: true, session_id: s.id, completions: r.completions }
  })
}
