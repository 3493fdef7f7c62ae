/**
 * bin/launch CONFIG.yaml [key.path=value …] — train with asynchronous PPO.
 *
 * Plans processes from allocation_mode, starts them (scheduler.type=local: child processes supervised
 * here), runs the controller's training loop in this process, shows a progress bar of steps with reward
 * and throughput, and writes everything under <fileroot>/<experiment_name>/<trial_name>/:
 *   config.json       the resolved config every actor reads     controller.addr   for bin/ps, tap, send
 *   metrics.jsonl     one line per step                          logs/<role>-<i>.log
 *   weights/v<N>/     published HF safetensors per version       checkpoints/step-<N>/
 * With recover.mode=auto (default) a relaunch continues from the newest complete checkpoint.
 * Ctrl-C stops after the current step (twice: at once); a failure exits non-zero with a one-line reason.
 */
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { type RunConfig, runSchema } from '../actors/config.ts'
import { busOps } from '../actors/controller/bus-ops.ts'
import { TaskDataset } from '../actors/controller/dataset.ts'
import { type ControllerState, type StepMetrics, TrainingLoop } from '../actors/controller/loop.ts'
import { dataDirOf } from '../actors/rollout/tau2/config.ts'
import { loadTasks } from '../actors/rollout/tau2/data.ts'
import { Actor } from '../runtime/actor.ts'
import { parseAllocation, plan } from '../runtime/allocation.ts'
import { toBusConfig } from '../runtime/bus-config.ts'
import { loadConfig } from '../runtime/config.ts'
import { Directory } from '../runtime/directory.ts'
import { fail } from '../runtime/errors.ts'
import { writeJobAddress } from '../runtime/job.ts'
import { createLogger } from '../runtime/log.ts'
import { Progress } from '../runtime/progress.ts'
import { type ChildSpec, linkDirectory, Supervisor } from '../runtime/supervisor.ts'

const MAIN = resolve(import.meta.dirname, '../actors/main.ts')

/** The newest checkpoint with a controller.json (a complete one). */
function latestCheckpoint(runDir: string): { dir: string; state: ControllerState } | undefined {
  const root = join(runDir, 'checkpoints')
  if (!existsSync(root)) return undefined
  const steps = readdirSync(root)
    .map((n) => /^step-(\d+)$/.exec(n))
    .filter((m): m is RegExpExecArray => !!m && existsSync(join(root, m[0], 'controller.json')))
    .sort((a, b) => Number(b[1]) - Number(a[1]))
  if (!steps.length) return undefined
  const dir = join(root, steps[0][0])
  return { dir, state: JSON.parse(readFileSync(join(dir, 'controller.json'), 'utf8')) as ControllerState }
}

interface Job {
  cfg: RunConfig
  runDir: string
  specs: ChildSpec[]
  trainerHead: string
}

/** Turn the config into process specs (local scheduler). */
function planJob(
  cfg: RunConfig,
  runDir: string,
  configPath: string,
  ctlAddr: string,
  resumeFrom?: string,
): Job {
  const alloc = parseAllocation(cfg.allocation_mode)
  const procs = plan(alloc, { nNodes: cfg.cluster.n_nodes, nGpusPerNode: cfg.cluster.n_gpus_per_node })
  if (!alloc.training)
    throw fail('CFG_ERR_VALUE', `allocation_mode ${cfg.allocation_mode}: no training pool (archon:…)`)
  if (alloc.inference && alloc.inference.backend !== 'embedded')
    throw fail(
      'CFG_ERR_VALUE',
      `allocation_mode: ${alloc.inference.backend} servers are started by the Slurm scheduler (not implemented yet); use embedded:dN`,
    )
  const base = { command: process.execPath, cwd: process.cwd() }
  const env = (id: string, extra: Record<string, string> = {}) => ({
    AREAL_CONFIG: configPath,
    AREAL_CONTROLLER: ctlAddr,
    AREAL_ACTOR_ID: id,
    GLIBC_TUNABLES: process.env.GLIBC_TUNABLES ?? 'glibc.malloc.hugetlb=1',
    ...extra,
  })
  const specs: ChildSpec[] = []
  const log = (id: string) => join(runDir, 'logs', `${id.replace('/', '-')}.log`)
  const add = (id: string, role: string, extra: Record<string, string> = {}) =>
    specs.push({
      ...base,
      id,
      role,
      args: [...process.execArgv, MAIN, role],
      env: env(id, extra),
      logFile: log(id),
    })
  const engines = procs.filter((p) => p.role === 'engine').map((p) => `engine/${p.rank}`)
  const trainers = procs.filter((p) => p.role === 'trainer')
  for (const p of trainers)
    add(`trainer/${p.rank}`, 'trainer', {
      AREAL_RANK: String(p.rank),
      AREAL_WORLD_SIZE: String(trainers.length),
      AREAL_RDZV: join(runDir, `rdzv-${Date.now()}`),
      ...(resumeFrom ? { AREAL_RESUME_FROM: join(resumeFrom, 'trainer') } : {}),
    })
  for (const e of engines) add(e, 'engine')
  for (let i = 0; i < cfg.proxy_replicas; i++) {
    const mine = engines.filter((_, j) => j % cfg.proxy_replicas === i)
    add(`proxy/${i}`, 'proxy', {
      AREAL_ENGINES: JSON.stringify(mine.map((actor) => ({ kind: 'embedded', actor }))),
    })
  }
  for (let i = 0; i < cfg.rollout.workers; i++) add(`rollout/${i}`, 'rollout')
  return { cfg, runDir, specs, trainerHead: 'trainer/0' }
}

