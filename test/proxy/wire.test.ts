import { createServer as createHttpServer, type Server as HttpServer } from 'node:http'
import { createServer, type Server, type Socket } from 'node:net'
import { expect } from 'chai'
import { closeIdle, ReplyParser, request } from '../../actors/proxy/engines/wire.ts'

/** A raw TCP server: `onRequest` gets each whole request (head + body) and the socket it came on. */
async function rawServer(
  onRequest: (req: { head: string; body: string; n: number }, sock: Socket) => void,
): Promise<{ server: Server; url: string; connections: () => number }> {
  let connections = 0
  const server = createServer((sock) => {
    connections++
    let buf = Buffer.alloc(0)
    let n = 0
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d])
      for (;;) {
        const end = buf.indexOf('\r\n\r\n')
        if (end < 0) return
        const head = buf.toString('latin1', 0, end)
        const len = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0)
        if (buf.length < end + 4 + len) return
        const body = buf.toString('utf8', end + 4, end + 4 + len)
        buf = buf.subarray(end + 4 + len)
        onRequest({ head, body, n: n++ }, sock)
      }
    })
    sock.on('error', () => {})
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as { port: number }).port
  return { server, url: `http://127.0.0.1:${port}`, connections: () => connections }
}

const ok = (body: string, extra = '') =>
  `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`

async function rejects(p: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await p
  } catch (err) {
    return err as Error & { code?: string }
  }
  throw new Error('expected a rejection')
}

