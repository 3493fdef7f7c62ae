/** Engine backends from config. Embedded engines talk over the bus, so main.ts builds those with its Actor. */
import { fail } from '../../../runtime/errors.ts'
import type { EngineConfig, ProxyConfig } from '../config.ts'
import { SglangEngine } from './sglang.ts'
import type { Engine } from './types.ts'
import { VllmEngine } from './vllm.ts'

export function makeEngine(e: EngineConfig, cfg: ProxyConfig): Engine {
  const timeoutMs = e.timeout_ms ?? cfg.request_timeout_ms
  switch (e.kind) {
    case 'sglang':
      return new SglangEngine({ url: e.url!, timeoutMs })
    case 'vllm':
      return new VllmEngine({ url: e.url!, timeoutMs, model: cfg.model_name, updatePath: e.update_path })
    case 'embedded':
      throw fail(
        'PRX_ERR_ENGINE_DOWN',
        `embedded engine ${e.actor} needs the bus: start the proxy with actors/proxy/main.ts`,
      )
  }
}
