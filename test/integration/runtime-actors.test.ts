import { expect } from 'chai'
import { Dealer } from 'zeromq'
import { Actor } from '../../runtime/actor.ts'
import { encode } from '../../runtime/codec.ts'
import { Directory } from '../../runtime/directory.ts'
import { silentLogger } from '../../runtime/log.ts'
import { Kind, PROTOCOL_VERSION } from '../../runtime/messages.ts'
import { unbatch } from '../../runtime/sender.ts'
import { type ChildSpec, linkDirectory, Supervisor } from '../../runtime/supervisor.ts'

const PEER = new URL('../fixtures/actors/peer.ts', import.meta.url).pathname
const log = silentLogger()

function peerSpec(id: string, extra: Partial<ChildSpec> = {}): ChildSpec {
  return { id, role: 'peer', command: process.execPath, args: ['--import', 'tsx', PEER, id], ...extra }
}

/** Resolve when the directory reports `id` up `times` times (counting from now). */
function whenUp(dir: Directory, id: string, times = 1): Promise<void> {
  return new Promise((resolve) => {
    let n = 0
    const on = (e: { id: string }) => {
      if (e.id === id && ++n === times) {
        dir.off('up', on)
        resolve()
      }
    }
    dir.on('up', on)
  })
}
function whenDown(dir: Directory, id: string): Promise<string> {
  return new Promise((resolve) => {
    const on = (e: { id: string }, reason: string) => {
      if (e.id === id) {
        dir.off('down', on)
        resolve(reason)
      }
    }
    dir.on('down', on)
  })
}
async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p
  } catch (e) {
    return (e as { code?: string }).code
  }
  return undefined
}

