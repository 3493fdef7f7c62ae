/**
 * bench:quickstart-learn — does the quick-start workload learn? A minimal on-policy GRPO loop straight
 * on the native addon, no actors: the tiny model of configs/models/quickstart plays the `home` tau2
 * domain (configs/domains) solo through the real tau2 orchestrator and evaluation.
 *
 *   per step: tasks × group episodes ──orchestrate()──▶ agent turns batched into one model.generate
 *             prompt[t+1] = prompt[t] ++ output[t] ++ template delta (PromptBuilder, as the proxy does)
 *             output text ──tool parser──▶ tool calls ──Environment──▶ tool results ──▶ evaluateEpisode
 *             one sample per episode (concat: every turn's output is a loss token), group-normalised
 *             advantage (r − mean) / (std + ε), one ppoStep
 *
 * The baseline is the same run's untrained model: `reward_start` is the mean reward of the first steps
 * (before the updates have had an effect), `reward_end` of the last ones.
 * Last line: `RESULT quickstart-learn reward_start=… reward_end=… seconds=…`.
 * Knobs (env): QS_SECONDS (time budget, default 240; 0 = none), QS_STEPS (max steps), QS_GROUP, QS_TASKS,
 * QS_LR, QS_EPOCHS, QS_MAX_TOKENS, QS_MAX_STEPS, QS_STOP_AFTER_CALL (0/1), QS_INIT, QS_SEED, QS_THREADS.
 */
import { fileURLToPath } from 'node:url'
import { parseOutput } from '../actors/proxy/tool-parser.ts'
import { agentSystemPrompt, agentView, STOP } from '../actors/rollout/tau2/agent.ts'
import { type DomainData, loadDomainData, loadTasks } from '../actors/rollout/tau2/data.ts'
import { Environment } from '../actors/rollout/tau2/environment.ts'
import { evaluateEpisode } from '../actors/rollout/tau2/evaluation.ts'
import { type AgentLike, orchestrate } from '../actors/rollout/tau2/orchestrator.ts'
import type {
  AssistantMessage,
  Message,
  Task,
  TerminationReason,
  ToolCall,
} from '../actors/rollout/tau2/types.ts'
import { type ChatMessage, ChatTemplate } from '../actors/tokenizer/chat-template.ts'
import { PromptBuilder, type TemplateContext } from '../actors/tokenizer/incremental.ts'
import { ModelTokenizer } from '../actors/tokenizer/tokenizer.ts'
import { DOMAIN, DOMAINS_DIR, MODEL_DIR, workloadTools } from '../configs/models/quickstart/build.ts'
import {
  createModel,
  type Generation,
  type Model,
  type OptimizerConfig,
  type PpoLossConfig,
  readHfConfig,
  type StepStats,
  setNumThreads,
} from '../native/index.ts'
import { silentLogger } from '../runtime/log.ts'

/** The loop's hyper-parameters (defaults: the tuned quick-start values). */
export interface LearnOptions {
  /** episodes per task per step (the GRPO group) */
  group: number
  /** tasks per step (taken round-robin from the train split; ≤ 0 = all) */
  tasksPerStep: number
  /** new-token budget of one agent turn */
  maxNewTokens: number
  /** sampling temperature (= training temperature) */
  temperature: number
  /** tau2 max_steps of an episode (agent turn + env = 2 steps) */
  maxSteps: number
  /**
   * End a turn at its first `</tool_call>` (an OpenAI `stop` string kept in the output, as SGLang's
   * `no_stop_trim`): one call per turn, as the solo instructions ask. Here: stop ids = the tokens whose
   * text ends with `</tool_call>`.
   */
  stopAfterCall: boolean
  lr: number
  /** PPO updates per batch (each an optimizer step against the same πprox; the clip bounds the drift) */
  epochs: number
  epsClip: number
  maxGradNorm: number
  seed: number
  /** stop after this many steps … */
  steps: number
  /** … or once this much wall time has passed (0 = no limit) */
  seconds: number
  /** libtorch threads */
  threads: number
  /** override of the config's initializer_range (0 = keep the config's) */
  initializerRange: number
}

export const defaults: LearnOptions = {
  group: 8,
  tasksPerStep: 8,
  maxNewTokens: 64,
  temperature: 1,
  maxSteps: 10,
  stopAfterCall: true,
  lr: 5e-3,
  epochs: 2,
  epsClip: 0.2,
  maxGradNorm: 1,
  seed: 1,
  steps: 1000,
  seconds: 240,
  threads: 1,
  initializerRange: 0,
}

