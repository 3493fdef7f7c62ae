/**
 * End to end on the embedded default: bin/launch with configs/debug.yaml (the tiny quick-start model and
 * domain) as real processes — controller, engine, proxy, rollout, trainer — over real sockets and HTTP.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'

const LAUNCH = new URL('../../bin/launch', import.meta.url).pathname
const DEBUG = new URL('../../configs/debug.yaml', import.meta.url).pathname

interface Metrics {
  step: number
  version: number
  staleness_hist: Record<string, number>
  counters: {
    admitted: number
    trained: number
    filtered: number
    stale: number
    failed: number
    running: number
  }
  reward_mean: number
}

function launch(
  root: string,
  extra: string[],
): { proc: ChildProcess; done: Promise<{ code: number | null; out: string; err: string }> } {
  const proc = spawn(LAUNCH, [DEBUG, `fileroot=${root}`, 'trial_name=e2e', ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  let err = ''
  proc.stdout!.on('data', (d: Buffer) => {
    out += d.toString()
  })
  proc.stderr!.on('data', (d: Buffer) => {
    err += d.toString()
  })
  const done = new Promise<{ code: number | null; out: string; err: string }>((r) =>
    proc.once('exit', (code) => r({ code, out, err })),
  )
  return { proc, done }
}

/** The steps in metrics.jsonl so far: complete lines only (one being appended while polled is left out). */
function metrics(runDir: string): Metrics[] {
  const text = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
  return text
    .slice(0, text.lastIndexOf('\n') + 1)
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Metrics)
}

describe('training end to end (embedded default, debug config)', function () {
  this.timeout(240000)
  let root: string
  let runDir: string

  before(() => {
    root = mkdtempSync(join(tmpdir(), 'areal-e2e-'))
    runDir = join(root, 'debug', 'e2e')
  })
  after(() => rmSync(root, { recursive: true, force: true }))

  it('should train 3 steps with η = 1, counting every admitted group once and bumping versions', async () => {
    const { done } = launch(root, [
      'total_train_steps=3',
      'rollout.max_head_offpolicyness=1',
      'saver.freq_steps=1',
    ])
    const r = await done
    expect(r.code, r.err).to.equal(0)
    expect(r.out).to.match(/reward: start \d\.\d{3} → end \d\.\d{3} over 3 steps/)
    const m = metrics(runDir)
    expect(m.map((x) => x.step)).to.deep.equal([1, 2, 3])
    expect(m.map((x) => x.version)).to.deep.equal([1, 2, 3])
    for (const x of m) {
      for (const k of Object.keys(x.staleness_hist)) expect(Number(k)).to.be.within(0, 1)
      const c = x.counters
      // admitted = trained + filtered + stale + failed + still running or waiting for a batch
      expect(c.admitted).to.be.at.least(c.trained + c.filtered + c.stale + c.failed + c.running)
    }
    expect(m[2].counters.trained).to.equal(3 * 2)
  })

  it('should publish different weights after each update', () => {
    const w = (v: number) => readFileSync(join(runDir, 'weights', `v${v}`, 'model.safetensors'))
    expect(w(1).equals(w(0))).to.equal(false)
    expect(w(2).equals(w(1))).to.equal(false)
    expect(w(3).equals(w(2))).to.equal(false)
  })

  it('should continue at step k+1 with consistent counters when relaunched (recover)', async () => {
    expect(existsSync(join(runDir, 'checkpoints', 'step-3', 'controller.json'))).to.equal(true)
    const before = metrics(runDir)
    const { done } = launch(root, [
      'total_train_steps=5',
      'rollout.max_head_offpolicyness=1',
      'saver.freq_steps=1',
    ])
    const r = await done
    expect(r.code, r.err).to.equal(0)
    expect(r.err).to.contain('resuming at step 3')
    const m = metrics(runDir).slice(before.length)
    expect(m.map((x) => x.step)).to.deep.equal([4, 5])
    expect(m.map((x) => x.version)).to.deep.equal([4, 5])
    expect(m[0].counters.trained).to.equal(before[2].counters.trained + 2)
    expect(m[0].counters.admitted).to.be.greaterThan(before[2].counters.admitted)
  })
})