async function main(): Promise<number> {
  const args = process.argv.slice(2)
  if (!args[0] || args[0].includes('='))
    throw fail('CFG_ERR_FILE', 'usage: bin/launch CONFIG.yaml [key.path=value …]')
  const file = args.shift()!
  const cfg = loadConfig(runSchema, { file, overrides: args })
  if (cfg.scheduler.type !== 'local')
    throw fail('CFG_ERR_VALUE', 'scheduler.type=slurm is not implemented yet (issue 7); use local')
  const runDir = resolve(cfg.fileroot, cfg.experiment_name, cfg.trial_name)
  mkdirSync(join(runDir, 'logs'), { recursive: true })
  const configPath = join(runDir, 'config.json')
  writeFileSync(configPath, `${JSON.stringify(cfg, null, 2)}\n`)
  const log = createLogger({
    level: cfg.log_level,
    file: join(runDir, 'logs', 'controller.log'),
    name: 'controller',
  })
  const taskIds = loadTasks(dataDirOf(cfg.econfig), cfg.econfig.domain, cfg.econfig.split).map((t) => t.id)
  const resume = cfg.recover.mode === 'auto' ? latestCheckpoint(runDir) : undefined

  const ctl = new Actor({ id: 'controller', role: 'controller', log, bus: toBusConfig(cfg.bus) })
  const dir = new Directory(ctl)
  const sup = new Supervisor(log, {
    rollout: { restart: 'transient', intensity: 3, periodMs: 60000 },
    proxy: { restart: 'transient', intensity: 3, periodMs: 60000 },
    engine: { restart: 'transient', intensity: 3, periodMs: 60000 },
    trainer: { restart: 'temporary', intensity: 0, periodMs: 60000 },
  })
  let loop: TrainingLoop | undefined
  let job: Job | undefined
  let failure: Error | undefined
  const failWith = (e: Error) => {
    failure ??= e
    loop?.stop()
  }
  await ctl.start()
  dir.start()
  linkDirectory(sup, dir)
  writeJobAddress(runDir, ctl.addr)
  process.stderr.write(
    `launch: controller ${ctl.addr} · run dir ${runDir}${resume ? ` · resuming at step ${resume.state.step}` : ''}\n`,
  )

  let interrupts = 0
  process.on('SIGINT', () => {
    if (++interrupts > 1) process.exit(130)
    process.stderr.write('\nlaunch: stopping after the current step (Ctrl-C again to stop now)\n')
    loop?.stop()
  })
  job = planJob(cfg, runDir, configPath, ctl.addr, resume?.dir)
  sup.on('giveup', (e) => failWith(e.error))
  dir.on('down', (e, reason, cause) => {
    if (e.role === 'trainer' && cause !== 'unregister')
      failWith(fail('RT_ERR_PEER_DEAD', `${e.id}: ${reason}`))
    loop?.poke()
  })
  dir.on('up', () => loop?.poke())

  try {
    const up = new Promise<void>((res) => {
      const want = new Set(job.specs.map((s) => s.id))
      dir.on('up', (e) => {
        want.delete(e.id)
        if (want.size === 0) res()
      })
    })
    for (const s of job.specs) sup.start(s)
    const bar0 = new Progress('starting actors', job.specs.length)
    dir.on('up', () => bar0.tick())
    await Promise.race([
      up,
      new Promise((_, rej) => sup.once('giveup', (e) => rej(e.error))),
      new Promise((_, rej) =>
        sup.on(
          'exit',
          (e) =>
            e.abnormal &&
            rej(
              fail(
                'RT_ERR_SPAWN',
                `${e.id} exited (${e.signal ?? e.code}) before registering; see ${join(runDir, 'logs')}`,
              ),
            ),
        ),
      ),
    ])
    bar0.finish()

    const ops = busOps({
      actor: ctl,
      dir,
      trainer: job.trainerHead,
      groupTimeoutMs: cfg.rollout.episode_timeout_s * 2000,
      stepTimeoutMs: 3600_000,
    })
    const dataset = new TaskDataset(taskIds, cfg.seed, cfg.train_dataset.shuffle)
    const bar = new Progress('train', cfg.total_train_steps)
    const curve: number[] = []
    loop = new TrainingLoop(
      {
        batchSize: cfg.train_dataset.batch_size,
        nSamples: cfg.gconfig.n_samples,
        eta: cfg.rollout.max_head_offpolicyness,
        maxConcurrent: cfg.rollout.max_concurrent_rollouts,
        totalSteps: cfg.total_train_steps,
        seed: cfg.seed,
        filterMeanAbove: cfg.rollout.filter_mean_reward_above,
        filterNoVariance: cfg.rollout.filter_no_variance,
        saveEvery: cfg.saver.freq_steps,
        weightsDir: join(runDir, 'weights'),
        checkpointDir: join(runDir, 'checkpoints'),
        passK: cfg.gconfig.n_samples,
      },
      dataset,
      ops,
      log,
      (m: StepMetrics) => {
        appendFileSync(join(runDir, 'metrics.jsonl'), `${JSON.stringify(m)}\n`)
        curve.push(m.reward_mean as number)
        bar.set(
          m.step,
          `reward ${(m.reward_mean as number).toFixed(3)} · v${m.version} · ${(m.tokens_per_s as number).toFixed(0)} tok/s`,
        )
        log.info({ step: m.step, reward: m.reward_mean, version: m.version }, 'step done')
      },
    )
    if (resume) loop.restore(resume.state)
    // the engines start from the trainer's weights of the current version
    const v0 = loop.staleness.version
    const wdir = join(runDir, 'weights', `v${v0}`)
    await ops.publish(v0, wdir)
    await ops.loadWeights(wdir, v0)
    bar.set(loop.step)
    const end = await loop.run()
    bar.finish()
    if (failure) throw failure
    // the final state is a checkpoint too (recover continues from it)
    if (end.step > (resume?.state.step ?? 0) && end.step % Math.max(1, cfg.saver.freq_steps) !== 0)
      await ops.checkpoint(join(runDir, 'checkpoints', `step-${end.step}`), end.step, end)
    const k = Math.min(3, Math.max(1, Math.floor(curve.length / 3)))
    const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length)
    if (curve.length)
      process.stdout.write(
        `reward: start ${avg(curve.slice(0, k)).toFixed(3)} → end ${avg(curve.slice(-k)).toFixed(3)} over ${curve.length} steps (step ${end.step}, version ${end.version}); metrics in ${join(runDir, 'metrics.jsonl')}\n`,
      )
    return 0
  } catch (e) {
    const err = (failure ?? e) as { code?: string; message: string }
    process.stderr.write(`launch failed: ${err.code ?? 'error'}: ${err.message}\n`)
    log.error({ code: err.code, err: err.message }, 'launch failed')
    return 1
  } finally {
    loop?.stop()
    // stop in dependency order: no new episodes, then the HTTP front, then engines and trainers
    for (const role of ['rollout', 'proxy', 'engine', 'trainer'])
      await Promise.all(job?.specs.filter((s) => s.role === role).map((s) => sup.stop(s.id, 5000)) ?? [])
    await sup.stopAll(5000)
    dir.stop()
    await ctl.stop('done', 500)
  }
}

try {
  process.exitCode = await main()
} catch (e) {
  const err = e as { code?: string; message: string }
  process.stderr.write(`launch failed: ${err.code ?? 'error'}: ${err.message}\n`)
  process.exitCode = 1
}
