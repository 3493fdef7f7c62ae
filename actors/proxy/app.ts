/**
 * The proxy's HTTP face: a fastify app over a ProxyService. OpenAI-compatible routes are served under
 * four prefixes, so both `baseURL = <proxy>/v1` (key-only) and the session's own
 * `baseURL = <proxy>/sessions/<id>/v1` work:
 *
 *   POST {prefix}/chat/completions   POST {prefix}/completions   GET {prefix}/models
 *   POST {prefix}/rl/set_reward      POST {prefix}/rl/end_session
 *   GET  /health
 *   prefixes: '' · /v1 · /sessions/:sid · /sessions/:sid/v1
 *
 * Every error leaves in OpenAI's shape, `{error: {message, type, param, code}}`, with the catalogue code
 * as `code` and the catalogue status as the HTTP status.
 */
import { hostname } from 'node:os'
import Fastify, { type FastifyInstance } from 'fastify'
import { type CodedError, catalogue, fail, isErrCode } from '../../runtime/errors.ts'
import { chatRoutes } from './routes/chat.ts'
import { completionRoutes } from './routes/completions.ts'
import { metaRoutes } from './routes/meta.ts'
import { rlRoutes } from './routes/rl.ts'
import type { ProxyService } from './service.ts'

export const PREFIXES = ['', '/v1', '/sessions/:sid', '/sessions/:sid/v1']

const TYPES: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  409: 'conflict_error',
  410: 'invalid_request_error',
  413: 'invalid_request_error',
  429: 'rate_limit_error',
}

/** OpenAI's error body for a coded error. */
export function errorBody(err: CodedError): {
  error: { message: string; type: string; param: null; code: string }
} {
  return {
    error: {
      message: err.message,
      type: TYPES[err.status] ?? (err.status >= 500 ? 'server_error' : 'invalid_request_error'),
      param: null,
      code: err.code,
    },
  }
}

/** Any thrown thing as a coded error (fastify's own errors mapped to the catalogue). */
export function toCoded(err: unknown): CodedError {
  const e = err as { code?: string; statusCode?: number; message?: string; validation?: unknown }
  if (e && isErrCode(e.code)) return err as CodedError
  if (e?.validation) return fail('PRX_ERR_BAD_REQUEST', e.message)
  if (e?.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return fail('PRX_ERR_BODY_TOO_LARGE', e.message)
  if (typeof e?.code === 'string' && e.code.startsWith('FST_ERR_CTP'))
    return fail('PRX_ERR_BAD_REQUEST', e.message)
  if (e?.statusCode && e.statusCode >= 400 && e.statusCode < 500)
    return fail('PRX_ERR_BAD_REQUEST', e.message)
  return fail('RT_ERR_HANDLER', e?.message ?? String(err), undefined, err)
}

/** Build the fastify app (not listening; tests use `app.inject()` or `app.listen({port: 0})`). */
export function buildApp(service: ProxyService): FastifyInstance {
  const app = Fastify({
    logger: false,
    bodyLimit: service.config.body_limit_bytes,
    forceCloseConnections: true,
  })
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    if (body === '') return done(null, {})
    try {
      done(null, JSON.parse(body as string))
    } catch (err) {
      done(fail('PRX_ERR_BAD_REQUEST', `body is not valid JSON: ${(err as Error).message}`), undefined)
    }
  })
  const log = service.log.child({ part: 'http' })
  app.setErrorHandler((err, req, reply) => {
    const coded = toCoded(err)
    if (coded.status >= 500)
      log.warn({ code: coded.code, url: req.url, err: coded.message }, 'request failed')
    reply.code(coded.status).send(errorBody(coded))
  })
  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send(errorBody(fail('PRX_ERR_NO_ROUTE', `${req.method} ${req.url}`)))
  })
  for (const prefix of PREFIXES) {
    app.register(chatRoutes, { prefix, service })
    app.register(completionRoutes, { prefix, service })
    app.register(rlRoutes, { prefix, service })
  }
  app.register(metaRoutes, { service })
  app.addHook('onListen', async () => {
    const addr = app.server.address()
    if (addr && typeof addr === 'object') {
      // bound to every interface: agents on other nodes reach us by host name
      const any = addr.address === '0.0.0.0' || addr.address === '::'
      const host = any ? hostname() : addr.family === 'IPv6' ? `[${addr.address}]` : addr.address
      service.setPublicUrl(`http://${host}:${addr.port}`)
    }
  })
  return app
}

/** The bearer key of a request, if any. */
export function bearer(auth: string | undefined): string | undefined {
  if (!auth) return undefined
  const m = /^Bearer\s+(\S+)\s*$/i.exec(auth)
  return m?.[1]
}

export { catalogue }