export interface StepReport {
  step: number
  reward: number
  episodes: number
  /** mean agent turns per episode */
  turns: number
  /** mean generated tokens per episode */
  outTokens: number
  /** fraction of episodes whose first tool call is the task's gold action */
  firstCallRight: number
  terminations: Partial<Record<TerminationReason, number>>
  stats: StepStats | null
  seconds: number
  /** of which: the update (log-probs + ppoStep) */
  trainSeconds: number
}

/** One episode's training sample (concat style) and outcome. */
export interface Episode {
  task: Task
  reward: number
  reason: TerminationReason
  turns: number
  firstCallRight: boolean
  /** the error that ended the episode, if one did (e.g. a turn without a tool call) */
  error?: string
  /** final prompt ++ final output */
  ids: number[]
  /** per token: 1 where the model generated it */
  mask: number[]
  /** per token: the engine's log-prob where mask = 1 */
  behave: number[]
}

/** Collects agent turns and runs them as one batched `generate` per flush (all waiting episodes). */
class Batcher {
  private queue: {
    prompt: Int32Array
    seed: number
    resolve: (g: Generation) => void
    reject: (e: unknown) => void
  }[] = []
  private scheduled = false
  private running: Promise<void> = Promise.resolve()

  constructor(
    private readonly model: Model,
    private readonly opts: LearnOptions,
    private readonly eos: number[],
  ) {}

  generate(prompt: Int32Array, seed: number): Promise<Generation> {
    return new Promise((resolve, reject) => {
      this.queue.push({ prompt, seed, resolve, reject })
      if (!this.scheduled) {
        this.scheduled = true
        // every episode that can move reaches its next agent turn within the current microtask drain
        setImmediate(() => {
          this.running = this.running.then(() => this.flush())
        })
      }
    })
  }

  private async flush(): Promise<void> {
    this.scheduled = false
    const batch = this.queue
    this.queue = []
    if (!batch.length) return
    try {
      const out = await this.model.generate(
        batch.map((b) => ({ prompt: b.prompt, seed: b.seed })),
        { temperature: this.opts.temperature, maxNewTokens: this.opts.maxNewTokens, stopIds: this.eos },
      )
      for (const [i, g] of out.entries()) batch[i].resolve(g)
    } catch (err) {
      for (const b of batch) b.reject(err)
    }
  }
}

/**
 * The solo tau2 agent over the batcher: renders its view with the chat template (first turn), then
 * extends the token sequence incrementally; parses tool calls from the text as the proxy does; turns
 * `done` into the stop message as LLMAgent does. Keeps the episode's concat sample.
 */
class TokenAgent implements AgentLike {
  ids: number[] = []
  mask: number[] = []
  behave: number[] = []
  turns = 0
  private seen = 0
  private lastEndsWithEos = true

  constructor(
    private readonly system: string,
    private readonly ctx: TemplateContext,
    private readonly builder: PromptBuilder,
    private readonly batcher: Batcher,
    private readonly seed: () => number,
  ) {}

  async generate(trajectory: readonly Message[]): Promise<AssistantMessage> {
    const view = agentView(this.system, trajectory) as ChatMessage[]
    if (this.turns === 0) {
      this.ids = this.builder.full(view, this.ctx)
      this.mask = this.ids.map(() => 0)
      this.behave = this.ids.map(() => 0)
    } else {
      const delta = this.builder.delta(view.slice(this.seen), this.ctx, {
        prevReasoning: 'none',
        outputEndsWithEos: this.lastEndsWithEos,
      })
      if (delta.kind !== 'extend') throw new Error(`quick-start template rewrote history: ${delta.reason}`)
      for (const id of delta.ids) this.push(id, 0, 0)
    }
    const g = await this.batcher.generate(Int32Array.from(this.ids), this.seed())
    g.tokens.forEach((id, i) => {
      this.push(id, 1, g.logprobs[i])
    })
    this.turns++
    const tok = this.builder.tokenizer
    const out = Array.from(g.tokens)
    this.lastEndsWithEos = out.length > 0 && tok.isEos(out[out.length - 1])
    const text = tok.decode(this.lastEndsWithEos ? out.slice(0, -1) : out)
    const parsed = parseOutput(text, { tools: true, reasoning: false, idPrefix: `call_${this.turns}_` })
    // the view the next turn extends: everything so far plus this reply
    this.seen = view.length + 1
    const calls: ToolCall[] = parsed.toolCalls.map((c) => ({
      id: c.id,
      name: c.name,
      arguments: JSON.parse(c.arguments) as Record<string, unknown>,
      requestor: 'assistant',
    }))
    if (calls.some((c) => c.name === 'done')) return { role: 'assistant', content: STOP }
    return { role: 'assistant', content: parsed.content || null, tool_calls: calls.length ? calls : null }
  }

