/**
 * Every message of the bus, and nothing else: the only home of message shapes (STYLE §4).
 *
 * An envelope is `{v, kind, type, id, re, from, time, body}`:
 *   v     protocol version (PROTOCOL_VERSION)      kind  Tell | Ask | Reply | Error
 *   type  namespaced name, e.g. 'dir:register'      id    sender-local sequence number
 *   re    for Reply/Error: the id of the ask        from  sender actor id ('rollout/3')
 *   time  sender's clock, ms since epoch            body  typed by (kind, type) below
 *
 * `tells` maps a one-way message type to its body shape; `asks` maps a request type to
 * [request body, reply body]. A Reply carries the type of its ask; an Error carries a WireError.
 * Adding a message = adding one line here (and a sample in test/fixtures/messages.ts).
 */
import { any, arr, bool, type Infer, int, lit, num, obj, opt, rec, type Shape, str, typed } from './shape.ts'

export const PROTOCOL_VERSION = 1

export const Kind = { Tell: 0, Ask: 1, Reply: 2, Error: 3 } as const
export type Kind = (typeof Kind)[keyof typeof Kind]

// --- shared shapes --------------------------------------------------------------------------------------
export const dirEntry = obj({
  id: str,
  role: str,
  addr: str,
  pid: int,
  host: str,
  state: lit('alive', 'dead', 'draining'),
  /** ms since the last heartbeat, as seen by the controller when the entry was read */
  heartbeatAgeMs: num,
  startedAt: num,
  meta: opt(rec(any)),
})
export type DirEntry = Infer<typeof dirEntry>

export const tapFilter = obj({ types: opt(arr(str)), actors: opt(arr(str)) })
export type TapFilter = Infer<typeof tapFilter>
export const tapInfo = obj({ id: str, addr: str, filter: tapFilter })
export type TapInfo = Infer<typeof tapInfo>

export const wireError = obj({ code: str, message: str, details: opt(rec(any)) })

/** Sampling parameters sent to an engine (token ids in, token ids out). */
export const samplingShape = obj({
  maxNewTokens: int,
  temperature: num,
  topP: num,
  topK: opt(int),
  stopTokenIds: arr(int),
  seed: opt(int),
})
export type SamplingShape = Infer<typeof samplingShape>

/**
 * A reference to exported trajectories held by a proxy (bulk arrays stay there until the trainer
 * fetches them): what the controller sees instead of the data.
 */
export const trajRef = obj({
  /** actor id of the proxy holding the data */
  proxy: str,
  ref: str,
  samples: int,
  tokens: int,
  trainableTokens: int,
  minVersion: int,
  maxVersion: int,
})
export type TrajRef = Infer<typeof trajRef>

/** Packed training samples as a proxy exports them (fetched once by the trainer, then freed). */
export const packedTrajectories = obj({
  ref: str,
  style: lit('individual', 'concat'),
  sessionIds: arr(str),
  /** sample k spans [offsets[k], offsets[k+1]) of the token arrays */
  offsets: typed(Int32Array),
  inputIds: typed(Int32Array),
  lossMask: typed(Uint8Array),
  logprobs: typed(Float32Array),
  versions: typed(Int32Array),
  /** per sample */
  rewards: typed(Float32Array),
  sampleSession: typed(Int32Array),
  completionIds: arr(arr(str)),
})
export type PackedTrajectoriesMsg = Infer<typeof packedTrajectories>

/** One episode's outcome as the rollout actor reports it. */
export const episodeResult = obj({
  sessionId: str,
  reward: num,
  status: lit('completed', 'failed'),
  /** who a failure is blamed on: the policy (agent), the user simulator, the environment, or infrastructure */
  blame: opt(lit('agent', 'user', 'env', 'infra')),
  error: opt(wireError),
  /** per reward component: 1 passed, 0 failed, null not evaluated */
  components: opt(rec(any)),
  /** how the episode ended (agent_stop, user_stop, max_steps, too_many_errors, …) */
  termination: opt(str),
  /** orchestrator steps of the episode */
  turns: int,
  /** completions the policy produced (proxy records) */
  completions: int,
})
export type EpisodeResult = Infer<typeof episodeResult>

// --- one-way messages -------------------------------------------------------------------------------------
export const tells = {
  /** actor → controller, every heartbeat interval */
  'dir:heartbeat': obj({ id: str }),
  /** controller → watchers: an actor registered (or came back) */
  'dir:up': obj({ entry: dirEntry }),
  /** controller → watchers: an actor missed its deadline, exited, or unregistered */
  'dir:down': obj({ id: str, role: str, reason: str }),
  /** actor → controller, on clean stop */
  'dir:unregister': obj({ id: str, reason: str }),
  /** controller → every actor: the set of attached taps changed */
  'tap:set': obj({ taps: arr(tapInfo) }),
  /** actor → tap: a mirrored envelope (`frames` are the raw frames the actor received) */
  'tap:frame': obj({ actor: str, dir: lit('in', 'reply'), at: num, frames: arr(any) }),
  /** test and demo traffic */
  'test:note': obj({ text: str, seq: opt(int) }),
  /** ask any actor to stop (clean drain) */
  'sys:stop': obj({ reason: str }),
} as const satisfies Record<string, Shape<unknown>>

