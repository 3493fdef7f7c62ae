/**
 * Command lines of external inference servers (their documented CLIs) and the wait for them to serve.
 *
 *   SGLang  python3 -m sglang.launch_server --model-path M --host 0.0.0.0 --port P --tp-size T [--pp-size P]
 *           --random-seed S                                          (GET /health → 200 once loaded)
 *   vLLM    vllm serve M --host 0.0.0.0 --port P --tensor-parallel-size T [--pipeline-parallel-size P]
 *           --seed S                                                 (GET /health → 200 once loaded)
 *
 * The servers bind every interface: proxies may run on another node. GPUs come from the scheduler
 * (CUDA_VISIBLE_DEVICES of the process); tensor/pipeline sizes from allocation_mode.
 */
import { fail } from '../errors.ts'
import type { SchedulerConfig } from './config.ts'

export interface ServerArgs {
  servers: SchedulerConfig['servers']
  model: string
  tp: number
  pp: number
  port: number
  seed: number
}

export function serverArgv(backend: 'sglang' | 'vllm', a: ServerArgs): string[] {
  if (!a.model)
    throw fail(
      'CFG_ERR_MISSING',
      'scheduler.servers.model_path (or engine.model.path): the model servers load',
      {
        key: 'scheduler.servers.model_path',
      },
    )
  const port = String(a.port)
  if (backend === 'sglang')
    return [
      a.servers.python,
      '-m',
      'sglang.launch_server',
      '--model-path',
      a.model,
      '--host',
      '0.0.0.0',
      '--port',
      port,
      '--tp-size',
      String(a.tp),
      ...(a.pp > 1 ? ['--pp-size', String(a.pp)] : []),
      '--random-seed',
      String(a.seed),
      ...a.servers.extra_args,
    ]
  return [
    a.servers.vllm,
    'serve',
    a.model,
    '--host',
    '0.0.0.0',
    '--port',
    port,
    '--tensor-parallel-size',
    String(a.tp),
    ...(a.pp > 1 ? ['--pipeline-parallel-size', String(a.pp)] : []),
    '--seed',
    String(a.seed),
    ...a.servers.extra_args,
  ]
}

/**
 * Resolve once `GET <url>/health` answers 200. Rejects with LCH_ERR_SERVER after timeoutMs, or at once
 * when `gone()` says the server's process has exited.
 */
export async function waitHealthy(
  url: string,
  timeoutMs: number,
  gone: () => string | undefined = () => undefined,
  everyMs = 500,
): Promise<void> {
  const until = Date.now() + timeoutMs
  let last = 'no answer'
  for (;;) {
    const why = gone()
    if (why) throw fail('LCH_ERR_SERVER', `${url}: ${why}`, { url })
    try {
      const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(Math.min(5000, everyMs * 4)) })
      if (res.ok) return
      last = `HTTP ${res.status}`
    } catch (e) {
      last = (e as Error).message
    }
    if (Date.now() >= until)
      throw fail('LCH_ERR_SERVER', `${url}/health: ${last} after ${timeoutMs} ms`, { url })
    await new Promise((r) => setTimeout(r, everyMs))
  }
}
