/**
 * The proxy on the bus: the controller and rollout actors drive a ProxyService through these asks.
 *
 *   rollout ──proxy:session:open/end/reward──────────▶ ┌────────────┐
 *   rollout ──proxy:export {sessionIds}──▶ trajRef ───▶ │ proxy inbox│──▶ ProxyService
 *   trainer ──proxy:fetch {ref}──▶ packed typed arrays  │  (Router)  │      (HTTP app beside it)
 *   controller ──proxy:release/pause/resume/update_weights/stats──▶ └────────────┘
 *
 * Bulk data moves only on proxy:fetch (typed arrays travel as binary frames); the controller sees the
 * trajRef metadata. A fetched reference is freed at once (memory is released when consumed); references
 * that will never be fetched are freed with proxy:release.
 */
import type { Actor } from '../../runtime/actor.ts'
import type { ProxyService } from './service.ts'

/** Register the proxy:* handlers of `service` on `actor` (before or after actor.start()). */
export function attachProxy(actor: Actor, service: ProxyService): void {
  actor.handle({
    'proxy:session:open': (b) => service.openSession({ sessionId: b.sessionId, meta: b.meta }),
    'proxy:session:end': (b) => service.endSession(b.sessionId),
    'proxy:session:reward': (b) => service.setReward(b.sessionId, b.reward, b.interactionId),
    'proxy:export': async (b) => {
      const m = await service.exportTrajectories(b.sessionIds, {
        style: b.style,
        turnDiscount: b.turnDiscount,
      })
      return {
        proxy: actor.id,
        ref: m.ref,
        samples: m.samples,
        tokens: m.tokens,
        trainableTokens: m.trainableTokens,
        minVersion: m.minVersion,
        maxVersion: m.maxVersion,
      }
    },
    'proxy:fetch': (b) => service.fetchTrajectories(b.ref),
    'proxy:release': (b) => ({ released: b.refs.filter((r) => service.releaseTrajectories(r)).length }),
    'proxy:pause': async () => {
      await service.pause()
      return { version: service.getVersion() }
    },
    'proxy:resume': async () => {
      await service.resume()
      return { version: service.getVersion() }
    },
    'proxy:update_weights': async (b) => {
      // weights broadcast by the trainer are in the engines already: only the version moves
      if (b.loaded) await service.setVersion(b.version)
      else await service.updateWeights(b.path, b.version)
      return { version: service.getVersion() }
    },
    'proxy:stats': () => ({ ...service.stats(), engines: service.pool.load() }),
  })
}