// --- request/reply --------------------------------------------------------------------------------------
export const asks = {
  'dir:register': [
    obj({ id: str, role: str, addr: str, pid: int, host: str, meta: opt(rec(any)) }),
    obj({ heartbeatMs: int, deadlineMs: int, taps: arr(tapInfo) }),
  ],
  'dir:lookup': [obj({ id: opt(str), role: opt(str) }), obj({ entries: arr(dirEntry) })],
  'dir:list': [obj({}), obj({ entries: arr(dirEntry), controller: str, startedAt: num })],
  /** subscribe the caller to dir:up / dir:down for these ids or roles (none = everything) */
  'dir:watch': [obj({ ids: opt(arr(str)), roles: opt(arr(str)) }), obj({ entries: arr(dirEntry) })],
  'tap:attach': [obj({ id: str, addr: str, filter: tapFilter }), obj({ actors: int })],
  'tap:detach': [obj({ id: str }), obj({ ok: bool })],
  /** liveness and counters of one actor */
  'sys:stats': [
    obj({}),
    obj({
      id: str,
      role: str,
      pid: int,
      uptimeMs: num,
      received: int,
      rejected: rec(int),
      handled: int,
      inflight: int,
    }),
  ],
  /** echo back the body (tests, benchmarks, `bin/send`) */
  'test:echo': [obj({ data: any }), obj({ data: any })],
  /** ask another actor test:echo and return its reply (tests of peer-to-peer traffic) */
  'test:relay': [obj({ to: str, data: any }), obj({ data: any })],
  /** the test:note texts this actor received, in order */
  'test:notes': [obj({}), obj({ notes: arr(str) })],
  // --- embedded engine (actors/engine.ts) ---
  /** generate after inputIds; resolves with finishReason 'abort' (and the tokens so far) when paused */
  'engine:generate': [
    obj({ rid: str, inputIds: typed(Int32Array), sampling: samplingShape }),
    obj({
      outputIds: typed(Int32Array),
      logprobs: typed(Float32Array),
      versions: typed(Int32Array),
      finishReason: lit('stop', 'length', 'abort'),
    }),
  ],
  /** abort in-flight generations, hold new ones until engine:resume */
  'engine:pause': [obj({}), obj({ aborted: int })],
  'engine:resume': [obj({}), obj({ version: int })],
  /** load HF safetensors weights from a directory; tokens generated afterwards carry `version` */
  'engine:update_weights': [obj({ path: str, version: int }), obj({ version: int, loadMs: num })],
  /** abort these requests (the caller gave up): each is answered with finishReason 'abort' */
  'engine:abort': [obj({ rids: arr(str) }), obj({ aborted: int })],
  'engine:info': [
    obj({}),
    obj({ version: int, running: int, queued: int, paused: bool, generatedTokens: int, weightsPath: str }),
  ],

  // --- proxy (actors/proxy/actor.ts): sessions, export by reference, engine control ---
  'proxy:session:open': [
    obj({ sessionId: opt(str), meta: opt(rec(any)) }),
    obj({ sessionId: str, apiKey: str, baseUrl: str }),
  ],
  'proxy:session:end': [obj({ sessionId: str }), obj({ completions: int })],
  /** reward one completion (interactionId) or the session's last */
  'proxy:session:reward': [
    obj({ sessionId: str, reward: num, interactionId: opt(str) }),
    obj({ interactionId: str }),
  ],
  /** pack ended sessions into samples held under a reference; the reply is the reference */
  'proxy:export': [
    obj({ sessionIds: arr(str), style: opt(lit('individual', 'concat')), turnDiscount: opt(num) }),
    trajRef,
  ],
  /** the packed arrays of a reference (freed on the proxy once fetched) */
  'proxy:fetch': [obj({ ref: str }), packedTrajectories],
  /** free references that will not be fetched (filtered or stale groups) */
  'proxy:release': [obj({ refs: arr(str) }), obj({ released: int })],
  /** pause the proxy's engines (in-flight generations abort and are resumed later) */
  'proxy:pause': [obj({}), obj({ version: int })],
  'proxy:resume': [obj({}), obj({ version: int })],
  /** have the proxy's engines load weights from path; tokens from now on carry `version` */
  /** have the engines load `path` (or, with `loaded`, take the version of weights already broadcast to them) */
  'proxy:update_weights': [obj({ path: str, version: int, loaded: opt(bool) }), obj({ version: int })],
  'proxy:stats': [obj({}), rec(any)],

  // --- rollout (actors/rollout/actor.ts) ---
  /** run nSamples episodes of one task through a proxy; reply when all have ended and been exported */
  'rollout:run': [
    obj({ groupId: str, taskId: str, nSamples: int, version: int, seed: int }),
    obj({ groupId: str, episodes: arr(episodeResult), traj: opt(trajRef), ms: num }),
  ],
  /** stop taking work; reply once in-flight groups are done */
  'rollout:drain': [obj({}), obj({ completed: int })],

  // --- controller control (bin/add-rollout, bin/drain-rollout) ---
  /** start n more actors of a role in the running job (local: processes; Slurm: srun steps); reply once registered */
  'ctl:spawn': [obj({ role: lit('rollout'), n: int }), obj({ ids: arr(str) })],
  /** stop dispatching to a rollout actor, let its in-flight groups finish and count, then stop it */
  'ctl:drain': [obj({ id: str }), obj({ id: str, completed: int })],

  // --- trainer (actors/trainer.ts; rank 0 is the head) ---
  /** one PPO step over these groups (data fetched from proxies by reference); returns stats */
  'trainer:step': [
    obj({
      step: int,
      version: int,
      groups: arr(obj({ groupId: str, traj: trajRef })),
    }),
    obj({ step: int, stats: rec(num), ms: num }),
  ],
  /** write the current weights as HF safetensors under dir (for engines to load) */
  /** publish the current weights: to `dir` (safetensors), or broadcast to the engines (reply `loaded`) */
  'trainer:publish': [obj({ version: int, dir: str }), obj({ dir: str, ms: num, loaded: opt(bool) })],
  /** save a resumable checkpoint (weights + optimizer + step) under dir */
  'trainer:checkpoint': [obj({ dir: str, step: int }), obj({ dir: str, ms: num })],
  /**
   * head → rank r > 0: this rank's share of a step, already advantaged (per-token arrays aligned with
   * inputIds; cuSeqlens are this shard's sequence bounds); the rank joins the collective PPO update
   */
  'trainer:shard': [
    obj({
      step: int,
      /** per-minibatch [start, end) sample indices into cuSeqlens (one optimizer step each) */
      minibatches: arr(arr(int)),
      inputIds: typed(Int32Array),
      cuSeqlens: typed(Int32Array),
      lossMask: typed(Uint8Array),
      logprobs: typed(Float32Array),
      advantages: typed(Float32Array),
    }),
    /** stats: this rank's sums (lossTokens, behaveMinusProx, …); the PPO stats are global already */
    obj({ step: int, samples: int, tokens: int, ms: num, stats: rec(num) }),
  ],
  /** head → rank r > 0: join a collective save of the weights (publish or checkpoint) into dir */
  'trainer:save': [
    obj({ dir: str, purpose: lit('publish', 'checkpoint', 'broadcast'), step: int }),
    obj({ files: arr(str), ms: num }),
  ],

  /** demo job (bin/demo): count the primes in [lo, hi) */
  'demo:work': [obj({ lo: int, hi: int }), obj({ primes: int, worker: str })],
  /** sleep then reply (tests of timeouts and cancellation) */
  'test:sleep': [obj({ ms: int }), obj({ slept: int })],
} as const satisfies Record<string, readonly [Shape<unknown>, Shape<unknown>]>

