/**
 * Evaluation of a finished episode (SPEC §6), the parts that need no LLM: the environment check (DB
 * hashes of a replayed trajectory vs. replayed gold actions, env assertions), action matching and
 * communicated info. The NL-assertion judge (an LLM call) lives in judge.ts; `combine` folds its
 * verdict in. Every component says whether it was evaluated; one that could not run is reported
 * `evaluated: false` and never counted as a pass.
 */
import type { DomainData } from './data.ts'
import { deepEqual, Environment } from './environment.ts'
import type { Message, RewardType, Task, TerminationReason, ToolCall } from './types.ts'

export interface ComponentResult {
  /** 1 pass, 0 fail; null when not evaluated */
  reward: number | null
  evaluated: boolean
  inBasis: boolean
  /** why it failed or was not evaluated, per check */
  notes: string[]
}

export type FailureSource = 'agent' | 'user_simulator' | 'environment'

export interface EvaluationResult {
  reward: number
  terminationReason: TerminationReason
  /** reward basis of the task */
  basis: RewardType[]
  components: Partial<Record<RewardType, ComponentResult>>
  /** basis components that failed */
  failed: RewardType[]
  /** basis components that could not be evaluated (e.g. NL_ASSERTION without a judge) */
  notEvaluated: RewardType[]
  /** true when every basis component was evaluated */
  complete: boolean
  /** where a zero reward came from; null on success */
  failureSource: FailureSource | null
  /** replay problems of the predicted environment (non-determinism), for diagnosis */
  replayMismatches: string[]
  details: {
    dbMatch?: boolean
    agentDbHash?: { predicted: string; gold: string }
    userDbHash?: { predicted: string | null; gold: string | null }
    envAssertions?: { func: string; env_type: string; passed: boolean; error?: string }[]
    actions?: { action_id: string; name: string; matched: boolean }[]
    communicate?: { info: string; found: boolean }[]
  }
}

const DEFAULT_BASIS: RewardType[] = ['DB', 'COMMUNICATE']
export const STOP_REASONS: readonly TerminationReason[] = ['agent_stop', 'user_stop']

/** Tool calls of a trajectory (assistant and user messages). */
function toolCalls(traj: readonly Message[]): (ToolCall & { role: string })[] {
  const out: (ToolCall & { role: string })[] = []
  for (const m of traj)
    if ((m.role === 'assistant' || m.role === 'user') && m.tool_calls)
      for (const c of m.tool_calls) out.push({ ...c, role: m.role })
  return out
}

function component(inBasis: boolean, reward: number | null, notes: string[] = []): ComponentResult {
  return { reward, evaluated: reward !== null, inBasis, notes }
}

/** Environment check: DB hashes and env assertions. */
function evaluateEnvironment(
  data: DomainData,
  task: Task,
  traj: readonly Message[],
  solo: boolean,
  basis: RewardType[],
  res: EvaluationResult,
): void {
  const crit = task.evaluation_criteria
  const inDb = basis.includes('DB')
  const inEnv = basis.includes('ENV_ASSERTION')
  if (!crit?.actions && !crit?.env_assertions) {
    res.components.DB = component(inDb, 1, ['no actions and no env assertions: nothing to compare'])
    res.components.ENV_ASSERTION = component(inEnv, 1)
    res.details.dbMatch = true
    return
  }
  const init = task.initial_state ?? undefined
  const predicted = new Environment(data, { solo })
  res.replayMismatches = predicted.setState(init, traj, false)
  const gold = new Environment(data, { solo: false })
  gold.setState(init, task.initial_state?.message_history ?? [], false)
  for (const a of crit.actions ?? []) {
    try {
      gold.makeToolCall(a.name, a.requestor ?? 'assistant', a.arguments)
    } catch {
      // tau2 ignores gold-action errors here
    }
    // NOTE: upstream does not sync between gold actions, so telecom's gold user DB (payment requests,
    // usage flags) never matches a real run's; we sync as a real episode would. This changes no reward
    // in the shipped data (DB is not in any telecom reward basis; the other domains' sync is a no-op).
    gold.sync()
  }
  const pa = predicted.agentDbHash()
  const ga = gold.agentDbHash()
  const pu = predicted.userDbHash()
  const gu = gold.userDbHash()
  const dbMatch = pa === ga && pu === gu
  res.details.dbMatch = dbMatch
  res.details.agentDbHash = { predicted: pa, gold: ga }
  res.details.userDbHash = { predicted: pu, gold: gu }
  const dbNotes: string[] = []
  if (pa !== ga) dbNotes.push('agent database differs from the gold outcome')
  if (pu !== gu) dbNotes.push('user database differs from the gold outcome')
  res.components.DB = component(inDb, dbMatch ? 1 : 0, dbNotes)

  const results: NonNullable<EvaluationResult['details']['envAssertions']> = []
  const envNotes: string[] = []
  for (const a of crit.env_assertions ?? []) {
    try {
      const passed = predicted.runEnvAssertion(a)
      results.push({ func: a.func_name, env_type: a.env_type, passed })
      if (!passed)
        envNotes.push(`${a.env_type}.${a.func_name}(${JSON.stringify(a.arguments)}) ${a.message ?? 'failed'}`)
    } catch (err) {
      results.push({ func: a.func_name, env_type: a.env_type, passed: false, error: (err as Error).message })
      envNotes.push(`${a.func_name} raised: ${(err as Error).message}`)
    }
  }
  res.details.envAssertions = results
  res.components.ENV_ASSERTION = component(inEnv, results.every((r) => r.passed) ? 1 : 0, envNotes)
}

