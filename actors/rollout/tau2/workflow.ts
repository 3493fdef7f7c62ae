/**
 * The tau2 AgentWorkflow: one episode = open an environment session (worker thread), run the
 * orchestrator (agent via ctx's endpoint, user simulator via econfig), close the session, evaluate
 * (environment parts in a worker, NL assertions through the judge when configured).
 */
import { randomUUID } from 'node:crypto'
import OpenAI from 'openai'
import { fail } from '../../../runtime/errors.ts'
import type { AgentWorkflow, WorkflowContext, WorkflowResult } from '../workflow.ts'
import { LLMAgent } from './agent.ts'
import { dataDirOf, type Tau2Config } from './config.ts'
import type { EnvPool } from './env-pool.ts'
import { applyJudge, type EvaluationResult, STOP_REASONS } from './evaluation.ts'
import { judgeNlAssertions } from './judge.ts'
import { type OrchestratorResult, orchestrate } from './orchestrator.ts'
import { UserSimulator } from './user-simulator.ts'

/** A task reference: its id in the configured domain. */
export type Tau2TaskRef = string | { id: string }

export interface Tau2EpisodeInfo extends Record<string, unknown> {
  domain: string
  taskId: string
  episodeId: string
  terminationReason: OrchestratorResult['terminationReason']
  steps: number
  numErrors: number
  error: OrchestratorResult['error'] | null
  evaluation: EvaluationResult | null
  trajectory: OrchestratorResult['trajectory']
}

export class Tau2Workflow implements AgentWorkflow<Tau2TaskRef> {
  private readonly dataDir: string
  private readonly userClient: OpenAI | undefined
  private readonly judgeClient: OpenAI | undefined

  constructor(
    private readonly cfg: Tau2Config,
    private readonly pool: EnvPool,
  ) {
    this.dataDir = dataDirOf(cfg)
    if (!cfg.solo_mode && !cfg.user_llm_base_url)
      throw fail('CFG_ERR_MISSING', 'econfig.user_llm_base_url: required unless econfig.solo_mode is true', {
        key: 'econfig.user_llm_base_url',
      })
    if (cfg.user_llm_base_url)
      this.userClient = new OpenAI({
        baseURL: cfg.user_llm_base_url,
        apiKey: cfg.user_llm_api_key || process.env.USER_LLM_API_KEY || 'none',
        maxRetries: 2,
      })
    if (cfg.judge_llm_base_url)
      this.judgeClient = new OpenAI({
        baseURL: cfg.judge_llm_base_url,
        apiKey: cfg.judge_llm_api_key || process.env.JUDGE_LLM_API_KEY || 'none',
        maxRetries: 2,
      })
  }

  async run(ref: Tau2TaskRef, ctx: WorkflowContext): Promise<WorkflowResult> {
    const taskId = typeof ref === 'string' ? ref : ref.id
    const cfg = this.cfg
    const log = ctx.log.child({ domain: cfg.domain, task: taskId })
    const opened = await this.pool.open(
      this.dataDir,
      cfg.domain,
      taskId,
      cfg.solo_mode,
      ctx.episodeId ?? randomUUID(),
    )
    const { episodeId } = opened
    let run: OrchestratorResult
    try {
      const agent = new LLMAgent({
        client: new OpenAI({ baseURL: ctx.baseURL, apiKey: ctx.apiKey, maxRetries: 0 }),
        model: ctx.model,
        policy: opened.policy,
        tools: opened.agentTools,
        solo: cfg.solo_mode,
        ticket: opened.task.ticket,
        args: cfg.agent_llm_args,
      })
      const user =
        cfg.solo_mode || !this.userClient
          ? undefined
          : new UserSimulator({
              client: this.userClient,
              model: cfg.user_llm,
              guidelines: opened.guidelines,
              task: opened.task,
              tools: opened.userTools,
              args: cfg.user_llm_args,
            })
      run = await orchestrate({
        agent,
        user,
        env: { tools: (calls) => this.pool.tools(episodeId, calls) },
        solo: cfg.solo_mode,
        history: opened.history,
        maxSteps: cfg.max_steps,
        maxErrors: cfg.max_errors,
        timeoutMs: cfg.timeout_s * 1000,
        signal: ctx.signal,
        log,
      })
    } finally {
      await this.pool.close(episodeId)
    }

    let evaluation: EvaluationResult | null = null
    if (run.terminationReason !== 'env_error') {
      evaluation = await this.pool.evaluate(
        this.dataDir,
        cfg.domain,
        taskId,
        cfg.solo_mode,
        run.trajectory,
        run.terminationReason,
      )
      evaluation = await this.judge(
        evaluation,
        opened.task.evaluation_criteria?.nl_assertions ?? [],
        run,
        ctx,
        log,
      )
    }
    const reward = evaluation?.reward ?? 0
    log.info(
      {
        episodeId,
        reward,
        terminationReason: run.terminationReason,
        steps: run.steps,
        errors: run.numErrors,
      },
      'tau2 episode done',
    )
    const info: Tau2EpisodeInfo = {
      domain: cfg.domain,
      taskId,
      episodeId,
      terminationReason: run.terminationReason,
      steps: run.steps,
      numErrors: run.numErrors,
      error: run.error ?? null,
      evaluation,
      trajectory: run.trajectory,
    }
    return { reward, info }
  }

  private async judge(
    ev: EvaluationResult,
    assertions: string[],
    run: OrchestratorResult,
    ctx: WorkflowContext,
    log: WorkflowContext['log'],
  ): Promise<EvaluationResult> {
    if (!ev.notEvaluated.includes('NL_ASSERTION') || !STOP_REASONS.includes(run.terminationReason)) return ev
    if (!this.judgeClient) return applyJudge(ev, null, 'no judge configured (econfig.judge_llm_base_url)')
    try {
      const verdict = await judgeNlAssertions(
        { client: this.judgeClient, model: this.cfg.judge_llm, args: this.cfg.judge_llm_args },
        run.trajectory,
        assertions,
        ctx.signal,
      )
      return applyJudge(ev, verdict)
    } catch (err) {
      if (ctx.signal.aborted) throw err
      log.warn({ err }, 'NL-assertion judge failed')
      return applyJudge(ev, null, `judge failed: ${(err as Error).message}`)
    }
  }
}
