/**
 * A lean HTTP/1.1 client for the proxy → engine hot path: one request per kept-alive TCP connection at a
 * time, the request written in one corked write (head + body parts, no copy of the body), the reply read
 * straight off the socket. It speaks what engine servers (uvicorn/FastAPI for SGLang and vLLM) answer:
 * a status line, headers, and a body framed by content-length, chunked transfer coding or the end of the
 * connection; 1xx interim replies are skipped.
 *
 *   request(url, {method, body parts, timeoutMs, signal})
 *     └─ take an idle connection to host:port (LIFO; older than IDLE_MS: closed) or connect a new one
 *        └─ write `METHOD path HTTP/1.1` + headers + body → read status, headers, body → give it back
 *
 * NOTE: why not node:http: with a keep-alive Agent, ClientRequest/IncomingMessage and the agent's socket
 * bookkeeping cost ~0.4 ms per request more than this on the 2-core dev VM (a 60 KB /generate body, tiny
 * reply; both ways measured side by side), which was most of what the proxy added per completion.
 * Streaming (SSE) replies still go through node:http (http.ts), where that cost is spread over a stream.
 *
 * Failure modes, as coded errors: nothing of a reply arrived (refused, reset, closed) → PRX_ERR_ENGINE_DOWN
 * (the caller may try another engine); a reused connection that the server had closed while idle is
 * retried once on a fresh one first. A reply cut off or not HTTP → PRX_ERR_UPSTREAM. No complete reply
 * within timeoutMs → PRX_ERR_UPSTREAM_TIMEOUT. An aborted signal rejects with its reason. A connection that
 * failed, timed out or was aborted is destroyed, never reused.
 */
import { connect, type Socket } from 'node:net'
import { fail } from '../../../runtime/errors.ts'

/** idle connections older than this are closed rather than reused (uvicorn closes them after 5 s) */
const IDLE_MS = 4000
/** idle connections kept per host:port (node's Agent keeps 256 free sockets by default) */
const MAX_IDLE = 256
const CRLF2 = Buffer.from('\r\n\r\n')

export interface WireRequest {
  method: 'GET' | 'POST'
  /** body parts, written as they are (no copy); content-type is application/json */
  body?: readonly Uint8Array[]
  /** extra request headers */
  headers?: Record<string, string>
  timeoutMs: number
  signal?: AbortSignal
}

export interface WireReply {
  status: number
  /** header names lower-cased */
  headers: Record<string, string>
  body: Buffer
}

/** One TCP connection; the request in progress owns its handlers. */
class Conn {
  idleSince = 0
  closed = false
  onData: ((b: Buffer) => void) | null = null
  onClose: ((err: Error | undefined) => void) | null = null
  private error: Error | undefined

  constructor(readonly sock: Socket) {
    sock.setNoDelay(true)
    sock.on('data', (b: Buffer) => {
      if (this.onData) this.onData(b)
      else sock.destroy() // bytes nobody asked for: the connection is out of step
    })
    sock.on('error', (err) => {
      this.error = err
    })
    sock.on('close', () => {
      this.closed = true
      const cb = this.onClose
      this.onData = null
      this.onClose = null
      cb?.(this.error)
    })
  }
}

const idle = new Map<string, Conn[]>()

function take(host: string, port: number): { conn: Conn; reused: boolean } {
  const list = idle.get(`${host}:${port}`)
  const now = Date.now()
  while (list?.length) {
    const c = list.pop()!
    if (c.closed) continue
    if (now - c.idleSince > IDLE_MS) {
      c.sock.destroy()
      continue
    }
    c.sock.ref()
    return { conn: c, reused: true }
  }
  return { conn: new Conn(connect({ host, port })), reused: false }
}

function giveBack(key: string, c: Conn): void {
  c.onData = null
  c.onClose = null
  if (c.closed) return
  let list = idle.get(key)
  if (!list) idle.set(key, (list = []))
  if (list.length >= MAX_IDLE) return void c.sock.destroy()
  c.idleSince = Date.now()
  c.sock.unref() // an idle connection keeps no process alive
  list.push(c)
}

/** Close every idle connection (tests; shutdown). Requests in flight are not touched. */
export function closeIdle(): void {
  for (const list of idle.values()) for (const c of list) c.sock.destroy()
  idle.clear()
}