  private push(id: number, m: number, lp: number) {
    this.ids.push(id)
    this.mask.push(m)
    this.behave.push(lp)
  }
}

/** The quick-start learner: model, tokenizer, domain; `step()` runs one collect + update. */
export class QuickstartLearner {
  readonly opts: LearnOptions
  private model!: Model
  private batcher!: Batcher
  private builder!: PromptBuilder
  private data!: DomainData
  private tasks!: Task[]
  private ctx!: TemplateContext
  private stepIndex = 0
  private seedCounter = 0
  private readonly log = silentLogger()

  constructor(opts: Partial<LearnOptions> = {}) {
    this.opts = { ...defaults, ...opts }
  }

  async init(): Promise<void> {
    setNumThreads(this.opts.threads)
    const tok = ModelTokenizer.fromDir(MODEL_DIR)
    this.builder = new PromptBuilder(tok, ChatTemplate.forTokenizer(tok))
    const config = readHfConfig(MODEL_DIR)
    if (this.opts.initializerRange > 0) config.initializer_range = this.opts.initializerRange
    this.model = await createModel({ config, seed: this.opts.seed })
    const stopIds = [...tok.eosTokenIds]
    if (this.opts.stopAfterCall) stopIds.push(...idsEndingWith(tok, STOP_AFTER_CALL))
    this.batcher = new Batcher(this.model, this.opts, stopIds)
    this.data = loadDomainData(DOMAINS_DIR, DOMAIN)
    this.tasks = loadTasks(DOMAINS_DIR, DOMAIN, 'train')
    this.ctx = { tools: workloadTools() }
    this.seedCounter = this.opts.seed * 1_000_003
  }

  dispose(): void {
    this.model?.dispose()
  }

  /** Per-token log-probs of episode samples under the current model (aligned with `ids`). */
  async scores(episodes: Episode[]): Promise<Float32Array[]> {
    const cu = [0]
    for (const e of episodes) cu.push(cu[cu.length - 1] + e.ids.length)
    const inputIds = Int32Array.from(episodes.flatMap((e) => e.ids))
    const lp = await this.model.logprobs(
      { inputIds, cuSeqlens: Int32Array.from(cu) },
      { temperature: this.opts.temperature },
    )
    return episodes.map((_, i) => lp.logprobs.slice(cu[i], cu[i + 1]))
  }

  /** The tokenizer (for checks on samples). */
  get tokenizer(): ModelTokenizer {
    return this.builder.tokenizer
  }

  /** Tasks of the next step (round-robin over the split). */
  private nextTasks(): Task[] {
    const n =
      this.opts.tasksPerStep > 0 ? Math.min(this.opts.tasksPerStep, this.tasks.length) : this.tasks.length
    const start = (this.stepIndex * n) % this.tasks.length
    return Array.from({ length: n }, (_, i) => this.tasks[(start + i) % this.tasks.length])
  }

  private async episode(task: Task): Promise<Episode> {
    const env = new Environment(this.data, { solo: true })
    env.setState(task.initial_state, task.initial_state?.message_history ?? [], true)
    const system = agentSystemPrompt(env.policy, true, task.ticket)
    const agent = new TokenAgent(system, this.ctx, this.builder, this.batcher, () => this.seedCounter++)
    const run = await orchestrate({
      agent,
      env: { tools: async (calls) => calls.map((c) => env.getResponse(c)) },
      solo: true,
      history: task.initial_state?.message_history ?? [],
      maxSteps: this.opts.maxSteps,
      maxErrors: 10,
      log: this.log,
    })
    const first = run.trajectory.find((m) => m.role === 'assistant' && m.tool_calls?.length) as
      | AssistantMessage
      | undefined
    const gold = task.evaluation_criteria?.actions?.[0]
    const call = first?.tool_calls?.[0]
    const firstCallRight =
      !!gold &&
      !!call &&
      call.name === gold.name &&
      JSON.stringify(call.arguments) === JSON.stringify(gold.arguments)
    const ev = evaluateEpisode(this.data, task, run.trajectory, run.terminationReason, true)
    return {
      task,
      reward: ev.reward,
      reason: run.terminationReason,
      turns: agent.turns,
      firstCallRight,
      error: run.error?.message,
      ids: agent.ids,
      mask: agent.mask,
      behave: agent.behave,
    }
  }

