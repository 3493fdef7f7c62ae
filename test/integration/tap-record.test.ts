/**
 * bin/tap --record and --replay: a short run's traffic is recorded raw, and the replay prints exactly what
 * the live tap printed (same filter and formatting code), with filters applied offline.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { expect } from 'chai'
import { decode, encode } from '../../runtime/codec.ts'
import type { Envelope } from '../../runtime/messages.ts'

const run = promisify(execFile)
const BIN = new URL('../../bin/', import.meta.url).pathname

async function fails(file: string, args: string[]): Promise<string> {
  try {
    await run(file, args)
  } catch (e) {
    return (e as { stderr: string }).stderr
  }
  throw new Error('did not fail')
}

describe('bin/tap --record and --replay on a short run', function () {
  this.timeout(120000)
  let job: ChildProcess
  let exited: Promise<number | null>
  let root: string
  let runDir: string
  let file: string
  let liveOut: string

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'areal-tap-'))
    runDir = join(root, 'demo', 'tap')
    file = join(root, 'traffic.atap')
    job = spawn(
      join(BIN, 'demo'),
      [
        `fileroot=${root}`,
        'trial_name=tap',
        'demo.tasks=1000000',
        'demo.delay_ms=20',
        'demo.workers=2',
        'log_level=warn',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    exited = new Promise((r) => job.once('exit', (code) => r(code)))
    await new Promise<void>((resolve, reject) => {
      let err = ''
      job.stderr!.on('data', (d: Buffer) => {
        err += d.toString()
        if (err.includes('controller tcp://')) resolve()
      })
      job.once('exit', () => reject(new Error(`demo exited early: ${err}`)))
    })
    for (let i = 0; i < 100; i++) {
      const { stdout } = await run(join(BIN, 'ps'), [runDir])
      if ((stdout.match(/^worker\s/gm) ?? []).length === 2) break
      await new Promise((r) => setTimeout(r, 200))
    }
    const { stdout, stderr } = await run(join(BIN, 'tap'), [runDir, '--record', file, '--count', '40'])
    expect(stderr).to.match(/recording to .*traffic\.atap/)
    expect(stderr).to.match(/recorded \d+ envelopes/)
    liveOut = stdout
  })

  after(async () => {
    if (job.exitCode === null) job.kill('SIGKILL')
    await exited
    rmSync(root, { recursive: true, force: true })
  })

  it('should print exactly what the live tap printed when replayed', async () => {
    expect(liveOut.trim().split('\n')).to.have.length(40)
    const { stdout } = await run(join(BIN, 'tap'), ['--replay', file])
    expect(stdout).to.equal(liveOut)
  })

  it('should keep the frames as the raw bytes the actors received', () => {
    const buf = readFileSync(file)
    expect(buf.subarray(0, 5)).to.deep.equal(Buffer.from([0x41, 0x54, 0x41, 0x50, 1]))
    // the first record's frames decode to an envelope with the recorded actor as receiver or sender
    const metaLen = buf.readUInt32LE(8)
    const meta = JSON.parse(buf.subarray(12, 12 + metaLen).toString()) as { actor: string; at: number }
    let off = 12 + metaLen
    const n = buf.readUInt32LE(off)
    off += 4
    const frames: Uint8Array[] = []
    for (let i = 0; i < n; i++) {
      const len = buf.readUInt32LE(off)
      frames.push(new Uint8Array(buf.subarray(off + 4, off + 4 + len)))
      off += 4 + len
    }
    const env = decode(frames, 1 << 30)
    expect(env.v).to.equal(1)
    expect(meta.at).to.be.a('number')
    expect(liveOut).to.contain(`→ ${meta.actor} `)
  })

  it('should apply type, actor and count filters offline, with JSON and raw output', async () => {
    const json = (await run(join(BIN, 'tap'), ['--replay', file, '--type', 'demo:work', '--json'])).stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string; to: string; from: string; kind: string })
    expect(json.length).to.be.greaterThan(0)
    expect(json.length).to.equal(liveOut.split('\n').filter((l) => / demo:work #/.test(l)).length)
    for (const e of json) expect(e.type).to.equal('demo:work')
    const w1 = (await run(join(BIN, 'tap'), ['--replay', file, '--actor', 'worker/1'])).stdout
      .trim()
      .split('\n')
    expect(w1.length).to.be.greaterThan(0)
    for (const l of w1) expect(l).to.match(/worker\/1/)
    const three = (await run(join(BIN, 'tap'), ['--replay', file, '--count', '3', '--raw'])).stdout.split(
      '\n',
    )
    expect(three.filter((l) => /^\d\d:\d\d:\d\d\.\d{3} /.test(l))).to.have.length(3)
    expect(three.filter((l) => /^ {2}[0-9a-f]+$/.test(l)).length).to.be.at.least(3)
  })

  it('should refuse a file that is not a record, and name the offset of a truncated record', async () => {
    const bad = join(root, 'bad.atap')
    writeFileSync(bad, 'hello world')
    expect(await fails(join(BIN, 'tap'), ['--replay', bad])).to.match(/CFG_ERR_FILE: .*no ATAP header/)
    const cut = join(root, 'cut.atap')
    writeFileSync(cut, readFileSync(file))
    truncateSync(cut, statSync(cut).size - 3)
    expect(await fails(join(BIN, 'tap'), ['--replay', cut])).to.match(
      /RT_ERR_DECODE: .*record at byte \d+ is truncated/,
    )
  })

  it('should keep only envelopes naming a session with --session', async () => {
    // a record file written by hand: three proxy messages about two sessions
    const env = (id: number, type: string, body: unknown) =>
      ({ v: 1, kind: 1, type, id, re: 0, from: 'rollout/0', time: 1, body }) as unknown as Envelope
    const records = [
      env(1, 'proxy:session:end', { sessionId: 's1' }),
      env(2, 'proxy:session:end', { sessionId: 's2' }),
      env(3, 'proxy:export', { sessionIds: ['s2', 's1'], style: 'concat' }),
    ].map((e) => {
      const meta = Buffer.from(JSON.stringify({ at: 1000, actor: 'proxy/0', dir: 'in' }))
      const frames = encode(e).map((f) => Buffer.from(f))
      const u32 = (n: number) => {
        const b = Buffer.alloc(4)
        b.writeUInt32LE(n)
        return b
      }
      return Buffer.concat([
        u32(meta.length),
        meta,
        u32(frames.length),
        ...frames.flatMap((f) => [u32(f.length), f]),
      ])
    })
    const hand = join(root, 'sessions.atap')
    writeFileSync(hand, Buffer.concat([Buffer.from([0x41, 0x54, 0x41, 0x50, 1, 0, 0, 0]), ...records]))
    const lines = (await run(join(BIN, 'tap'), ['--replay', hand, '--session', 's1'])).stdout
      .trim()
      .split('\n')
    expect(lines).to.have.length(2)
    expect(lines[0]).to.match(/rollout\/0 → proxy\/0 ask proxy:session:end #1 \{"sessionId":"s1"\}$/)
    expect(lines[1]).to.match(/proxy:export #3 /)
  })
})