/** Send one request and read the whole reply; see the header for the error mapping. */
export function request(url: string, req: WireRequest): Promise<WireReply> {
  const u = new URL(url)
  if (u.protocol !== 'http:')
    return Promise.reject(fail('PRX_ERR_ENGINE_DOWN', `${url}: only http:// engine URLs are supported`))
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname
  const port = u.port ? Number(u.port) : 80
  let length = 0
  for (const p of req.body ?? []) length += p.byteLength
  let head = `${req.method} ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\n`
  if (req.body) head += `Content-Type: application/json\r\nContent-Length: ${length}\r\n`
  for (const [k, v] of Object.entries(req.headers ?? {})) head += `${k}: ${v}\r\n`
  head += '\r\n'
  return new Promise((resolve, reject) => {
    if (req.signal?.aborted) return reject(req.signal.reason)
    const attempt = (mayRetry: boolean) => {
      const { conn, reused } = take(host, port)
      const key = `${host}:${port}`
      const parser = new ReplyParser()
      let settled = false
      const finish = (err: unknown, reply?: WireReply) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        req.signal?.removeEventListener('abort', onAbort)
        if (err) {
          conn.onData = null
          conn.onClose = null
          conn.sock.destroy()
          reject(err)
        } else {
          // a reply that came before the whole request was sent leaves the connection out of step
          if (parser.reusable && conn.sock.writableLength === 0) giveBack(key, conn)
          else conn.sock.destroy()
          resolve(reply!)
        }
      }
      const timer = setTimeout(
        () => finish(fail('PRX_ERR_UPSTREAM_TIMEOUT', `${url} after ${req.timeoutMs} ms`, { url })),
        req.timeoutMs,
      )
      const onAbort = () => finish(req.signal!.reason)
      req.signal?.addEventListener('abort', onAbort, { once: true })
      conn.onData = (b) => {
        let reply: WireReply | null
        try {
          reply = parser.push(b)
        } catch (err) {
          return finish(err)
        }
        if (reply) finish(null, reply)
      }
      conn.onClose = (err) => {
        if (settled) return
        const reply = parser.end()
        if (reply) return finish(null, reply)
        const why = (err as { code?: string } | undefined)?.code ?? err?.message ?? 'connection closed'
        if (!parser.started && reused && mayRetry) {
          // the server closed this kept-alive connection while it sat idle: the request never ran
          settled = true
          clearTimeout(timer)
          req.signal?.removeEventListener('abort', onAbort)
          return attempt(false)
        }
        if (!parser.started) finish(fail('PRX_ERR_ENGINE_DOWN', `${url}: ${why}`, { url }, err))
        else finish(fail('PRX_ERR_UPSTREAM', `${url}: reply cut off (${why})`, { url }, err))
      }
      const s = conn.sock
      s.cork()
      s.write(head, 'latin1')
      for (const p of req.body ?? []) s.write(p)
      s.uncork()
    }
    attempt(true)
  })
}

type Mode = 'head' | 'length' | 'chunked' | 'close' | 'done'

/**
 * An HTTP/1.x reply read incrementally. `push` returns the reply once complete; `end` (the connection
 * closed) returns it when the body was framed by the close, else null. Throws PRX_ERR_UPSTREAM on bytes
 * that are not HTTP.
 */
export class ReplyParser {
  /** some reply bytes arrived */
  started = false
  /** the connection may carry another request after this reply */
  reusable = false
  private buf: Buffer = Buffer.alloc(0)
  private status = 0
  private headers: Record<string, string> = {}
  private mode: Mode = 'head'
  private need = 0
  /** body bytes collected in `parts` */
  private got = 0
  private readonly parts: Buffer[] = []
  /** chunked: bytes of the current chunk still to read (then its CRLF); -1 a size line next, -2 trailers */
  private chunkLeft = -1

