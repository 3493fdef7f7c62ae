/**
 * JSON over HTTP to an engine server, with the failure modes mapped to codes: connection refused or reset
 * before an answer → PRX_ERR_ENGINE_DOWN (the request never ran: safe to retry elsewhere), timeout →
 * PRX_ERR_UPSTREAM_TIMEOUT, non-2xx or unreadable JSON → PRX_ERR_UPSTREAM. A caller's abort rejects with
 * the signal's reason.
 *
 * NOTE: whole-reply requests (postJson) go through wire.ts, a lean keep-alive HTTP/1.1 client: on the
 * per-completion hot path node:http (and fetch even more) cost more than the whole templating step.
 * Streamed replies (postSse) use node:http with a keep-alive agent.
 */
import { Agent, request } from 'node:http'
import { fail } from '../../../runtime/errors.ts'
import { idsToJson } from '../ids-json.ts'
import { request as wireRequest } from './wire.ts'

const agent = new Agent({ keepAlive: true, maxSockets: 256, keepAliveMsecs: 10_000 })

export interface PostOptions {
  timeoutMs: number
  signal?: AbortSignal
  method?: 'POST' | 'GET'
  /** control endpoints may answer plain text */
  text?: boolean
}

/** A JSON body already serialised, in parts written one after another (hot path: no join, no copy). */
export class RawJson {
  constructor(readonly parts: readonly Uint8Array[]) {}
}

/**
 * `{"<key>": [ids…], …rest}` as RawJson; `rest` must have at least one field. `idsJson`, when given, is
 * `ids` already serialised as array elements (`1,2,3`, see TokenChain.json) and is sent as it is.
 */
export function jsonWithIds(
  key: string,
  ids: Int32Array,
  rest: Record<string, unknown>,
  idsJson?: Uint8Array,
): RawJson {
  return new RawJson([
    Buffer.from(`{"${key}":[`, 'latin1'),
    idsJson ?? idsToJson(ids),
    Buffer.from(`],${JSON.stringify(rest).slice(1)}`, 'utf8'),
  ])
}

export async function postJson(url: string, body: unknown, opts: PostOptions): Promise<unknown> {
  const parts =
    body === undefined
      ? undefined
      : body instanceof RawJson
        ? body.parts
        : [Buffer.from(JSON.stringify(body), 'utf8')]
  const res = await wireRequest(url, {
    method: opts.method ?? 'POST',
    body: parts,
    timeoutMs: opts.timeoutMs,
    signal: opts.signal,
  })
  const text = res.body.toString('utf8')
  if (res.status < 200 || res.status >= 300) {
    throw fail('PRX_ERR_UPSTREAM', `${url} answered ${res.status}: ${text.slice(0, 300)}`, {
      url,
      status: res.status,
    })
  }
  if (text === '') return {}
  if (opts.text) return text
  try {
    return JSON.parse(text)
  } catch (err) {
    throw fail('PRX_ERR_UPSTREAM', `${url}: reply is not JSON: ${text.slice(0, 200)}`, { url }, err)
  }
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
    const payload = body instanceof RawJson ? Buffer.concat(body.parts) : Buffer.from(JSON.stringify(body))
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
