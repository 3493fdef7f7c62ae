/**
 * bin/launch CONFIG.yaml [key.path=value …] — train with asynchronous PPO.
 *
 * Plans processes from allocation_mode (runtime/scheduler/plan.ts), starts them through the scheduler
 * (local: child processes supervised here; slurm: this command submits one sbatch job and follows it,
 * and bin/launch inside the allocation starts every role as a supervised srun step), runs the
 * controller's training loop, shows a progress bar of steps with reward and throughput, and writes
 * everything under <fileroot>/<experiment_name>/<trial_name>/:
 *   config.json       the resolved config every actor reads     controller.addr   for bin/ps, tap, send
 *   metrics.jsonl     one line per step                          logs/<role>-<i>.log
 *   weights/v<N>/     published HF safetensors per version       checkpoints/step-<N>/
 * With recover.mode=auto (default) a relaunch continues from the newest complete checkpoint.
 * Ctrl-C stops after the current step (twice: at once; under Slurm it cancels the job); a failure exits
 * non-zero with a one-line reason. The controller also answers ctl:spawn (bin/add-rollout: more rollout
 * actors join the running job) and ctl:drain (bin/drain-rollout: one leaves after its groups finish).
 */
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { type RunConfig, runSchema } from '../actors/config.ts'
import { busOps } from '../actors/controller/bus-ops.ts'
import { TaskDataset } from '../actors/controller/dataset.ts'
import { type ControllerState, type StepMetrics, TrainingLoop } from '../actors/controller/loop.ts'
import { RolloutMembership } from '../actors/controller/membership.ts'
import { dataDirOf } from '../actors/rollout/tau2/config.ts'
import { loadTasks } from '../actors/rollout/tau2/data.ts'
import { Actor } from '../runtime/actor.ts'
import { toBusConfig } from '../runtime/bus-config.ts'
import { loadConfig } from '../runtime/config.ts'
import { Directory } from '../runtime/directory.ts'
import { fail } from '../runtime/errors.ts'
import { writeJobAddress } from '../runtime/job.ts'
import { createLogger } from '../runtime/log.ts'
import { Progress } from '../runtime/progress.ts'
import { localScheduler, type Scheduler } from '../runtime/scheduler/local.ts'
import { type JobPlan, planJob, type RoleProcess } from '../runtime/scheduler/plan.ts'
import { waitRegistered } from '../runtime/scheduler/registered.ts'
import { waitHealthy } from '../runtime/scheduler/servers.ts'
import { submitAndFollow } from '../runtime/scheduler/slurm-job.ts'
import { slurmStepScheduler } from '../runtime/scheduler/slurm-steps.ts'
import { linkDirectory, Supervisor } from '../runtime/supervisor.ts'

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

/** Inside a Slurm allocation started by our own batch script (then roles are srun steps). */
const insideSlurm = () => process.env.AREAL_SLURM_INSIDE === '1' && !!process.env.SLURM_JOB_ID

/**
 * Across nodes, actors must reach each other: loopback binds become every-interface binds (advertised
 * under the host name).
 */
function forCluster(cfg: RunConfig): RunConfig {
  if (cfg.scheduler.type !== 'slurm' || cfg.cluster.n_nodes <= 1) return cfg
  const bind = cfg.bus.bind.replace('//127.0.0.1:', '//0.0.0.0:').replace('//localhost:', '//0.0.0.0:')
  const host = ['127.0.0.1', 'localhost'].includes(cfg.proxy.host) ? '0.0.0.0' : cfg.proxy.host
  return { ...cfg, bus: { ...cfg.bus, bind }, proxy: { ...cfg.proxy, host } }
}

