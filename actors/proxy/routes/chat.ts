/**
 * POST {prefix}/chat/completions: OpenAI chat completions, whole or streamed (SSE, `data: [DONE]`).
 * A stream starts (status 200, headers) only once the engine has produced output, so failures before
 * that (auth, validation, prompt too long, engine down) still answer with a proper status and error body.
 */
import type { FastifyPluginAsync, FastifyReply } from 'fastify'
import { fail } from '../../../runtime/errors.ts'
import { bearer, errorBody, toCoded } from '../app.ts'
import { type ChatRequest, chatSchema } from '../openai.ts'
import type { ChatResult, ProxyService } from '../service.ts'

function toolCallsOf(r: ChatResult) {
  return r.toolCalls.map((t) => ({
    id: t.id,
    type: 'function' as const,
    function: { name: t.name, arguments: t.arguments },
  }))
}

function usage(r: ChatResult) {
  return {
    prompt_tokens: r.promptTokens,
    completion_tokens: r.completionTokens,
    total_tokens: r.promptTokens + r.completionTokens,
  }
}

/** Abort the generation when the client goes away before the reply is complete. */
export function disconnectSignal(reply: FastifyReply): AbortSignal {
  const ac = new AbortController()
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) ac.abort(fail('RT_ERR_CANCELLED', 'client disconnected'))
  })
  return ac.signal
}

export const chatRoutes: FastifyPluginAsync<{ service: ProxyService }> = async (app, { service }) => {
  app.post<{ Params: { sid?: string }; Body: ChatRequest }>(
    '/chat/completions',
    { schema: { body: chatSchema } },
    async (req, reply) => {
      const s = service.authenticate(req.params.sid, bearer(req.headers.authorization))
      const body = req.body
      const signal = disconnectSignal(reply)
      if (!body.stream) {
        const r = await service.chat(s, body, { signal })
        return {
          id: r.id,
          object: 'chat.completion',
          created: r.created,
          model: r.model,
          choices: [
            {
              index: 0,
              message: {
                role: 'assistant',
                content: r.content,
                ...(r.reasoning !== null ? { reasoning_content: r.reasoning } : {}),
                ...(r.toolCalls.length ? { tool_calls: toolCallsOf(r) } : {}),
              },
              logprobs: body.logprobs ? logprobsOf(service, r) : null,
              finish_reason: r.finishReason,
            },
          ],
          usage: usage(r),
        }
      }
      // --- streaming ---
      let id = ''
      let created = 0
      let started = false
      const raw = reply.raw
      const chunk = (delta: Record<string, unknown>, finish: string | null = null, extra = {}) =>
        `data: ${JSON.stringify({
          id,
          object: 'chat.completion.chunk',
          created,
          model: service.config.model_name,
          choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
          ...extra,
        })}\n\n`
      const start = () => {
        if (started) return
        started = true
        id ||= `chatcmpl-stream-${Date.now().toString(36)}`
        created = Math.floor(Date.now() / 1000)
        reply.hijack()
        raw.writeHead(200, {
          'content-type': 'text/event-stream',
          'cache-control': 'no-cache',
          connection: 'keep-alive',
        })
        raw.write(chunk({ role: 'assistant', content: '' }))
      }
      try {
        const r = await service.chat(s, body, {
          signal,
          onDelta: (d) => {
            start()
            if (d.reasoning) raw.write(chunk({ reasoning_content: d.reasoning }))
            if (d.content) raw.write(chunk({ content: d.content }))
          },
        })
        start()
        toolCallsOf(r).forEach((t, index) => {
          raw.write(chunk({ tool_calls: [{ index, ...t }] }))
        })
        raw.write(chunk({}, r.finishReason))
        if (body.stream_options?.include_usage) {
          raw.write(
            `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model: r.model, choices: [], usage: usage(r) })}\n\n`,
          )
        }
        raw.end('data: [DONE]\n\n')
      } catch (err) {
        if (!started) throw err
        if (!raw.destroyed) raw.end(`data: ${JSON.stringify(errorBody(toCoded(err)))}\n\ndata: [DONE]\n\n`)
      }
      return reply
    },
  )
}

function logprobsOf(service: ProxyService, r: ChatResult) {
  return {
    content: Array.from(r.outputIds, (tokenId, i) => ({
      token: service.tokenizer.decode([tokenId]),
      logprob: r.logprobs[i]!,
      bytes: null,
      top_logprobs: [],
    })),
  }
}