describe('actors in separate processes', () => {
  let ctl: Actor
  let dir: Directory
  let sup: Supervisor

  beforeEach(async () => {
    ctl = new Actor({
      id: 'controller',
      role: 'controller',
      log,
      bus: { heartbeatMs: 100, deadlineMs: 1000 },
    })
    dir = new Directory(ctl)
    await ctl.start()
    dir.start()
    sup = new Supervisor(log)
    linkDirectory(sup, dir)
  })

  afterEach(async () => {
    await sup.stopAll(2000)
    dir.stop()
    await ctl.stop('test done', 100)
  })

  async function startPeers(...ids: string[]): Promise<void> {
    const up = Promise.all(ids.map((id) => whenUp(dir, id)))
    for (const id of ids) sup.start(peerSpec(id, { env: { AREAL_CONTROLLER: ctl.addr, LOG_LEVEL: 'error' } }))
    await up
  }

  describe('when three processes talk', () => {
    beforeEach(() => startPeers('peer/a', 'peer/b'))

    it('should ask peer to peer, carrying typed arrays between two child processes', async () => {
      const ids = new Int32Array([1, 2, 3])
      const res = await ctl.ask('peer/a', 'test:relay', { to: 'peer/b', data: { ids } })
      expect((res.data as { ids: Int32Array }).ids).to.deep.equal(ids)
    })

    it('should deliver tells in order and broadcasts to every actor of a role', async () => {
      for (let i = 0; i < 50; i++) await ctl.tell('peer/a', 'test:note', { text: `n${i}` })
      const reached = await ctl.broadcast('peer', 'test:note', { text: 'all' })
      expect(reached.sort()).to.deep.equal(['peer/a', 'peer/b'])
      const a = await ctl.ask('peer/a', 'test:notes', {})
      const b = await ctl.ask('peer/b', 'test:notes', {})
      expect(a.notes).to.deep.equal([...Array.from({ length: 50 }, (_, i) => `n${i}`), 'all'])
      expect(b.notes).to.deep.equal(['all'])
    })

    it('should time out an ask that is not answered in time', async () => {
      expect(await codeOf(ctl.ask('peer/a', 'test:sleep', { ms: 2000 }, { timeoutMs: 50 }))).to.equal(
        'RT_ERR_TIMEOUT',
      )
    })

    it('should cancel an ask through its AbortSignal', async () => {
      const ac = new AbortController()
      const p = ctl.ask('peer/a', 'test:sleep', { ms: 2000 }, { signal: ac.signal })
      ac.abort()
      expect(await codeOf(p)).to.equal('RT_ERR_CANCELLED')
    })

    it('should answer an unknown message type with RT_ERR_UNKNOWN_TYPE', async () => {
      // dir:lookup is a valid ask, but only the controller handles it
      expect(await codeOf(ctl.ask('peer/a', 'dir:lookup', {}))).to.equal('RT_ERR_UNKNOWN_TYPE')
    })

    it('should fail asks to a killed actor fast, in flight and after', async () => {
      const inflight = ctl.ask('peer/a', 'test:sleep', { ms: 30000 }, { timeoutMs: 60000 })
      await new Promise((r) => setTimeout(r, 50)) // let the ask reach the peer
      const down = whenDown(dir, 'peer/a')
      process.kill(sup.pid('peer/a')!, 'SIGKILL')
      expect(await codeOf(inflight)).to.equal('RT_ERR_PEER_DEAD')
      await down
      expect(await codeOf(ctl.ask('peer/a', 'test:echo', { data: 1 }, { timeoutMs: 60000 }))).to.equal(
        'RT_ERR_PEER_DEAD',
      )
    })
  })

  describe('when a supervised actor dies', () => {
    it('should detect a hung (stopped) actor by its missed heartbeats within the deadline and restart it', async () => {
      sup = new Supervisor(log, { peer: { restart: 'permanent', intensity: 3, periodMs: 60000 } })
      linkDirectory(sup, dir)
      await startPeers('peer/h')
      const pid = sup.pid('peer/h')!
      const down = whenDown(dir, 'peer/h')
      const backUp = whenUp(dir, 'peer/h')
      const t0 = Date.now()
      process.kill(pid, 'SIGSTOP')
      const reason = await down
      const took = Date.now() - t0
      expect(reason).to.match(/no heartbeat/)
      // deadline 1000 ms, sweep every 50 ms, beats every 100 ms: detection lands in [deadline−beat, deadline+slack]
      expect(took).to.be.within(800, 1000 + 1500)
      await backUp
      expect(sup.pid('peer/h')).to.not.equal(pid)
      expect((await ctl.ask('peer/h', 'test:echo', { data: 'back' })).data).to.equal('back')
    })

    it('should restart a crashed permanent actor and give up on a restart storm with RT_ERR_RESTART_LIMIT', async () => {
      sup = new Supervisor(log, { peer: { restart: 'permanent', intensity: 2, periodMs: 60000 } })
      linkDirectory(sup, dir)
      const restarts: number[] = []
      sup.on('restart', (e) => restarts.push(e.restarts))
      const gaveUp = new Promise<{ code: string; message: string }>((r) =>
        sup.once('giveup', (e) => r(e.error)),
      )
      sup.start(
        peerSpec('peer/crash', {
          env: { AREAL_CONTROLLER: ctl.addr, LOG_LEVEL: 'error', PEER_CRASH_AFTER_MS: '300' },
        }),
      )
      const err = await gaveUp
      expect(err.code).to.equal('RT_ERR_RESTART_LIMIT')
      expect(err.message).to.contain('peer/crash')
      expect(restarts).to.deep.equal([1, 2])
      expect(sup.ids()).to.not.include('peer/crash')
    })

    it('should not restart a transient actor that exits normally', async () => {
      await startPeers('peer/t')
      const exited = new Promise<{ code: number | null }>((r) => sup.once('exit', r))
      await ctl.tell('peer/t', 'sys:stop', { reason: 'done' })
      expect((await exited).code).to.equal(0)
      expect(sup.ids()).to.not.include('peer/t')
      expect(dir.get('peer/t')?.state).to.equal('dead')
    })
  })

  describe('when garbage reaches an inbox', () => {
    it('should survive 10,000+ bad frames, count them, answer readable asks with errors, and still serve', async () => {
      await startPeers('peer/f')
      const addr = dir.get('peer/f')!.addr
      const raw = new Dealer({ linger: 0, receiveTimeout: 10000 })
      raw.connect(addr)
      const good = encode({
        v: PROTOCOL_VERSION,
        kind: Kind.Ask,
        type: 'test:echo',
        id: 1,
        re: 0,
        from: 'fuzz',
        time: 0,
        body: { data: 'x' },
      })[0]
      let seed = 12345
      const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32
      let versionAsks = 0
      const N = 10500
      for (let i = 0; i < N; i++) {
        const k = i % 3
        let f: Uint8Array
        if (k === 0)
          f = Uint8Array.from({ length: 1 + Math.floor(rand() * 64) }, () => Math.floor(rand() * 256))
        else if (k === 1) f = good.subarray(0, Math.floor(rand() * (good.length - 1)))
        else {
          versionAsks++
          f = encode({
            v: 9,
            kind: Kind.Ask,
            type: 'test:echo',
            id: 100 + i,
            re: 0,
            from: 'fuzz',
            time: 0,
            body: {},
          })[0]
        }
        await raw.send(f.length ? f : new Uint8Array([0xc1]))
      }
      // every wrong-version ask is answered with an RT_ERR_VERSION error reply
      let errors = 0
      for await (const parts of raw) {
        // replies may arrive coalesced (runtime/sender.ts): split them as an actor would
        for (const [frame] of unbatch(parts))
          if (Buffer.from(frame).toString('latin1').includes('RT_ERR_VERSION')) errors++
        if (errors === versionAsks) break
      }
      raw.close()
      expect(errors).to.equal(versionAsks)
      expect((await ctl.ask('peer/f', 'test:echo', { data: 'still here' })).data).to.equal('still here')
      const stats = await ctl.ask('peer/f', 'sys:stats', {})
      const rejected = Object.values(stats.rejected).reduce((a, b) => a + b, 0)
      expect(rejected).to.be.at.least(N - 5) // a few random frames may be valid msgpack of another shape: still rejected
      expect(stats.rejected.RT_ERR_VERSION).to.equal(versionAsks)
    })
  })
})
