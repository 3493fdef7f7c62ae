/**
 * Weight publishing against torch.distributed as SGLang drives it (issue 8, item 4), on two GPUs:
 *
 *   node --import tsx bench/gpu/sglang-interop.ts
 *
 * Rank 0 is the native trainer: a model on cuda:0 joins an NCCL group through initProcessGroup with the
 * store prefix of `sglangStorePrefix()` (actors/trainer/publish-distributed.ts) and serves the TCPStore;
 * rank 1 is bench/gpu/sglang_group.py on cuda:1, which builds its side exactly as SGLang's
 * `init_weights_update_group` does (rendezvous, PrefixStore(group_name), torch's _new_process_group_helper).
 * The trainer publishes two parameters (publishParameters, float32); the Python side prints what it got.
 * Last line `INTEROP sglang_group=ok|fail …` (exit 1 on fail); without two GPUs `INTEROP skipped=…` (exit 0).
 * PYTHON picks the interpreter.
 */
import { spawn } from 'node:child_process'
import { sglangStorePrefix } from '../../actors/trainer/publish-distributed.ts'
import { createModel, initProcessGroup, readHfConfig } from '../../native/index.ts'
import { freePort } from '../../runtime/net.ts'
import { noCudaReason } from './cuda.ts'

const here = new URL('.', import.meta.url).pathname
const GROUP = 'weight_update_group'
const NAMES = ['model.layers.0.self_attn.k_proj.weight', 'model.norm.weight'] // in the model's order

async function main(): Promise<number> {
  const why = noCudaReason(2)
  if (why !== undefined) {
    console.log(`INTEROP skipped=needs-2-gpus (${why})`)
    return 0
  }
  const config = readHfConfig(
    new URL('../../configs/models/qwen3-debug/config.json', import.meta.url).pathname,
  )
  const model = await createModel({ config, seed: 5, device: 'cuda:0' })
  const params = await model.parameters()
  const shapes = NAMES.map((n) => model.params.find((p) => p.name === n)!.shape.join('x'))
  const port = await freePort()
  const py = spawn(
    process.env.PYTHON ?? 'python3',
    [`${here}sglang_group.py`, '--port', String(port), '--group', GROUP, '--shapes', shapes.join(',')],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  let stdout = ''
  py.stdout.on('data', (d: Buffer) => {
    stdout += String(d)
  })
  const exited = new Promise<number>((ok) => py.on('exit', (c) => ok(c ?? 1)))
  const group = await initProcessGroup({
    rank: 0,
    worldSize: 2,
    host: '127.0.0.1',
    port,
    backend: 'nccl',
    device: 'cuda:0',
    storePrefix: sglangStorePrefix(GROUP, 'nccl'),
    eagerConnect: false,
    timeoutMs: 60_000,
  })
  await model.publishParameters({ group, names: NAMES, dtype: 'float32' })
  const code = await exited
  model.dispose()
  let got: number[][] = []
  try {
    got = JSON.parse(stdout.trim().split('\n').at(-1) ?? '[]') as number[][]
  } catch {
    // reported below
  }
  let worst = Number.POSITIVE_INFINITY
  if (got.length === NAMES.length) {
    worst = 0
    NAMES.forEach((n, i) => {
      const want = params[n]!
      const g = got[i]!
      if (g.length !== want.length) worst = Number.POSITIVE_INFINITY
      else for (let j = 0; j < g.length; j++) worst = Math.max(worst, Math.abs(g[j]! - want[j]!))
      console.log(`${n}: ${g.length} values received, max |diff| ${worst}`)
    })
  }
  const ok = code === 0 && worst === 0
  console.log(
    `INTEROP sglang_group=${ok ? 'ok' : 'fail'} python_exit=${code} tensors=${got.length}/${NAMES.length} max_abs_diff=${worst}`,
  )
  return ok ? 0 : 1
}

process.exitCode = await main()
