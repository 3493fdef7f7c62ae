/** GET /health and GET {/v1}/models. Health answers while the proxy lives, engines up or not. */
import type { FastifyPluginAsync } from 'fastify'
import type { ProxyService } from '../service.ts'

export const metaRoutes: FastifyPluginAsync<{ service: ProxyService }> = async (app, { service }) => {
  app.get('/health', async () => {
    const engines = await service.pool.health()
    return { status: 'ok', engines, ...service.stats() }
  })
  const models = async () => ({
    object: 'list',
    data: [{ id: service.config.model_name, object: 'model', created: 0, owned_by: 'proxy' }],
  })
  for (const p of ['/models', '/v1/models', '/sessions/:sid/models', '/sessions/:sid/v1/models'])
    app.get(p, models)
}