async function main(): Promise<number> {
  const args = process.argv.slice(2)
  if (!args[0] || args[0].includes('='))
    throw fail('CFG_ERR_FILE', 'usage: bin/launch CONFIG.yaml [key.path=value …]')
  const file = args.shift()!
  const cfg = forCluster(loadConfig(runSchema, { file, overrides: args }))
  const runDir = resolve(cfg.fileroot, cfg.experiment_name, cfg.trial_name)
  mkdirSync(join(runDir, 'logs'), { recursive: true })
  const configPath = join(runDir, 'config.json')
  writeFileSync(configPath, `${JSON.stringify(cfg, null, 2)}\n`)
  if (cfg.scheduler.type === 'slurm' && !insideSlurm()) {
    // a bad allocation_mode or cluster shape fails here, before anything is queued
    planJob(cfg, { runDir, hosts: Array.from({ length: cfg.cluster.n_nodes }, (_, i) => `node${i}`) })
    return submitAndFollow({
      slurm: cfg.scheduler.slurm,
      jobName: cfg.scheduler.slurm.job_name || `areal-${cfg.experiment_name}-${cfg.trial_name}`,
      runDir,
      configPath,
      nNodes: cfg.cluster.n_nodes,
      nGpusPerNode: cfg.cluster.n_gpus_per_node,
      cwd: process.cwd(),
    })
  }
  return runController(cfg, runDir, configPath)
}

