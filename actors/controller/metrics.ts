/**
 * Per-step metrics of a training run, computed from group results (pure functions; the controller writes
 * one JSON line per step to <run dir>/metrics.jsonl).
 */
import type { EpisodeResult } from '../../runtime/messages.ts'

/** C(n, k) as a float (n ≤ a few hundred). */
function choose(n: number, k: number): number {
  if (k < 0 || k > n) return 0
  let r = 1
  for (let i = 1; i <= k; i++) r = (r * (n - k + i)) / i
  return r
}

/**
 * pass^k of tau2-bench: the chance that k independent trials of a task all succeed, estimated from a
 * group of n trials with c successes as C(c, k) / C(n, k), averaged over groups. Success = reward ≥ 1 − 1e-6.
 */
export function passHatK(groups: EpisodeResult[][], kMax: number): Record<string, number> {
  const out: Record<string, number> = {}
  for (let k = 1; k <= kMax; k++) {
    let sum = 0
    let n = 0
    for (const g of groups) {
      if (g.length < k) continue
      const c = g.filter((e) => e.reward >= 1 - 1e-6).length
      sum += choose(c, k) / choose(g.length, k)
      n++
    }
    if (n) out[`pass^${k}`] = sum / n
  }
  return out
}

/** Fraction of evaluated episodes failing each reward component (null = not evaluated, left out). */
export function componentFailureRates(episodes: EpisodeResult[]): Record<string, number> {
  const fails: Record<string, number> = {}
  const seen: Record<string, number> = {}
  for (const e of episodes) {
    for (const [k, v] of Object.entries(e.components ?? {})) {
      if (v === null || v === undefined) continue
      seen[k] = (seen[k] ?? 0) + 1
      if (typeof v === 'number' && v < 1 - 1e-6) fails[k] = (fails[k] ?? 0) + 1
    }
  }
  const out: Record<string, number> = {}
  for (const k of Object.keys(seen)) out[k] = (fails[k] ?? 0) / seen[k]
  return out
}

/** Failed episodes by blame: the policy, the user simulator, the environment, infrastructure. */
export function blameCounts(episodes: EpisodeResult[]): Record<string, number> {
  const out: Record<string, number> = { agent: 0, user: 0, env: 0, infra: 0 }
  for (const e of episodes) if (e.status === 'failed') out[e.blame ?? 'infra']++
  return out
}

export function mean(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0
}