function evaluateActions(
  task: Task,
  traj: readonly Message[],
  basis: RewardType[],
  res: EvaluationResult,
): void {
  const gold = task.evaluation_criteria?.actions ?? []
  const calls = toolCalls(traj)
  const out = gold.map((a) => {
    const matched = calls.some((c) => {
      if (c.name !== a.name) return false
      const keys = a.compare_args ?? Object.keys(c.arguments ?? {})
      const pick = (o: Record<string, unknown>) => {
        const r: Record<string, unknown> = {}
        for (const k of keys) if (Object.hasOwn(o, k)) r[k] = o[k]
        return r
      }
      return deepEqual(pick(c.arguments ?? {}), pick(a.arguments ?? {}))
    })
    return { action_id: a.action_id, name: a.name, matched }
  })
  res.details.actions = out
  const missing = out
    .filter((x) => !x.matched)
    .map((x) => `expected action ${x.action_id} (${x.name}) not performed`)
  res.components.ACTION = component(basis.includes('ACTION'), missing.length ? 0 : 1, missing)
}

function evaluateCommunicate(
  task: Task,
  traj: readonly Message[],
  basis: RewardType[],
  res: EvaluationResult,
): void {
  const infos = task.evaluation_criteria?.communicate_info ?? []
  const texts = traj
    .filter((m) => m.role === 'assistant' && typeof m.content === 'string' && m.content)
    .map((m) => (m.content as string).toLowerCase().replace(/,/g, ''))
  const out = infos.map((info) => ({ info, found: texts.some((t) => t.includes(info.toLowerCase())) }))
  res.details.communicate = out
  const missing = out.filter((x) => !x.found).map((x) => `agent never said "${x.info}"`)
  res.components.COMMUNICATE = component(basis.includes('COMMUNICATE'), missing.length ? 0 : 1, missing)
}

/**
 * Evaluate everything computable without an LLM. NL_ASSERTION is left `evaluated: false` when the task
 * has NL assertions (the judge fills it in through `applyJudge`), and set to 1 when it has none.
 */
export function evaluateEpisode(
  data: DomainData,
  task: Task,
  trajectory: readonly Message[],
  terminationReason: TerminationReason,
  solo = false,
): EvaluationResult {
  const basis = task.evaluation_criteria?.reward_basis ?? DEFAULT_BASIS
  const res: EvaluationResult = {
    reward: 0,
    terminationReason,
    basis: [...basis],
    components: {},
    failed: [],
    notEvaluated: [],
    complete: true,
    failureSource: null,
    replayMismatches: [],
    details: {},
  }
  if (!task.evaluation_criteria) {
    res.reward = STOP_REASONS.includes(terminationReason) ? 1 : 0
    res.failureSource = res.reward ? null : sourceOfTermination(terminationReason)
    return res
  }
  evaluateEnvironment(data, task, trajectory, solo, basis, res)
  evaluateActions(task, trajectory, basis, res)
  evaluateCommunicate(task, trajectory, basis, res)
  const nl = task.evaluation_criteria.nl_assertions ?? []
  res.components.NL_ASSERTION = nl.length
    ? component(basis.includes('NL_ASSERTION'), null, ['needs the NL-assertion judge'])
    : component(basis.includes('NL_ASSERTION'), 1)
  return finish(res)
}

/** Fold a judge verdict into a result (null verdict: judge not configured or failed). */
export function applyJudge(
  res: EvaluationResult,
  verdict: { reward: number; notes: string[] } | null,
  why?: string,
): EvaluationResult {
  const c = res.components.NL_ASSERTION
  if (!c || c.evaluated) return res
  if (verdict)
    res.components.NL_ASSERTION = { ...c, reward: verdict.reward, evaluated: true, notes: verdict.notes }
  else if (why) res.components.NL_ASSERTION = { ...c, notes: [why] }
  return finish(res)
}

function sourceOfTermination(t: TerminationReason): FailureSource {
  if (t === 'user_error') return 'user_simulator'
  if (t === 'env_error' || t === 'infrastructure_error') return 'environment'
  return 'agent'
}

/** Reward = product of evaluated basis components; 0 unless the episode ended by agent or user stop. */
function finish(res: EvaluationResult): EvaluationResult {
  res.failed = []
  res.notEvaluated = []
  let r = 1
  for (const t of res.basis) {
    const c = res.components[t]
    if (!c?.evaluated) {
      res.notEvaluated.push(t)
      continue
    }
    r *= c.reward as number
    if (c.reward !== 1) res.failed.push(t)
  }
  res.complete = res.notEvaluated.length === 0
  const stopped = STOP_REASONS.includes(res.terminationReason)
  res.reward = stopped ? r : 0
  res.failureSource = !stopped ? sourceOfTermination(res.terminationReason) : res.reward < 1 ? 'agent' : null
  return res
}