  /** Run one batch of episodes: `group` per task, tasks round-robin; all agent turns batched. */
  async collect(): Promise<Episode[]> {
    const tasks = this.nextTasks()
    this.stepIndex++
    return Promise.all(
      tasks.flatMap((task) => Array.from({ length: this.opts.group }, () => this.episode(task))),
    )
  }

  /** Collect one batch of episodes and take one PPO step; `train: false` only collects. */
  async step(train = true): Promise<StepReport> {
    const t0 = Date.now()
    const o = this.opts
    const episodes = await this.collect()
    const adv = groupAdvantages(episodes, o.group)
    let stats: StepStats | null = null
    const t1 = Date.now()
    if (train && adv.some((a) => a !== 0)) stats = await this.update(episodes, adv)
    const trainSeconds = (Date.now() - t1) / 1000
    const terminations: StepReport['terminations'] = {}
    for (const e of episodes) terminations[e.reason] = (terminations[e.reason] ?? 0) + 1
    const mean = (f: (e: Episode) => number) => episodes.reduce((s, e) => s + f(e), 0) / episodes.length
    return {
      step: this.stepIndex,
      reward: mean((e) => e.reward),
      episodes: episodes.length,
      turns: mean((e) => e.turns),
      firstCallRight: mean((e) => (e.firstCallRight ? 1 : 0)),
      outTokens: mean((e) => e.mask.reduce((s, m) => s + m, 0)),
      terminations,
      stats,
      seconds: (Date.now() - t0) / 1000,
      trainSeconds,
    }
  }

  /** One PPO step on episodes with per-episode advantages (episodes with advantage 0 are left out). */
  async update(episodes: Episode[], adv: number[]): Promise<StepStats> {
    const o = this.opts
    const used = episodes.map((e, i) => ({ e, a: adv[i] })).filter((x) => x.a !== 0)
    const cu = [0]
    for (const { e } of used) cu.push(cu[cu.length - 1] + e.ids.length)
    const T = cu[cu.length - 1]
    const inputIds = new Int32Array(T)
    const lossMask = new Uint8Array(T)
    const advantages = new Float32Array(T)
    const behave = new Float32Array(T)
    used.forEach(({ e, a }, k) => {
      const off = cu[k]
      inputIds.set(e.ids, off)
      for (let j = 0; j < e.ids.length; j++) {
        lossMask[off + j] = e.mask[j]
        advantages[off + j] = e.mask[j] ? a : 0
        behave[off + j] = e.behave[j]
      }
    })
    const batch = { inputIds, cuSeqlens: Int32Array.from(cu) }
    // One update per batch is on-policy: πprox = πbehave (the engine's log-probs; the smoke test checks
    // they match a recomputation). With more epochs πprox is recomputed once, as the trainer does.
    const prox =
      o.epochs > 1 ? (await this.model.logprobs(batch, { temperature: o.temperature })).logprobs : behave
    const loss: PpoLossConfig = { epsClip: o.epsClip, temperature: o.temperature, behavImpWeightCap: 5 }
    const optim: OptimizerConfig = { lr: o.lr, maxGradNorm: o.maxGradNorm, betas: [0.9, 0.99] }
    const mbs = [{ ...batch, lossMask, advantages, proxLogprobs: prox, behaveLogprobs: behave }]
    let stats = await this.model.ppoStep(mbs, loss, optim)
    for (let e = 1; e < o.epochs; e++) stats = await this.model.ppoStep(mbs, loss, optim)
    return stats
  }
}

/** The stop string of `stopAfterCall`. */
export const STOP_AFTER_CALL = '</tool_call>'

/** Ids of the vocabulary's tokens whose text ends with `suffix`. */
export function idsEndingWith(tok: ModelTokenizer, suffix: string): number[] {
  const out: number[] = []
  for (let id = 0; id < tok.vocabSize; id++) if (tok.decode([id]).endsWith(suffix)) out.push(id)
  return out
}

