import { expect } from 'chai'
import { BATCH_MARK, Sender, unbatch } from '../../runtime/sender.ts'

/** A socket whose sends complete only when the test releases them (a full high-water mark). */
class GatedSocket {
  sent: Uint8Array[][] = []
  private gates: (() => void)[] = []
  send(frames: Uint8Array[]): Promise<void> {
    this.sent.push(frames)
    return new Promise((r) => this.gates.push(r))
  }
  release(): void {
    for (const g of this.gates.splice(0)) g()
  }
}
const b = (...xs: number[]) => new Uint8Array(xs)
const tick = () => new Promise((r) => setImmediate(r))

describe('sender', () => {
  describe('when the socket is idle', () => {
    it('should send a message alone, unbatched', async () => {
      const sock = new GatedSocket()
      const s = new Sender(sock, 'test')
      const p = s.send([b(1)])
      sock.release()
      await p
      expect(sock.sent).to.deep.equal([[b(1)]])
    })
  })

  describe('when messages queue behind a blocked send', () => {
    it('should coalesce them into one batch in order and settle every caller', async () => {
      const sock = new GatedSocket()
      const s = new Sender(sock, 'test')
      const done: number[] = []
      const ps = [1, 2, 3, 4].map((i) => s.send([b(i)]).then(() => done.push(i)))
      expect(s.depth).to.equal(3)
      sock.release()
      await tick()
      expect(sock.sent[1]).to.deep.equal([b(BATCH_MARK), b(2), b(3), b(4)])
      sock.release()
      await Promise.all(ps)
      expect(done).to.deep.equal([1, 2, 3, 4])
      expect(unbatch(sock.sent[1])).to.deep.equal([[b(2)], [b(3)], [b(4)]])
    })

    it('should not batch multi-frame messages (bulk arrays) nor replies to different peers', async () => {
      const sock = new GatedSocket()
      const s = new Sender(sock, 'router', 1)
      const ps = [
        s.send([b(9), b(1)]),
        s.send([b(9), b(2), b(0, 0)]), // bulk: envelope + array frame
        s.send([b(9), b(3)]),
        s.send([b(8), b(4)]), // another peer's routing id
      ]
      for (let i = 0; i < 4; i++) {
        sock.release()
        await tick()
      }
      sock.release()
      await Promise.all(ps)
      expect(sock.sent).to.deep.equal([
        [b(9), b(1)],
        [b(9), b(2), b(0, 0)],
        [b(9), b(3)],
        [b(8), b(4)],
      ])
    })

    it('should reject every caller of a batch whose send fails, with RT_ERR_SEND', async () => {
      let n = 0
      const sock = {
        send: () =>
          n++ === 0
            ? new Promise<void>((r) => setImmediate(r))
            : Promise.reject(Object.assign(new Error('x'), { code: 'EAGAIN' })),
      }
      const s = new Sender(sock, 'test')
      const first = s.send([b(1)])
      const rest = [s.send([b(2)]), s.send([b(3)])].map((p) => p.catch((e: { code: string }) => e.code))
      await first
      expect(await Promise.all(rest)).to.deep.equal(['RT_ERR_SEND', 'RT_ERR_SEND'])
    })
  })
})
