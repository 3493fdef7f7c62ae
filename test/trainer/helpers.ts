/**
 * Hand-made trajectories for trainer tests, shaped exactly like a proxy export (runtime/messages.ts
 * packedTrajectories), and a minimal stand-in proxy actor that serves them by reference on proxy:fetch
 * (labelled: used where a test must feed the same data twice, which a real proxy, freeing on fetch,
 * does not allow).
 */
import { Actor } from '../../runtime/actor.ts'
import { fail } from '../../runtime/errors.ts'
import type { Logger } from '../../runtime/log.ts'
import type { PackedTrajectoriesMsg, TrajRef } from '../../runtime/messages.ts'

/** A packed export like the proxy's: samples of the given lengths, prompt of 2 tokens each. */
export function packOf(
  ref: string,
  lengths: number[],
  rewards: number[],
  version = 0,
  vocab = 500,
): PackedTrajectoriesMsg {
  const T = lengths.reduce((a, b) => a + b, 0)
  const offsets = new Int32Array(lengths.length + 1)
  lengths.forEach((n, k) => {
    offsets[k + 1] = offsets[k]! + n
  })
  const lossMask = new Uint8Array(T)
  const logprobs = new Float32Array(T)
  const versions = new Int32Array(T).fill(-1)
  const inputIds = new Int32Array(T)
  for (let k = 0; k < lengths.length; k++)
    for (let t = offsets[k]!; t < offsets[k + 1]!; t++) {
      inputIds[t] = (t * 7 + k * 13 + ref.length) % vocab
      if (t - offsets[k]! >= 2) {
        lossMask[t] = 1
        logprobs[t] = -1 - (t % 5) * 0.1
        versions[t] = version
      }
    }
  return {
    ref,
    style: 'individual',
    sessionIds: lengths.map((_, k) => `${ref}-s${k}`),
    offsets,
    inputIds,
    lossMask,
    logprobs,
    versions,
    rewards: Float32Array.from(rewards),
    sampleSession: Int32Array.from(lengths.map((_, k) => k)),
    completionIds: lengths.map((_, k) => [`c${k}`]),
  }
}

/** STAND-IN proxy: serves hand-made packs by reference (kept, so a test can fetch them again). */
export async function startPackServer(
  id: string,
  log: Logger,
  controller: string,
): Promise<{ actor: Actor; add(p: PackedTrajectoriesMsg): TrajRef; fetched: string[] }> {
  const packs = new Map<string, PackedTrajectoriesMsg>()
  const fetched: string[] = []
  const actor = new Actor({ id, role: 'proxy', log, controller })
  actor.handle({
    'proxy:fetch': (b) => {
      const p = packs.get(b.ref)
      if (!p) throw fail('PRX_ERR_NO_TRAJECTORY', b.ref)
      fetched.push(b.ref)
      return p
    },
  })
  await actor.start()
  return {
    actor,
    fetched,
    add(p) {
      packs.set(p.ref, p)
      let trainable = 0
      for (const m of p.lossMask) trainable += m
      return {
        proxy: id,
        ref: p.ref,
        samples: p.offsets.length - 1,
        tokens: p.inputIds.length,
        trainableTokens: trainable,
        minVersion: 0,
        maxVersion: 0,
      }
    },
  }
}
