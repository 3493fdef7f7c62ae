/**
 * The weight update's fan-out to proxies (actors/controller/bus-ops.ts) with a real Actor and Directory
 * for the controller, and proxies as real actors in this process: one answers, one dies mid-update (its
 * actor stops; the directory marks it dead), one answers with an error.
 */
import { expect } from 'chai'
import { busOps } from '../../actors/controller/bus-ops.ts'
import { Actor } from '../../runtime/actor.ts'
import { Directory } from '../../runtime/directory.ts'
import { fail } from '../../runtime/errors.ts'
import { silentLogger } from '../../runtime/log.ts'

describe('the controller fanning a weight update out to the proxies', function () {
  this.timeout(30_000)
  let ctl: Actor
  let dir: Directory
  const proxies: Actor[] = []

  async function proxy(id: string, onUpdate: (version: number) => Promise<unknown>): Promise<Actor> {
    const a = new Actor({ id, role: 'proxy', log: silentLogger(), controller: ctl.addr })
    a.handle({
      'proxy:update_weights': async (req) => {
        await onUpdate(req.version)
        return { version: req.version }
      },
    })
    await a.start()
    proxies.push(a)
    return a
  }

  beforeEach(async () => {
    ctl = new Actor({
      id: 'controller',
      role: 'controller',
      log: silentLogger(),
      bus: { heartbeatMs: 50, deadlineMs: 400 },
    })
    dir = new Directory(ctl)
    await ctl.start()
    dir.start()
  })
  afterEach(async () => {
    for (const p of proxies.splice(0)) await p.stop('test over', 100).catch(() => {})
    dir.stop()
    await ctl.stop('test over', 100)
  })

  const until = async (cond: () => boolean) => {
    while (!cond()) await new Promise((r) => setTimeout(r, 10))
  }
  const alive = () =>
    dir
      .select(undefined, ['proxy'])
      .filter((e) => e.state === 'alive')
      .map((e) => e.id)

  it('should leave out a proxy that dies during the update and still update the others', async () => {
    const seen: string[] = []
    await proxy('proxy/0', async (v) => seen.push(`0@${v}`))
    let dying: Actor | undefined
    dying = await proxy('proxy/1', async () => {
      // dies before answering: stops beating and never replies
      void dying!.stop('crash', 0)
      await new Promise(() => {})
    })
    await until(() => alive().length === 2)
    const ops = busOps({ actor: ctl, dir, trainer: 'trainer/0', groupTimeoutMs: 5000, stepTimeoutMs: 5000 })
    await ops.loadWeights('/w/v3', 3, false)
    expect(seen).to.deep.equal(['0@3'])
    await until(() => alive().length === 1) // the directory learns of it too (its unregister)
    expect(alive()).to.deep.equal(['proxy/0'])
  })

  it('should fail the update when a live proxy answers with an error', async () => {
    await proxy('proxy/0', async () => {
      throw fail('PRX_ERR_ENGINE_REFUSED', 'engine refused the weights')
    })
    await until(() => alive().length === 1)
    const ops = busOps({ actor: ctl, dir, trainer: 'trainer/0', groupTimeoutMs: 5000, stepTimeoutMs: 5000 })
    let code: string | undefined
    await ops.loadWeights('/w/v3', 3, false).catch((e: { code?: string }) => {
      code = e.code
    })
    expect(code).to.equal('PRX_ERR_ENGINE_REFUSED')
  })
})