export type TellType = keyof typeof tells
export type AskType = keyof typeof asks
export type MsgType = TellType | AskType
export type TellBody<T extends TellType> = Infer<(typeof tells)[T]>
export type AskReq<T extends AskType> = Infer<(typeof asks)[T][0]>
export type AskRes<T extends AskType> = Infer<(typeof asks)[T][1]>
export type WireError = Infer<typeof wireError>

interface EnvelopeBase {
  v: number
  id: number
  re: number
  from: string
  time: number
}
export type TellEnvelope<T extends TellType = TellType> = EnvelopeBase & {
  kind: 0
  type: T
  body: TellBody<T>
}
export type AskEnvelope<T extends AskType = AskType> = EnvelopeBase & { kind: 1; type: T; body: AskReq<T> }
export type ReplyEnvelope<T extends AskType = AskType> = EnvelopeBase & { kind: 2; type: T; body: AskRes<T> }
export type ErrorEnvelope = EnvelopeBase & { kind: 3; type: string; body: WireError }
export type Envelope = TellEnvelope | AskEnvelope | ReplyEnvelope | ErrorEnvelope

export function isTell(type: string): type is TellType {
  return Object.hasOwn(tells, type)
}
export function isAsk(type: string): type is AskType {
  return Object.hasOwn(asks, type)
}

/** null when the body fits its (kind, type); else what is wrong. Unknown types are reported too. */
export function checkBody(env: { kind: number; type: string; body: unknown }): string | null {
  switch (env.kind) {
    case Kind.Tell:
      return isTell(env.type) ? tells[env.type](env.body, 'body') : `unknown tell type "${env.type}"`
    case Kind.Ask:
      return isAsk(env.type) ? asks[env.type][0](env.body, 'body') : `unknown ask type "${env.type}"`
    case Kind.Reply:
      return isAsk(env.type) ? asks[env.type][1](env.body, 'body') : `unknown reply type "${env.type}"`
    case Kind.Error:
      return wireError(env.body, 'body')
    default:
      return `unknown kind ${env.kind}`
  }
}