async function runController(cfg: RunConfig, runDir: string, configPath: string): Promise<number> {
  const log = createLogger({
    level: cfg.log_level,
    file: join(runDir, 'logs', 'controller.log'),
    name: 'controller',
  })
  const taskIds = loadTasks(dataDirOf(cfg.econfig), cfg.econfig.domain, cfg.econfig.split).map((t) => t.id)
  const resume = cfg.recover.mode === 'auto' ? latestCheckpoint(runDir) : undefined
  if (resume && resume.state.step >= cfg.total_train_steps) {
    process.stdout.write(
      `nothing to train: ${runDir} is at step ${resume.state.step} of total_train_steps=${cfg.total_train_steps} (raise it to continue, or pass another trial_name=… to start over)\n`,
    )
    return 0
  }

  const ctl = new Actor({ id: 'controller', role: 'controller', log, bus: toBusConfig(cfg.bus) })
  const dir = new Directory(ctl)
  const sup = new Supervisor(log, {
    rollout: { restart: 'transient', intensity: 3, periodMs: 60000 },
    proxy: { restart: 'transient', intensity: 3, periodMs: 60000 },
    engine: { restart: 'transient', intensity: 3, periodMs: 60000 },
    server: { restart: 'temporary', intensity: 0, periodMs: 60000 },
    trainer: { restart: 'temporary', intensity: 0, periodMs: 60000 },
  })
  let loop: TrainingLoop | undefined
  let failure: Error | undefined
  const failWith = (e: Error) => {
    failure ??= e
    loop?.stop()
  }
  await ctl.start()
  dir.start()
  linkDirectory(sup, dir)
  writeJobAddress(runDir, ctl.addr)
  const jobEnv = { runDir, configPath, controller: ctl.addr }
  const sched: Scheduler =
    cfg.scheduler.type === 'slurm'
      ? slurmStepScheduler(jobEnv, cfg.scheduler.slurm, cfg.cluster.n_gpus_per_node)
      : localScheduler(jobEnv, cfg.cluster.n_gpus_per_node, cfg.cluster.n_nodes)
  process.stderr.write(
    `launch: controller ${ctl.addr} · run dir ${runDir} · scheduler ${sched.type}${resume ? ` · resuming at step ${resume.state.step}` : ''}\n`,
  )

  let interrupts = 0
  process.on('SIGINT', () => {
    if (++interrupts > 1) process.exit(130)
    process.stderr.write('\nlaunch: stopping after the current step (Ctrl-C again to stop now)\n')
    loop?.stop()
  })
  const job: JobPlan = planJob(cfg, { runDir, hosts: sched.hosts, resumeFrom: resume?.dir })
  /** every process started, in start order (the plan's, then those joined through ctl:spawn) */
  const started: RoleProcess[] = []
  const exited = new Map<string, string>()
  sup.on('exit', (e) => exited.set(e.id, e.signal ? `killed by ${e.signal}` : `exited with code ${e.code}`))
  const start = (p: RoleProcess) => {
    exited.delete(p.id)
    sup.start(sched.spec(p))
    started.push(p)
  }
  sup.on('giveup', (e) => failWith(e.error))
  dir.on('down', (e, reason, cause) => {
    if (e.role === 'trainer' && cause !== 'unregister')
      failWith(fail('RT_ERR_PEER_DEAD', `${e.id}: ${reason}`))
    loop?.poke()
  })
  dir.on('up', (e) => {
    // a proxy or embedded engine that registers again (restarted) missed the updates while it was down:
    // the proxies load the current weights into their engines again
    if (e.role === 'proxy') void loop?.syncProxy(e.id)
    if (e.role === 'engine')
      for (const p of dir.select(undefined, ['proxy'])) if (p.state === 'alive') void loop?.syncProxy(p.id)
    loop?.poke()
  })
  const registered = (ids: string[], timeoutMs = 600_000) =>
    waitRegistered(dir, sup, ids, timeoutMs, join(runDir, 'logs'))

  // rollout actors joining and leaving (bin/add-rollout, bin/drain-rollout)
  const members = new RolloutMembership({
    actor: ctl,
    dir,
    log,
    firstIndex: cfg.rollout.workers,
    start,
    stop: (id) => sup.stop(id, 10_000),
    registered,
    drainTimeoutMs: cfg.rollout.episode_timeout_s * 2000,
  })

  try {
    const servers = job.procs.filter((p) => p.role === 'server')
    const actors = job.procs.filter((p) => p.role !== 'server')
    const bar0 = new Progress('starting actors', actors.length)
    dir.on('up', () => bar0.tick())
    const giveup = new Promise<never>((_, rej) => sup.once('giveup', (e) => rej(e.error)))
    giveup.catch(() => {})
    // inference servers first: the proxies need them answering
    for (const p of servers) start(p)
    await Promise.race([
      giveup,
      Promise.all(
        servers.map((p) =>
          waitHealthy(p.url!, cfg.scheduler.servers.start_timeout_s * 1000, () => exited.get(p.id)),
        ),
      ),
    ])
    const up = registered(actors.map((p) => p.id))
    for (const p of actors) start(p)
    await Promise.race([up, giveup])
    bar0.finish()

    const ops = members.wrap(
      busOps({
        actor: ctl,
        dir,
        trainer: job.trainerHead,
        groupTimeoutMs: cfg.rollout.episode_timeout_s * 2000,
        stepTimeoutMs: 3600_000,
        log,
      }),
    )
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
        // groups each rollout actor completed so far (actors that joined or left included)
        m.groups_by_rollout = Object.fromEntries(members.groupsBy)
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
    const { loaded } = await ops.publish(v0, wdir)
    await ops.loadWeights(wdir, v0, loaded)
    loop.noteWeights(wdir, v0, loaded)
    bar.set(loop.step)
    const end = await loop.run()
    bar.finish()
    if (failure) throw failure
    // the final state is a checkpoint too (recover continues from it)
    // (unless the loop just wrote one: freq_steps > 0 and the last step is a multiple of it)
    const justSaved = cfg.saver.freq_steps > 0 && end.step % cfg.saver.freq_steps === 0
    if (end.step > (resume?.state.step ?? 0) && !justSaved)
      await ops.checkpoint(join(runDir, 'checkpoints', `step-${end.step}`), end.step, end)
    const k = Math.min(3, Math.max(1, Math.floor(curve.length / 3)))
    const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length)
    if (!curve.length)
      process.stdout.write(
        `nothing to train: ${runDir} is at step ${end.step} of total_train_steps=${cfg.total_train_steps} (raise it to continue, or pass another trial_name=… to start over)\n`,
      )
    else
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
    for (const role of ['rollout', 'proxy', 'engine', 'server', 'trainer'])
      await Promise.all(started.filter((p) => p.role === role).map((p) => sup.stop(p.id, 5000)))
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