describe('wire: the lean HTTP/1.1 client to engines', () => {
  let servers: (Server | HttpServer)[] = []
  afterEach(async () => {
    closeIdle()
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))))
    servers = []
  })

  describe('when the server answers with content-length and keeps the connection', () => {
    it('should send the body parts in order, read the reply and reuse one connection', async () => {
      const seen: { head: string; body: string }[] = []
      const s = await rawServer((req, sock) => {
        seen.push(req)
        sock.write(ok(`{"n":${req.n},"echo":${req.body}}`))
      })
      servers.push(s.server)
      for (let i = 0; i < 3; i++) {
        const r = await request(`${s.url}/generate?x=1`, {
          method: 'POST',
          body: [Buffer.from('{"a":['), Buffer.from(`${i},2`), Buffer.from(']}')],
          timeoutMs: 5000,
        })
        expect(r.status).to.equal(200)
        expect(r.headers['content-type']).to.equal('application/json')
        expect(JSON.parse(r.body.toString())).to.deep.equal({ n: i, echo: { a: [i, 2] } })
      }
      expect(s.connections()).to.equal(1)
      expect(seen[0]!.head).to.match(/^POST \/generate\?x=1 HTTP\/1\.1\r\n/)
      expect(seen[0]!.head).to.match(/\r\nContent-Length: 11(\r|$)/)
    })
  })

  describe('when requests run at the same time', () => {
    it('should give each its own connection, and reuse them all afterwards', async () => {
      const N = 8
      let waiting: { sock: Socket; n: string }[] = []
      const s = await rawServer((req, sock) => {
        waiting.push({ sock, n: req.body })
        // answer only once all N are in: each must have had a connection of its own
        if (waiting.length === N) {
          for (const w of waiting) w.sock.write(ok(`{"n":${w.n}}`))
          waiting = []
        }
      })
      servers.push(s.server)
      for (let round = 0; round < 2; round++) {
        const replies = await Promise.all(
          Array.from({ length: N }, (_, i) =>
            request(s.url, { method: 'POST', body: [Buffer.from(String(i))], timeoutMs: 5000 }),
          ),
        )
        expect(replies.map((r) => JSON.parse(r.body.toString()).n)).to.deep.equal([...Array(N).keys()])
      }
      expect(s.connections()).to.equal(N)
    })
  })

  describe('when the server answers chunked (node:http without a length)', () => {
    it('should join the chunks, and reuse the connection', async () => {
      const server = createHttpServer((_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.write('{"parts":[')
        res.write('"a",')
        res.end('"b"]}')
      })
      servers.push(server)
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
      let connections = 0
      server.on('connection', () => connections++)
      const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/x`
      for (let i = 0; i < 2; i++) {
        const r = await request(url, { method: 'GET', timeoutMs: 5000 })
        expect(JSON.parse(r.body.toString())).to.deep.equal({ parts: ['a', 'b'] })
      }
      expect(connections).to.equal(1)
    })
  })

  describe('when the reply arrives in odd pieces', () => {
    it('should parse 1xx replies, chunk extensions and trailers split at every byte', () => {
      const wire =
        'HTTP/1.1 100 Continue\r\n\r\n' +
        'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n' +
        '4;ext=1\r\n{"a"\r\n3\r\n:1}\r\n0\r\nX-Trailer: t\r\n\r\n'
      const p = new ReplyParser()
      const bytes = Buffer.from(wire)
      let reply = null
      for (let i = 0; i < bytes.length; i++) {
        expect(reply, `reply before byte ${i}`).to.equal(null)
        reply = p.push(bytes.subarray(i, i + 1))
      }
      expect(reply!.status).to.equal(200)
      expect(reply!.body.toString()).to.equal('{"a":1}')
      expect(p.reusable).to.equal(true)
    })

    it('should refuse bytes that are not HTTP with PRX_ERR_UPSTREAM', () => {
      expect(() => new ReplyParser().push(Buffer.from('SSH-2.0-OpenSSH\r\n\r\n')))
        .to.throw()
        .with.property('code', 'PRX_ERR_UPSTREAM')
    })
  })

  describe('when the server closes the connection', () => {
    it('should open a new connection after a reply that says connection: close', async () => {
      const s = await rawServer((req, sock) => {
        sock.end(ok(`{"n":${req.n}}`, 'Connection: close\r\n'))
      })
      servers.push(s.server)
      for (let i = 0; i < 2; i++) {
        const r = await request(s.url, { method: 'GET', timeoutMs: 5000 })
        expect(JSON.parse(r.body.toString())).to.deep.equal({ n: 0 })
      }
      expect(s.connections()).to.equal(2)
    })

    it('should read a body framed by the end of the connection', async () => {
      const s = await rawServer((_req, sock) => {
        sock.end('HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it')
      })
      servers.push(s.server)
      const r = await request(s.url, { method: 'GET', timeoutMs: 5000 })
      expect(r.body.toString()).to.equal('all of it')
    })

    it('should send again on a new connection when a reused one was closed before any reply', async () => {
      // the second request on a connection finds it closed (the race with a server's keep-alive timeout)
      const s = await rawServer((req, sock) => {
        if (req.n === 1) sock.destroy()
        else sock.write(ok('{"ok":true}'))
      })
      servers.push(s.server)
      await request(s.url, { method: 'POST', body: [Buffer.from('{}')], timeoutMs: 5000 })
      const r = await request(s.url, { method: 'POST', body: [Buffer.from('{}')], timeoutMs: 5000 })
      expect(JSON.parse(r.body.toString())).to.deep.equal({ ok: true })
      expect(s.connections()).to.equal(2)
    })

    it('should answer PRX_ERR_ENGINE_DOWN when a new connection closes before any reply', async () => {
      const s = await rawServer((_req, sock) => sock.destroy())
      servers.push(s.server)
      const e = await rejects(request(s.url, { method: 'GET', timeoutMs: 5000 }))
      expect(e.code).to.equal('PRX_ERR_ENGINE_DOWN')
      expect(s.connections()).to.equal(1)
    })

    it('should answer PRX_ERR_UPSTREAM when the reply is cut off', async () => {
      const s = await rawServer((_req, sock) => {
        sock.end('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"half":')
      })
      servers.push(s.server)
      const e = await rejects(request(s.url, { method: 'GET', timeoutMs: 5000 }))
      expect(e.code).to.equal('PRX_ERR_UPSTREAM')
      expect(e.message).to.contain('cut off')
    })
  })

  describe('when nothing listens', () => {
    it('should answer PRX_ERR_ENGINE_DOWN naming the connection error', async () => {
      const s = createServer()
      await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
      const port = (s.address() as { port: number }).port
      await new Promise((r) => s.close(r))
      const e = await rejects(
        request(`http://127.0.0.1:${port}/generate`, { method: 'GET', timeoutMs: 5000 }),
      )
      expect(e.code).to.equal('PRX_ERR_ENGINE_DOWN')
      expect(e.message).to.contain('ECONNREFUSED')
    })
  })

  describe('when the server is slow or the caller gives up', () => {
    it('should time out with PRX_ERR_UPSTREAM_TIMEOUT and not reuse that connection', async () => {
      const s = await rawServer((req, sock) => {
        if (req.n > 0 || s.connections() > 1) sock.write(ok('{"late":false}'))
        // the first request on the first connection gets no answer
      })
      servers.push(s.server)
      const e = await rejects(request(s.url, { method: 'GET', timeoutMs: 100 }))
      expect(e.code).to.equal('PRX_ERR_UPSTREAM_TIMEOUT')
      const r = await request(s.url, { method: 'GET', timeoutMs: 5000 })
      expect(JSON.parse(r.body.toString())).to.deep.equal({ late: false })
      expect(s.connections()).to.equal(2)
    })

    it("should reject with the signal's reason when aborted", async () => {
      let arrived!: () => void
      const got = new Promise<void>((r) => (arrived = r))
      const s = await rawServer(() => arrived())
      servers.push(s.server)
      const ac = new AbortController()
      const p = request(s.url, { method: 'GET', timeoutMs: 5000, signal: ac.signal })
      await got
      const reason = new Error('client went away')
      ac.abort(reason)
      expect(await rejects(p)).to.equal(reason)
    })
  })
})