  push(b: Buffer): WireReply | null {
    this.started = true
    if (this.mode === 'done') throw fail('PRX_ERR_UPSTREAM', 'bytes after the end of the reply')
    if (this.mode === 'length' || this.mode === 'close') {
      // body bytes: collect without joining until the end
      this.parts.push(b)
      this.got += b.length
      return this.mode === 'length' ? this.lengthDone() : null
    }
    this.buf = this.buf.length ? Buffer.concat([this.buf, b]) : b
    for (;;) {
      if (this.mode === 'head') {
        const at = this.buf.indexOf(CRLF2)
        if (at < 0) {
          if (this.buf.length > 64 * 1024) throw fail('PRX_ERR_UPSTREAM', 'reply head over 64 KiB')
          return null
        }
        this.parseHead(this.buf.toString('latin1', 0, at))
        this.buf = this.buf.subarray(at + 4)
        if (this.mode === 'head') continue // a 1xx interim reply: the real one follows
      }
      // parseHead moved on: TS does not see that `this.mode` changed
      const mode = this.mode as Mode
      if (mode === 'length' || mode === 'close') {
        if (this.buf.length) this.parts.push(this.buf)
        this.got = this.buf.length
        this.buf = Buffer.alloc(0)
        return mode === 'length' ? this.lengthDone() : null
      }
      if (mode === 'chunked') return this.chunked()
      return this.done()
    }
  }

  private lengthDone(): WireReply | null {
    if (this.got < this.need) return null
    if (this.got > this.need) throw fail('PRX_ERR_UPSTREAM', 'bytes after the end of the reply')
    return this.done()
  }

  end(): WireReply | null {
    if (this.mode === 'close') return this.done()
    return null
  }

  private parseHead(text: string): void {
    const lines = text.split('\r\n')
    const m = /^HTTP\/1\.([01]) (\d{3})/.exec(lines[0]!)
    if (!m) throw fail('PRX_ERR_UPSTREAM', `not an HTTP reply: ${JSON.stringify(lines[0]!.slice(0, 80))}`)
    const status = Number(m[2])
    const headers: Record<string, string> = {}
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i]!
      const c = line.indexOf(':')
      if (c <= 0) throw fail('PRX_ERR_UPSTREAM', `bad reply header ${JSON.stringify(line.slice(0, 80))}`)
      headers[line.slice(0, c).trim().toLowerCase()] = line.slice(c + 1).trim()
    }
    if (status < 200) return // 1xx: stay in 'head'
    this.status = status
    this.headers = headers
    const conn = (headers.connection ?? '').toLowerCase()
    this.reusable = m[1] === '1' ? !conn.includes('close') : conn.includes('keep-alive')
    const te = (headers['transfer-encoding'] ?? '').toLowerCase()
    if (status === 204 || status === 304) {
      this.mode = 'done'
    } else if (te.includes('chunked')) {
      this.mode = 'chunked'
    } else if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length'])
      if (!Number.isSafeInteger(n) || n < 0)
        throw fail('PRX_ERR_UPSTREAM', `bad content-length ${headers['content-length']}`)
      this.mode = 'length'
      this.need = n
    } else {
      this.mode = 'close'
      this.reusable = false
    }
  }

  private chunked(): WireReply | null {
    for (;;) {
      if (this.chunkLeft === -1) {
        const nl = this.buf.indexOf('\r\n')
        if (nl < 0) return null
        const sizeText = this.buf.toString('latin1', 0, nl).split(';')[0]!.trim()
        if (!/^[0-9a-fA-F]+$/.test(sizeText))
          throw fail('PRX_ERR_UPSTREAM', `bad chunk size ${JSON.stringify(sizeText.slice(0, 20))}`)
        this.chunkLeft = Number.parseInt(sizeText, 16)
        this.buf = this.buf.subarray(nl + 2)
        if (this.chunkLeft === 0) this.chunkLeft = -2 // last chunk: trailers follow
      }
      if (this.chunkLeft === -2) {
        // trailer section: header lines, then an empty line
        const nl = this.buf.indexOf('\r\n')
        if (nl < 0) return null
        this.buf = this.buf.subarray(nl + 2)
        if (nl === 0) {
          if (this.buf.length) throw fail('PRX_ERR_UPSTREAM', 'bytes after the end of the reply')
          return this.done()
        }
        continue
      }
      if (this.buf.length < this.chunkLeft + 2) return null
      if (this.buf[this.chunkLeft] !== 13 || this.buf[this.chunkLeft + 1] !== 10)
        throw fail('PRX_ERR_UPSTREAM', 'chunk not followed by CRLF')
      this.parts.push(this.buf.subarray(0, this.chunkLeft))
      this.buf = this.buf.subarray(this.chunkLeft + 2)
      this.chunkLeft = -1
    }
  }

  private done(): WireReply {
    this.mode = 'done'
    const body = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts)
    this.parts.length = 0
    return { status: this.status, headers: this.headers, body }
  }
}
