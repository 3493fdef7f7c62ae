/** POST {prefix}/completions: OpenAI (legacy) completions with a text or token-id prompt. */
import type { FastifyPluginAsync } from 'fastify'
import { bearer } from '../app.ts'
import { type CompletionRequest, completionSchema } from '../openai.ts'
import type { ProxyService } from '../service.ts'
import { disconnectSignal } from './chat.ts'

export const completionRoutes: FastifyPluginAsync<{ service: ProxyService }> = async (app, { service }) => {
  app.post<{ Params: { sid?: string }; Body: CompletionRequest }>(
    '/completions',
    { schema: { body: completionSchema } },
    async (req, reply) => {
      const s = service.authenticate(req.params.sid, bearer(req.headers.authorization))
      const body = req.body
      const r = await service.completion(s, body, { signal: disconnectSignal(reply) })
      const choice = {
        index: 0,
        text: r.text,
        logprobs:
          body.logprobs == null
            ? null
            : {
                tokens: Array.from(r.outputIds, (t) => service.tokenizer.decode([t])),
                token_logprobs: Array.from(r.logprobs),
                top_logprobs: null,
                text_offset: null,
              },
        finish_reason: r.finishReason,
      }
      const usage = {
        prompt_tokens: r.promptTokens,
        completion_tokens: r.completionTokens,
        total_tokens: r.promptTokens + r.completionTokens,
      }
      const msg = {
        id: r.id,
        object: 'text_completion',
        created: r.created,
        model: r.model,
        choices: [choice],
        usage,
      }
      if (!body.stream) return msg
      // The engine answers whole; a stream here is one chunk then [DONE].
      reply.hijack()
      reply.raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
      reply.raw.end(`data: ${JSON.stringify(msg)}\n\ndata: [DONE]\n\n`)
      return reply
    },
  )
}
