/**
 * What the schedulers generate, checked without running it: the process plan with SGLang/vLLM servers
 * wired into the proxies, server command lines, the sbatch script, srun step lines, the local spec, and
 * the wait for a server's /health (against a real HTTP server standing in for SGLang's /health).
 */
import { createServer, type Server } from 'node:http'
import { expect } from 'chai'
import { runSchema } from '../../actors/config.ts'
import { loadConfig } from '../../runtime/config.ts'
import { localScheduler } from '../../runtime/scheduler/local.ts'
import { planJob } from '../../runtime/scheduler/plan.ts'
import { serverArgv, waitHealthy } from '../../runtime/scheduler/servers.ts'
import { batchScript } from '../../runtime/scheduler/slurm-job.ts'
import { slurmStepScheduler, srunArgs } from '../../runtime/scheduler/slurm-steps.ts'

const DEBUG = new URL('../../configs/debug.yaml', import.meta.url).pathname
const cfgOf = (...o: string[]) => loadConfig(runSchema, { file: DEBUG, overrides: o })
const job = { runDir: '/runs/x', configPath: '/runs/x/config.json', controller: 'tcp://n0:5555' }

async function caught(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p
  } catch (e) {
    return e as { code: string; message: string }
  }
  throw new Error('did not reject')
}