/** GRPO: per group of episodes of one task, (r − mean) / (std + 1e-5); 0 for groups of equal rewards. */
export function groupAdvantages(episodes: { reward: number }[], group: number): number[] {
  const out = new Array<number>(episodes.length).fill(0)
  for (let g = 0; g < episodes.length; g += group) {
    const rs = episodes.slice(g, g + group).map((e) => e.reward)
    const mean = rs.reduce((s, r) => s + r, 0) / rs.length
    const std = Math.sqrt(rs.reduce((s, r) => s + (r - mean) ** 2, 0) / rs.length)
    if (std === 0) continue
    rs.forEach((r, i) => {
      out[g + i] = (r - mean) / (std + 1e-5)
    })
  }
  return out
}

function envNumber(name: string): number | undefined {
  const v = process.env[name]
  if (v === undefined || v === '') return undefined
  const n = Number(v)
  if (!Number.isFinite(n)) throw new Error(`${name}=${v}: not a number`)
  return n
}

async function main(): Promise<void> {
  const opts: Partial<LearnOptions> = {}
  const knobs: [string, keyof LearnOptions][] = [
    ['QS_SECONDS', 'seconds'],
    ['QS_STEPS', 'steps'],
    ['QS_GROUP', 'group'],
    ['QS_TASKS', 'tasksPerStep'],
    ['QS_LR', 'lr'],
    ['QS_EPOCHS', 'epochs'],
    ['QS_MAX_TOKENS', 'maxNewTokens'],
    ['QS_MAX_STEPS', 'maxSteps'],
    ['QS_STOP_AFTER_CALL', 'stopAfterCall'],
    ['QS_SEED', 'seed'],
    ['QS_THREADS', 'threads'],
    ['QS_INIT', 'initializerRange'],
  ]
  for (const [env, key] of knobs) {
    const v = envNumber(env)
    if (v !== undefined)
      (opts as Record<string, number | boolean>)[key] = key === 'stopAfterCall' ? v !== 0 : v
  }
  const learner = new QuickstartLearner(opts)
  const o = learner.opts
  process.stdout.write(
    `quickstart-learn: group=${o.group} tasks/step=${o.tasksPerStep} max_new_tokens=${o.maxNewTokens} max_steps=${o.maxSteps} stop_after_call=${o.stopAfterCall} lr=${o.lr} epochs=${o.epochs} temperature=${o.temperature} seed=${o.seed} budget=${o.seconds}s\n`,
  )
  const t0 = Date.now()
  await learner.init()
  const rewards: number[] = []
  try {
    for (let i = 0; i < o.steps; i++) {
      const r = await learner.step()
      rewards.push(r.reward)
      const s = r.stats
      const term = Object.entries(r.terminations)
        .map(([k, v]) => `${k}:${v}`)
        .join(',')
      process.stdout.write(
        `step ${String(r.step).padStart(3)} reward=${r.reward.toFixed(3)} first_call_ok=${r.firstCallRight.toFixed(2)} turns=${r.turns.toFixed(2)} out_tokens=${r.outTokens.toFixed(1)} ` +
          `${s ? `loss=${s.loss.toFixed(4)} kl=${s.approxKl.toExponential(2)} entropy=${s.entropy.toFixed(3)} grad_norm=${s.gradNorm.toFixed(3)}` : 'no-update'} ` +
          `[${term}] ${r.seconds.toFixed(1)}s (train ${r.trainSeconds.toFixed(1)}s, total ${((Date.now() - t0) / 1000).toFixed(0)}s)\n`,
      )
      if (o.seconds > 0 && Date.now() - t0 >= o.seconds * 1000) break
      // converged: the last five steps all but solved every task
      if (rewards.length >= 5 && rewards.slice(-5).every((x) => x >= 0.95)) break
    }
  } finally {
    learner.dispose()
  }
  const k = Math.max(1, Math.min(3, Math.floor(rewards.length / 3)))
  const avg = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length
  const start = avg(rewards.slice(0, k))
  const end = avg(rewards.slice(-k))
  process.stdout.write(
    `RESULT quickstart-learn reward_start=${start.toFixed(3)} reward_end=${end.toFixed(3)} steps=${rewards.length} seconds=${((Date.now() - t0) / 1000).toFixed(0)}\n`,
  )
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err) => {
    process.stderr.write(`${err?.stack ?? err}\n`)
    process.exit(1)
  })
}
