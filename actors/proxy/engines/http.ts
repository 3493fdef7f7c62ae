/**
 * JSON over HTTP to an engine server, with the failure modes mapped to codes: connection refused or reset
 * before an answer → PRX_ERR_ENGINE_DOWN (the request never ran: safe to retry elsewhere), timeout →
 * PRX_ERR_UPSTREAM_TIMEOUT, non-2xx or unreadable JSON → PRX_ERR_UPSTREAM. A caller's abort rethrows as is.
 */
import { fail } from '../../../runtime/errors.ts'

export async function postJson(
  url: string,
  body: unknown,
  opts: {
    timeoutMs: number
    signal?: AbortSignal
    method?: 'POST' | 'GET' /** control endpoints may answer plain text */
    text?: boolean
  },
): Promise<unknown> {
  const timeout = AbortSignal.timeout(opts.timeoutMs)
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout
  let res: Response
  try {
    res = await fetch(url, {
      method: opts.method ?? 'POST',
      headers: body === undefined ? undefined : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    })
  } catch (err) {
    if (opts.signal?.aborted) throw opts.signal.reason ?? err
    if (timeout.aborted) throw fail('PRX_ERR_UPSTREAM_TIMEOUT', `${url} after ${opts.timeoutMs} ms`, { url })
    const cause = (err as { cause?: { code?: string } }).cause
    throw fail('PRX_ERR_ENGINE_DOWN', `${url}: ${cause?.code ?? (err as Error).message}`, { url }, err)
  }
  let text: string
  try {
    text = await res.text()
  } catch (err) {
    if (opts.signal?.aborted) throw opts.signal.reason ?? err
    if (timeout.aborted) throw fail('PRX_ERR_UPSTREAM_TIMEOUT', `${url} after ${opts.timeoutMs} ms`, { url })
    throw fail('PRX_ERR_UPSTREAM', `${url}: reply cut off`, { url }, err)
  }
  if (!res.ok) {
    throw fail('PRX_ERR_UPSTREAM', `${url} answered ${res.status}: ${text.slice(0, 300)}`, {
      url,
      status: res.status,
    })
  }
  if (text === '' || opts.text) return text === '' ? {} : text
  try {
    return JSON.parse(text)
  } catch (err) {
    throw fail('PRX_ERR_UPSTREAM', `${url}: reply is not JSON: ${text.slice(0, 200)}`, { url }, err)
  }
}