describe('training end to end when a proxy or engine process crashes', function () {
  this.timeout(240000)
  let root: string
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'areal-e2e-crash-'))
  })
  after(() => rmSync(root, { recursive: true, force: true }))

  for (const role of ['proxy', 'engine'])
    it(`should restart the ${role}, bring it to the current weights and finish the run`, async () => {
      const runDir = join(root, 'debug', `e2e-${role}`)
      const { done } = launch(root, ['total_train_steps=4', 'saver.freq_steps=0', `trial_name=e2e-${role}`])
      const logs = join(runDir, 'logs')
      const firstPid = (file: string) => {
        for (const l of readFileSync(file, 'utf8').split('\n'))
          if (l.includes('"pid"')) return (JSON.parse(l) as { pid: number }).pid
        return undefined
      }
      // once step 1 is trained, kill -9 it (not through the supervisor: a crash)
      const hasStep = () => existsSync(join(runDir, 'metrics.jsonl')) && metrics(runDir).length >= 1
      while (!hasStep()) await new Promise((r) => setTimeout(r, 50))
      const pid = firstPid(join(logs, `${role}-0.log`))
      expect(pid).to.be.a('number')
      process.kill(pid!, 'SIGKILL')
      const r = await done
      expect(r.code, r.err).to.equal(0)
      expect(metrics(runDir).map((x) => x.step)).to.deep.equal([1, 2, 3, 4])
      const ctl = readFileSync(join(logs, 'controller.log'), 'utf8')
      expect(ctl).to.match(new RegExp(`"child":"${role}/0"[^\\n]*"signal":"SIGKILL"[^\\n]*"restart":true`))
      expect(ctl).to.contain('proxy brought to the current weights')
    })
})

describe('training end to end with tensor-parallel trainers (archon:d1t2 on CPU)', function () {
  this.timeout(240000)
  let root: string
  let runDir: string

  before(() => {
    root = mkdtempSync(join(tmpdir(), 'areal-e2e-tp-'))
    runDir = join(root, 'debug', 'e2e')
  })
  after(() => rmSync(root, { recursive: true, force: true }))

  const args = ['allocation_mode=embedded:d1+archon:d1t2', 'saver.freq_steps=1']

  it('should train with two tensor-parallel ranks, publishing full weights and a per-rank optimizer state', async () => {
    const r = await launch(root, ['total_train_steps=2', ...args]).done
    expect(r.code, r.err).to.equal(0)
    expect(r.out).to.match(/reward: start \d\.\d{3} → end \d\.\d{3} over 2 steps/)
    expect(metrics(runDir).map((x) => x.step)).to.deep.equal([1, 2])
    const w = (v: number) => readFileSync(join(runDir, 'weights', `v${v}`, 'model.safetensors'))
    // full HF tensors, gathered from both ranks: the same size as the untouched initial weights
    expect(w(2).length).to.equal(w(0).length)
    expect(w(2).equals(w(1))).to.equal(false)
    const opt = join(runDir, 'checkpoints', 'step-2', 'trainer', 'optimizer')
    for (const t of [0, 1])
      expect(existsSync(join(opt, `optimizer-rank0-of-1-tp${t}-of-2.safetensors`))).to.equal(true)
  })

  it('should resume both tensor-parallel ranks from the checkpoint', async () => {
    const r = await launch(root, ['total_train_steps=3', ...args]).done
    expect(r.code, r.err).to.equal(0)
    expect(r.err).to.contain('resuming at step 2')
    expect(metrics(runDir).map((x) => x.step)).to.deep.equal([1, 2, 3])
  })
})
