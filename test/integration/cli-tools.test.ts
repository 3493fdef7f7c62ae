import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { expect } from 'chai'

const run = promisify(execFile)
const BIN = new URL('../../bin/', import.meta.url).pathname

describe('bin/ps, bin/tap and bin/send against a running job', function () {
  this.timeout(120000)
  let job: ChildProcess
  let root: string
  let runDir: string
  let exited: Promise<number | null>

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'areal-cli-'))
    runDir = join(root, 'demo', 'cli')
    job = spawn(
      join(BIN, 'demo'),
      [
        `fileroot=${root}`,
        'trial_name=cli',
        'demo.tasks=1000000',
        'demo.delay_ms=20',
        'demo.workers=2',
        'log_level=warn',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    exited = new Promise((r) => job.once('exit', (code) => r(code)))
    // the job prints its controller address once the inbox is bound
    await new Promise<void>((resolve, reject) => {
      let err = ''
      job.stderr!.on('data', (d: Buffer) => {
        err += d.toString()
        if (err.includes('controller tcp://')) resolve()
      })
      job.once('exit', () => reject(new Error(`demo exited early: ${err}`)))
    })
    // wait until both workers have registered
    for (let i = 0; i < 100; i++) {
      const { stdout } = await run(join(BIN, 'ps'), [runDir])
      if ((stdout.match(/^worker\s/gm) ?? []).length === 2) return
      await new Promise((r) => setTimeout(r, 200))
    }
    throw new Error('workers did not register')
  })

  after(async () => {
    if (job.exitCode === null) job.kill('SIGKILL')
    await exited
    rmSync(root, { recursive: true, force: true })
  })

  it('should list the controller and both workers with address, state and heartbeat age', async () => {
    const { stdout } = await run(join(BIN, 'ps'), [runDir])
    const lines = stdout.trim().split('\n')
    expect(lines[0]).to.match(/^job tcp:\/\/127\.0\.0\.1:\d+ · up \d+s · 3 actors$/)
    expect(lines[1]).to.match(/^ROLE\s+ID\s+ADDRESS\s+STATE\s+HEARTBEAT\s+PID\s+HOST$/)
    expect(stdout).to.match(/^controller\s+controller\s+tcp:\/\/127\.0\.0\.1:\d+\s+alive\s+0\.0s/m)
    for (const w of ['worker/0', 'worker/1'])
      expect(stdout).to.match(
        new RegExp(`^worker\\s+${w}\\s+tcp://\\S+\\s+alive\\s+\\d+\\.\\ds\\s+\\d+`, 'm'),
      )
  })

  it('should print JSON with --json', async () => {
    const { stdout } = await run(join(BIN, 'ps'), [runDir, '--json'])
    const res = JSON.parse(stdout) as { entries: { id: string; state: string }[] }
    expect(res.entries.map((e) => e.id).sort()).to.deep.equal(['controller', 'worker/0', 'worker/1'])
  })

  it('should tap live envelopes filtered by type', async () => {
    const { stdout, stderr } = await run(join(BIN, 'tap'), [runDir, '--type', 'demo:work', '--count', '6'])
    expect(stderr).to.match(/attached to tcp:/)
    const lines = stdout.trim().split('\n')
    expect(lines).to.have.length(6)
    for (const l of lines) expect(l).to.match(/^\d\d:\d\d:\d\d\.\d{3} \S+ → \S+ (ask|reply) demo:work #\d+/)
    expect(stdout).to.match(/controller → worker\/\d ask demo:work #\d+ \{"lo":\d+,"hi":\d+\}/)
    expect(stdout).to.match(
      /worker\/\d → controller reply demo:work #\d+ re #\d+ \{"primes":\d+,"worker":"worker\/\d"\}/,
    )
  })

  it('should tap as JSON filtered by actor', async () => {
    const { stdout } = await run(join(BIN, 'tap'), [runDir, '--actor', 'worker/1', '--json', '--count', '3'])
    const recs = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { to: string; from: string; type: string })
    expect(recs).to.have.length(3)
    for (const r of recs) expect([r.to, r.from]).to.include('worker/1')
  })

  it('should send one ask and print the reply', async () => {
    const { stdout } = await run(join(BIN, 'send'), [
      '--job',
      runDir,
      'worker/0',
      'demo:work',
      '{"lo":0,"hi":100}',
    ])
    expect(JSON.parse(stdout)).to.deep.equal({ primes: 25, worker: 'worker/0' })
  })

  it('should fail with a coded error for an unknown actor', async () => {
    try {
      await run(join(BIN, 'send'), ['--job', runDir, 'worker/9', 'test:echo', '{"data":1}'])
      expect.fail('send succeeded')
    } catch (e) {
      expect((e as { stderr: string }).stderr).to.contain('RT_ERR_NO_ACTOR')
    }
  })

  it('should leave the run directory with the controller address', () => {
    expect(existsSync(join(runDir, 'controller.addr'))).to.equal(true)
  })

  it('should stop the job cleanly on Ctrl-C (SIGINT), workers included', async () => {
    job.kill('SIGINT')
    expect(await exited).to.equal(0)
    expect(existsSync(join(runDir, 'logs', 'worker-0.log'))).to.equal(true)
  })
})
