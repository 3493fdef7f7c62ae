/** Relative errors of parameter updates: the "one PPO step on GPU equals the CPU step" check. */

export interface UpdateError {
  name: string
  /** ‖Δgot − Δref‖ / ‖Δref‖ (0 when both updates are zero, Infinity when only Δref is). */
  relErr: number
  /** ‖Δref‖. */
  refNorm: number
  /** ‖Δgot‖. */
  gotNorm: number
}

type Params = Record<string, ArrayLike<number>>

/**
 * Per-tensor and global relative error of the update Δ = after − before of `got` against `ref`, in
 * float64. Every tensor must be present in all four maps with one length (throws otherwise).
 */
export function updateErrors(
  refBefore: Params,
  refAfter: Params,
  gotBefore: Params,
  gotAfter: Params,
): { tensors: UpdateError[]; global: number } {
  const tensors: UpdateError[] = []
  let num = 0
  let den = 0
  for (const name of Object.keys(refBefore)) {
    const rb = refBefore[name]!
    const [ra, gb, ga] = [refAfter[name], gotBefore[name], gotAfter[name]]
    if (!ra || !gb || !ga) throw new Error(`parameter ${name} missing from one of the snapshots`)
    if (ra.length !== rb.length || gb.length !== rb.length || ga.length !== rb.length) {
      throw new Error(`parameter ${name}: lengths ${rb.length}/${ra.length}/${gb.length}/${ga.length}`)
    }
    let n = 0
    let d = 0
    let g = 0
    for (let i = 0; i < rb.length; i++) {
      const dr = ra[i]! - rb[i]!
      const dg = ga[i]! - gb[i]!
      n += (dg - dr) ** 2
      d += dr ** 2
      g += dg ** 2
    }
    num += n
    den += d
    const relErr = d > 0 ? Math.sqrt(n / d) : n > 0 ? Number.POSITIVE_INFINITY : 0
    tensors.push({ name, relErr, refNorm: Math.sqrt(d), gotNorm: Math.sqrt(g) })
  }
  const global = den > 0 ? Math.sqrt(num / den) : num > 0 ? Number.POSITIVE_INFINITY : 0
  return { tensors, global }
}
