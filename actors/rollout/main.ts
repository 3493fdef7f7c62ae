/**
 * Start a rollout actor process: the tau2 workflow over an environment pool, registered with the
 * controller. The agent samples at gconfig's temperature / top_p / max_new_tokens.
 */
import { Actor } from '../../runtime/actor.ts'
import { toBusConfig } from '../../runtime/bus-config.ts'
import type { RunConfig } from '../config.ts'
import type { RoleContext, Started } from '../main.ts'
import { RolloutWorker } from './actor.ts'
import { EnvPool } from './tau2/env-pool.ts'
import { Tau2Workflow } from './tau2/workflow.ts'

export async function startRollout(cfg: RunConfig, ctx: RoleContext): Promise<Started> {
  const actor = new Actor({
    id: ctx.id,
    role: 'rollout',
    log: ctx.log,
    controller: ctx.controller,
    bus: toBusConfig(cfg.bus),
  })
  const pool = new EnvPool({ workers: cfg.econfig.env_workers, log: ctx.log.child({ pool: 'env' }) })
  const econfig = {
    ...cfg.econfig,
    agent_llm_args: {
      temperature: cfg.gconfig.temperature,
      top_p: cfg.gconfig.top_p,
      max_tokens: cfg.gconfig.max_new_tokens,
      ...cfg.econfig.agent_llm_args,
    },
  }
  new RolloutWorker({
    actor,
    workflow: new Tau2Workflow(econfig, pool),
    log: ctx.log,
    model: cfg.proxy.model_name,
    turnDiscount: cfg.econfig.turn_discount,
    episodeTimeoutMs: cfg.rollout.episode_timeout_s * 1000,
    exportStyle: cfg.rollout.export_style,
  })
  await actor.start()
  return {
    async stop(reason) {
      await actor.stop(reason)
      await pool.destroy()
    },
  }
}
