/**
 * The training loop's operations as bus messages: rollout:run to rollout actors, trainer:* to the trainer
 * head, proxy:* to every proxy (which drives its engines). Proxies act in parallel; a proxy that answers
 * with an error fails the weight update (the run stops with its error rather than training on mixed
 * versions). A proxy that dies meanwhile (RT_ERR_PEER_DEAD: its connection lost or declared dead) is left
 * out: its supervisor restarts it, and when it registers again the loop brings it to the current weights
 * (TrainingLoop.syncProxy); its episodes in flight have failed and go around again.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Actor } from '../../runtime/actor.ts'
import type { Directory } from '../../runtime/directory.ts'
import type { Logger } from '../../runtime/log.ts'
import type { ControllerState, LoopOps } from './loop.ts'

export interface BusOpsOptions {
  actor: Actor
  dir: Directory
  /** trainer head (rank 0) actor id */
  trainer: string
  /** a group of nSamples episodes may take this long */
  groupTimeoutMs: number
  stepTimeoutMs: number
  log?: Logger
}

export function busOps(o: BusOpsOptions): LoopOps {
  const a = o.actor
  const alive = (role: string) =>
    o.dir
      .select(undefined, [role])
      .filter((e) => e.state === 'alive')
      .map((e) => e.id)
  const proxies = () => alive('proxy')
  const each = async (fn: (id: string) => Promise<unknown>) => {
    await Promise.all(
      proxies().map(async (id) => {
        try {
          await fn(id)
        } catch (e) {
          const code = (e as { code?: string }).code
          // its connection was lost or the directory declared it dead: it is gone (or restarting); the
          // directory may not know yet, so do not wait for it to agree
          if (code !== 'RT_ERR_PEER_DEAD') throw e
          o.log?.warn({ proxy: id, err: (e as Error).message }, 'proxy died during a weight update; left out')
        }
      }),
    )
  }
  return {
    rollouts: () => alive('rollout'),
    runGroup: (rollout, req) => a.ask(rollout, 'rollout:run', req, { timeoutMs: o.groupTimeoutMs }),
    trainStep: (req) => a.ask(o.trainer, 'trainer:step', req, { timeoutMs: o.stepTimeoutMs }),
    pauseGeneration: () => each((p) => a.ask(p, 'proxy:pause', {})),
    publish: async (version, dir) => {
      const r = await a.ask(o.trainer, 'trainer:publish', { version, dir }, { timeoutMs: o.stepTimeoutMs })
      return { loaded: r.loaded === true }
    },
    // after a broadcast publish the engines hold the weights: the proxies only take the new version
    loadWeights: (dir, version, loaded) =>
      each((p) =>
        a.ask(p, 'proxy:update_weights', { path: dir, version, loaded }, { timeoutMs: o.stepTimeoutMs }),
      ),
    resumeGeneration: () => each((p) => a.ask(p, 'proxy:resume', {})),
    syncProxy: async (id, dir, version, loaded) => {
      await a.ask(id, 'proxy:update_weights', { path: dir, version, loaded }, { timeoutMs: o.stepTimeoutMs })
    },
    checkpoint: async (dir, step, state: ControllerState) => {
      mkdirSync(dir, { recursive: true })
      await a.ask(
        o.trainer,
        'trainer:checkpoint',
        { dir: join(dir, 'trainer'), step },
        { timeoutMs: o.stepTimeoutMs },
      )
      // the controller's part last: a checkpoint with controller.json is complete
      writeFileSync(join(dir, 'controller.json'), `${JSON.stringify(state, null, 2)}\n`)
    },
    release: async (refs) => {
      const byProxy = new Map<string, string[]>()
      for (const r of refs) byProxy.set(r.proxy, [...(byProxy.get(r.proxy) ?? []), r.ref])
      await Promise.all(
        [...byProxy].map(([p, ids]) => a.ask(p, 'proxy:release', { refs: ids }).catch(() => undefined)),
      )
    },
  }
}
