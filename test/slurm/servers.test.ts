/**
 * Inference servers started by the launcher (local scheduler) from their documented command line: the
 * debug config with allocation_mode sglang:d1 runs against an SGLang CLI stand-in (test/slurm/
 * python-standin set as scheduler.servers.python; SGLang itself cannot run here). The launcher waits for
 * /health, wires the server's URL into the proxy, and weight updates go through SGLang's HTTP API.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import { freePort } from '../../runtime/net.ts'

const LAUNCH = new URL('../../bin/launch', import.meta.url).pathname
const DEBUG = new URL('../../configs/debug.yaml', import.meta.url).pathname
const PYTHON = new URL('./python-standin', import.meta.url).pathname

function launch(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const proc = spawn(LAUNCH, [DEBUG, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  proc.stdout!.on('data', (d: Buffer) => {
    out += d.toString()
  })
  proc.stderr!.on('data', (d: Buffer) => {
    err += d.toString()
  })
  return new Promise((r) => proc.once('exit', (code) => r({ code, out, err })))
}

describe('a run whose allocation_mode names SGLang servers (local scheduler)', function () {
  this.timeout(180000)
  let root: string
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'areal-servers-'))
  })
  after(() => rmSync(root, { recursive: true, force: true }))

  it('should start the server by its command line, wait for it, and train through it', async () => {
    const port = await freePort()
    const r = await launch([
      `fileroot=${root}`,
      'trial_name=sglang',
      'allocation_mode=sglang:d1+archon:d1',
      `scheduler.servers.python=${PYTHON}`,
      `scheduler.servers.port=${port}`,
      'total_train_steps=2',
      // the stand-in's deterministic toy model gives every episode of a group the same reward: train them anyway
      'rollout.filter_no_variance=false',
    ])
    expect(r.code, r.err).to.equal(0)
    const runDir = join(root, 'debug', 'sglang')
    const serverLog = readFileSync(join(runDir, 'logs', 'server-0.log'), 'utf8')
    expect(serverLog).to.contain(
      `sglang stand-in: -m sglang.launch_server --model-path configs/models/quickstart --host 0.0.0.0 --port ${port} --tp-size 1 --random-seed 1`,
    )
    const config = JSON.parse(readFileSync(join(runDir, 'config.json'), 'utf8'))
    expect(config.allocation_mode).to.equal('sglang:d1+archon:d1')
    const m = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { step: number; version: number; counters: { trained: number } })
    expect(m.map((x) => x.version)).to.deep.equal([1, 2])
    expect(m[1].counters.trained).to.equal(4)
    // the proxy generated through the server at its planned URL
    expect(readFileSync(join(runDir, 'logs', 'proxy-0.log'), 'utf8')).to.contain(`127.0.0.1:${port}`)
  })

  it('should publish by broadcast to the server (update_weights_from_distributed) with publish_mode broadcast', async () => {
    const port = await freePort()
    const r = await launch([
      `fileroot=${root}`,
      'trial_name=sglang-broadcast',
      'allocation_mode=sglang:d1+archon:d1',
      `scheduler.servers.python=${PYTHON}`,
      `scheduler.servers.port=${port}`,
      'total_train_steps=2',
      'rollout.filter_no_variance=false',
      'actor.publish_mode=broadcast',
    ])
    expect(r.code, r.err).to.equal(0)
    const runDir = join(root, 'debug', 'sglang-broadcast')
    const m = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { version: number })
    expect(m.map((x) => x.version)).to.deep.equal([1, 2])
    const trainerLog = readFileSync(join(runDir, 'logs', 'trainer-0.log'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { msg: string; version?: number; buckets?: number; bytes?: number })
    const sent = trainerLog.filter((l) => l.msg === 'weights broadcast to the engines')
    expect(sent.map((l) => l.version)).to.deep.equal([0, 1, 2]) // the initial weights, then each update
    // every parameter of the (tiny) model went out: float32 bytes of its 96k parameters
    for (const l of sent) expect(l.bytes).to.equal(96128 * 4)
  })

  it('should fail with LCH_ERR_SERVER when the server exits before serving', async () => {
    const r = await launch([
      `fileroot=${root}`,
      'trial_name=badserver',
      'allocation_mode=sglang:d1+archon:d1',
      `scheduler.servers.python=${PYTHON}`,
      `scheduler.servers.port=${await freePort()}`,
      'scheduler.servers.extra_args=[--no-such-flag, 1]',
    ])
    expect(r.code).to.equal(1)
    expect(r.err).to.match(/launch failed: LCH_ERR_SERVER: .*exited with code 2/)
    expect(readFileSync(join(root, 'debug', 'badserver', 'logs', 'server-0.log'), 'utf8')).to.contain(
      'unrecognized arguments: --no-such-flag',
    )
  })
})