describe('scheduler plans and command lines', () => {
  describe('when allocation_mode names SGLang servers', () => {
    const cfg = cfgOf(
      'allocation_mode=sglang:d3t2+archon:d2',
      'cluster.n_gpus_per_node=4',
      'cluster.n_nodes=2',
      'proxy_replicas=2',
      'engine.model.path=/models/qwen3',
    )
    const plan = planJob(cfg, { runDir: '/runs/x', hosts: ['n0', 'n1'], rdzv: '/runs/x/rdzv' })

    it('should plan one server per replica with its GPUs, node and port, and no embedded engine', () => {
      const servers = plan.procs.filter((p) => p.role === 'server')
      expect(servers.map((s) => [s.id, s.node, s.gpus, s.url])).to.deep.equal([
        ['server/0', 0, [0, 1], 'http://n0:30000'],
        ['server/1', 0, [2, 3], 'http://n0:30001'],
        ['server/2', 1, [0, 1], 'http://n1:30000'],
      ])
      expect(plan.procs.filter((p) => p.role === 'engine')).to.have.length(0)
      expect(plan.nodes).to.equal(2)
    })

    it('should run the documented SGLang command line', () => {
      const s = plan.procs.find((p) => p.id === 'server/1')!
      expect(s.argv).to.deep.equal([
        'python3',
        '-m',
        'sglang.launch_server',
        '--model-path',
        '/models/qwen3',
        '--host',
        '0.0.0.0',
        '--port',
        '30001',
        '--tp-size',
        '2',
        '--random-seed',
        String(cfg.seed + 1),
      ])
    })

    it('should split the servers round-robin among the proxies as their engines', () => {
      const engines = (id: string) => JSON.parse(plan.procs.find((p) => p.id === id)!.env.AREAL_ENGINES)
      expect(engines('proxy/0')).to.deep.equal([
        { kind: 'sglang', url: 'http://n0:30000' },
        { kind: 'sglang', url: 'http://n1:30000' },
      ])
      expect(engines('proxy/1')).to.deep.equal([{ kind: 'sglang', url: 'http://n0:30001' }])
    })

    it('should give trainers a rank, the world size and one rendezvous', () => {
      const t = plan.procs.filter((p) => p.role === 'trainer')
      expect(t.map((p) => [p.id, p.node, p.gpus, p.env.AREAL_RANK, p.env.AREAL_WORLD_SIZE])).to.deep.equal([
        ['trainer/0', 1, [2], '0', '2'],
        ['trainer/1', 1, [3], '1', '2'],
      ])
      expect(new Set(t.map((p) => p.env.AREAL_RDZV))).to.deep.equal(new Set(['/runs/x/rdzv']))
    })

    it('should tell trainers their tensor-parallel size and the SGLang servers to publish to by broadcast', () => {
      const t = plan.procs.filter((p) => p.role === 'trainer')
      const servers = plan.procs.filter((p) => p.role === 'server').map((p) => p.url)
      for (const p of t) {
        expect(p.env.AREAL_TP_SIZE).to.equal('1')
        const list = JSON.parse(p.env.AREAL_PUBLISH_ENGINES!) as { url: string; tpSize: number }[]
        expect(list.map((e) => e.url)).to.deep.equal(servers)
        expect(list.map((e) => e.tpSize)).to.deep.equal([2, 2, 2])
      }
      const tp = planJob(
        cfgOf('allocation_mode=sglang:d1t2+archon:d2t2', 'cluster.n_gpus_per_node=8', 'engine.model.path=/m'),
        { runDir: '/r', hosts: ['n0'] },
      ).procs.filter((p) => p.role === 'trainer')
      expect(tp.map((p) => [p.env.AREAL_RANK, p.env.AREAL_WORLD_SIZE, p.env.AREAL_TP_SIZE])).to.deep.equal([
        ['0', '4', '2'],
        ['1', '4', '2'],
        ['2', '4', '2'],
        ['3', '4', '2'],
      ])
    })

    it('should refuse a plan that needs more nodes than the scheduler has', () => {
      expect(() => planJob(cfg, { runDir: '/r', hosts: ['n0'] })).to.throw(
        /uses 2 nodes but the scheduler has 1/,
      )
    })
  })

  describe('when allocation_mode names vLLM servers', () => {
    it('should run `vllm serve` with tensor and pipeline sizes and extra arguments', () => {
      const cfg = cfgOf('scheduler.servers.extra_args=[--max-model-len, 8192]')
      expect(
        serverArgv('vllm', {
          servers: cfg.scheduler.servers,
          model: '/m',
          tp: 4,
          pp: 2,
          port: 8000,
          seed: 7,
        }),
      ).to.deep.equal([
        'vllm',
        'serve',
        '/m',
        '--host',
        '0.0.0.0',
        '--port',
        '8000',
        '--tensor-parallel-size',
        '4',
        '--pipeline-parallel-size',
        '2',
        '--seed',
        '7',
        '--max-model-len',
        '8192',
      ])
    })

    it('should refuse servers without a model path (CFG_ERR_MISSING)', () => {
      const cfg = cfgOf()
      expect(() =>
        serverArgv('sglang', { servers: cfg.scheduler.servers, model: '', tp: 1, pp: 1, port: 1, seed: 1 }),
      ).to.throw(/scheduler.servers.model_path/)
    })
  })

  describe('when the scheduler is Slurm', () => {
    it('should write one allocation with partition, account, time, GPUs, extra lines and setup', () => {
      const cfg = cfgOf(
        'scheduler.slurm.partition=gpu',
        'scheduler.slurm.account=rl',
        'scheduler.slurm.time_limit=1-00:00:00',
        'scheduler.slurm.extra_sbatch=[--qos=high, #SBATCH --mail-type=END]',
        'scheduler.slurm.setup=[module load cuda, source /venv/bin/activate]',
      )
      const s = batchScript({
        slurm: cfg.scheduler.slurm,
        jobName: 'areal-debug-t0',
        runDir: '/runs/x',
        configPath: "/runs/it's/config.json",
        nNodes: 2,
        nGpusPerNode: 8,
        cwd: '/work',
        launch: '/repo/bin/launch',
      })
      const lines = s.split('\n')
      expect(lines[0]).to.equal('#!/bin/bash')
      for (const l of [
        '#SBATCH --job-name=areal-debug-t0',
        '#SBATCH --nodes=2',
        '#SBATCH --chdir=/work',
        '#SBATCH --output=/runs/x/logs/controller.out',
        '#SBATCH --error=/runs/x/logs/controller.err',
        '#SBATCH --exclusive',
        '#SBATCH --gres=gpu:8',
        '#SBATCH --partition=gpu',
        '#SBATCH --account=rl',
        '#SBATCH --time=1-00:00:00',
        '#SBATCH --qos=high',
        '#SBATCH --mail-type=END',
        'module load cuda',
        'source /venv/bin/activate',
        'export AREAL_SLURM_INSIDE=1',
        `'/repo/bin/launch' '/runs/it'\\''s/config.json'`,
      ])
        expect(lines, l).to.include(l)
      // #SBATCH lines must come before the first command, or sbatch ignores them
      const lastSbatch = lines.map((l) => l.startsWith('#SBATCH')).lastIndexOf(true)
      expect(lastSbatch).to.be.lessThan(lines.indexOf('module load cuda'))
      // setup runs under set -e (a failing command ends the job), the launcher without it (its code is kept)
      expect(lines.indexOf('set -e')).to.be.lessThan(lines.indexOf('module load cuda'))
      expect(lines.indexOf('set +e')).to.be.lessThan(lines.indexOf('export AREAL_SLURM_INSIDE=1'))
      expect(lines.indexOf('set +e')).to.be.greaterThan(lines.indexOf('source /venv/bin/activate'))
    })

    it('should start a GPU role as an overlapping srun step on its node with its planned GPUs', () => {
      const cfg = cfgOf('cluster.n_gpus_per_node=4', 'scheduler.slurm.setup=[source /venv/bin/activate]')
      const p = { id: 'trainer/1', role: 'trainer' as const, node: 1, gpus: [3], env: { AREAL_RANK: '1' } }
      const args = srunArgs(p, 'n1', cfg.scheduler.slurm, 4, '64')
      expect(args.slice(0, 9)).to.deep.equal([
        '--overlap',
        '--nodes=1',
        '--ntasks=1',
        '--nodelist=n1',
        '--job-name=trainer/1',
        '--kill-on-bad-exit=1',
        '--cpus-per-task=64',
        '--gres=gpu:4',
        'bash',
      ])
      expect(args[10]).to.equal(
        'set -e\nsource /venv/bin/activate\nexport CUDA_VISIBLE_DEVICES="$AREAL_GPUS"\nexec "$@"',
      )
      expect(args.slice(11, 13)).to.deep.equal(['areal-step', process.execPath])
      expect(args[args.length - 1]).to.equal('trainer')
      const sched = slurmStepScheduler(job, cfg.scheduler.slurm, 4, ['n0', 'n1'])
      const spec = sched.spec(p)
      expect(spec.command).to.equal('srun')
      expect(spec.env).to.include({
        AREAL_GPUS: '3',
        AREAL_RANK: '1',
        AREAL_ACTOR_ID: 'trainer/1',
        AREAL_CONTROLLER: 'tcp://n0:5555',
        AREAL_CONFIG: '/runs/x/config.json',
      })
      expect(spec.logFile).to.equal('/runs/x/logs/trainer-1.log')
    })

    it('should not ask for GPUs on a CPU cluster', () => {
      const cfg = cfgOf()
      const args = srunArgs(
        { id: 'rollout/0', role: 'rollout', node: 0, gpus: [], env: {} },
        'n0',
        cfg.scheduler.slurm,
        0,
        undefined,
      )
      expect(args.some((a) => a.startsWith('--gres') || a.startsWith('--cpus'))).to.equal(false)
      expect(args[args.indexOf('-c') + 1]).to.equal('set -e\nexec "$@"')
    })
  })

  describe('when the scheduler is local', () => {
    it('should run a server by its own command line with its GPUs visible', () => {
      const sched = localScheduler(job, 2, 1)
      const spec = sched.spec({
        id: 'server/0',
        role: 'server',
        node: 0,
        gpus: [0, 1],
        env: {},
        argv: ['python3', '-m', 'sglang.launch_server'],
      })
      expect([spec.command, ...spec.args]).to.deep.equal(['python3', '-m', 'sglang.launch_server'])
      expect(spec.env?.CUDA_VISIBLE_DEVICES).to.equal('0,1')
      expect(spec.logFile).to.equal('/runs/x/logs/server-0.log')
    })

    it('should refuse more than one node', () => {
      expect(() => localScheduler(job, 0, 2)).to.throw(/cluster.n_nodes=2 needs scheduler.type=slurm/)
    })
  })

  describe('when waiting for a server to serve', () => {
    let server: Server
    let healthy = false
    let url: string
    beforeEach(async () => {
      healthy = false
      server = createServer((req, res) => {
        res.statusCode = req.url === '/health' && healthy ? 200 : 503
        res.end()
      })
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
      url = `http://127.0.0.1:${(server.address() as { port: number }).port}`
    })
    afterEach(async () => {
      await new Promise((r) => server.close(r))
    })

    it('should resolve once GET /health answers 200', async () => {
      let polls = 0
      await waitHealthy(
        url,
        10000,
        () => {
          if (++polls === 3) healthy = true
          return undefined
        },
        20,
      )
      expect(polls).to.be.at.least(3)
    })

    it('should fail with LCH_ERR_SERVER when the server process exits first', async () => {
      const e = await caught(waitHealthy(url, 10000, () => 'exited with code 1', 20))
      expect(e.code).to.equal('LCH_ERR_SERVER')
      expect(e.message).to.contain('exited with code 1')
    })

    it('should fail with LCH_ERR_SERVER naming the last answer after the timeout', async () => {
      const e = await caught(waitHealthy(url, 100, undefined, 20))
      expect(e.code).to.equal('LCH_ERR_SERVER')
      expect(e.message).to.contain('HTTP 503')
    })
  })
})
