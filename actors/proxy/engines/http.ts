/**
 * JSON over HTTP to an engine server, with the failure modes mapped to codes: connection refused or reset
 * before an answer → PRX_ERR_ENGINE_DOWN (the request never ran: safe to retry elsewhere), timeout →
 * PRX_ERR_UPSTREAM_TIMEOUT, non-2xx or unreadable JSON → PRX_ERR_UPSTREAM. A caller's abort rejects with
 * the signal's reason.
 *
 * NOTE: plain node:http with a keep-alive agent rather than fetch: on the per-completion hot path fetch
 * (undici + AbortSignal.any/timeout per call) cost more than the whole templating step.
 */
import { Agent, request } from 'node:http'
import { fail } from '../../../runtime/errors.ts'

const agent = new Agent({ keepAlive: true, maxSockets: 256, keepAliveMsecs: 10_000 })

export interface PostOptions {
  timeoutMs: number
  signal?: AbortSignal
  method?: 'POST' | 'GET'
  /** control endpoints may answer plain text */
  text?: boolean
}

/** A JSON body already serialised (hot path: token-id arrays are joined, not mapped through JSON.stringify). */
export class RawJson {
  constructor(readonly text: string) {}
}

/** `{"<key>": [ids…], …rest}` as RawJson; `rest` must have at least one field. */
export function jsonWithIds(key: string, ids: Int32Array, rest: Record<string, unknown>): RawJson {
  return new RawJson(`{"${key}":[${ids.join(',')}],${JSON.stringify(rest).slice(1)}`)
}

export function postJson(url: string, body: unknown, opts: PostOptions): Promise<unknown> {
  return once(url, body, opts, true)
}

function once(url: string, body: unknown, opts: PostOptions, mayRetry: boolean): Promise<unknown> {
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted) return reject(opts.signal.reason)
    const payload =
      body === undefined ? undefined : Buffer.from(body instanceof RawJson ? body.text : JSON.stringify(body))
    let answered = false
    let settled = false
    const done = (err: unknown, value?: unknown) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      opts.signal?.removeEventListener('abort', onAbort)
      if (err) reject(err)
      else resolve(value)
    }
    const req = request(url, {
      method: opts.method ?? 'POST',
      agent,
      headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
    })
    const timer = setTimeout(() => {
      done(fail('PRX_ERR_UPSTREAM_TIMEOUT', `${url} after ${opts.timeoutMs} ms`, { url }))
      req.destroy()
    }, opts.timeoutMs)
    const onAbort = () => {
      done(opts.signal!.reason)
      req.destroy()
    }
    opts.signal?.addEventListener('abort', onAbort, { once: true })
    req.on('error', (err) => {
      const code = (err as { code?: string }).code
      // A kept-alive socket the server had closed: the request never reached it; try a fresh one once.
      if (!answered && mayRetry && req.reusedSocket && code === 'ECONNRESET' && !settled) {
        settled = true
        clearTimeout(timer)
        opts.signal?.removeEventListener('abort', onAbort)
        once(url, body, opts, false).then(resolve, reject)
        return
      }
      if (!answered) done(fail('PRX_ERR_ENGINE_DOWN', `${url}: ${code ?? err.message}`, { url }, err))
      else done(fail('PRX_ERR_UPSTREAM', `${url}: reply cut off (${code ?? err.message})`, { url }, err))
    })
    req.on('response', (res) => {
      answered = true
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('error', (err) => done(fail('PRX_ERR_UPSTREAM', `${url}: reply cut off`, { url }, err)))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        const status = res.statusCode ?? 0
        if (status < 200 || status >= 300) {
          return done(
            fail('PRX_ERR_UPSTREAM', `${url} answered ${status}: ${text.slice(0, 300)}`, { url, status }),
          )
        }
        if (text === '') return done(null, {})
        if (opts.text) return done(null, text)
        try {
          done(null, JSON.parse(text))
        } catch (err) {
          done(fail('PRX_ERR_UPSTREAM', `${url}: reply is not JSON: ${text.slice(0, 200)}`, { url }, err))
        }
      })
    })
    req.end(payload)
  })
}

/**
 * POST a JSON body and read a Server-Sent Events reply: `onData` gets each `data:` payload parsed as JSON
 * until `data: [DONE]` or the end of the stream. Same error mapping as postJson.
 */
export function postSse(
  url: string,
  body: unknown,
  opts: PostOptions,
  onData: (msg: unknown) => void,
): Promise<void> {
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted) return reject(opts.signal.reason)
    const payload = Buffer.from(body instanceof RawJson ? body.text : JSON.stringify(body))
    let answered = false
    let settled = false
    const done = (err: unknown) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      opts.signal?.removeEventListener('abort', onAbort)
      if (err) {
        reject(err)
        req.destroy()
      } else resolve()
    }
    const req = request(url, {
      method: 'POST',
      agent,
      headers: {
        'content-type': 'application/json',
        'content-length': payload.length,
        accept: 'text/event-stream',
      },
    })
    const timer = setTimeout(
      () => done(fail('PRX_ERR_UPSTREAM_TIMEOUT', `${url} after ${opts.timeoutMs} ms`, { url })),
      opts.timeoutMs,
    )
    const onAbort = () => done(opts.signal!.reason)
    opts.signal?.addEventListener('abort', onAbort, { once: true })
    req.on('error', (err) => {
      const code = (err as { code?: string }).code
      if (!answered) done(fail('PRX_ERR_ENGINE_DOWN', `${url}: ${code ?? err.message}`, { url }, err))
      else done(fail('PRX_ERR_UPSTREAM', `${url}: stream cut off (${code ?? err.message})`, { url }, err))
    })
    req.on('response', (res) => {
      answered = true
      const status = res.statusCode ?? 0
      let buf = ''
      res.setEncoding('utf8')
      if (status < 200 || status >= 300) {
        res.on('data', (c: string) => (buf += c))
        res.on('end', () =>
          done(fail('PRX_ERR_UPSTREAM', `${url} answered ${status}: ${buf.slice(0, 300)}`, { url, status })),
        )
        return
      }
      res.on('data', (c: string) => {
        buf += c
        for (let nl = buf.indexOf('\n\n'); nl >= 0 && !settled; nl = buf.indexOf('\n\n')) {
          const event = buf.slice(0, nl)
          buf = buf.slice(nl + 2)
          for (const line of event.split('\n')) {
            if (!line.startsWith('data:')) continue
            const data = line.slice(5).trim()
            if (data === '[DONE]') return done(null)
            try {
              onData(JSON.parse(data))
            } catch (err) {
              const e = err as { code?: string }
              return done(
                e.code
                  ? err
                  : fail('PRX_ERR_UPSTREAM', `${url}: bad stream event: ${data.slice(0, 200)}`, { url }, err),
              )
            }
          }
        }
      })
      res.on('end', () => done(null))
      res.on('error', (err) => done(fail('PRX_ERR_UPSTREAM', `${url}: stream cut off`, { url }, err)))
    })
    req.end(payload)
  })
}
