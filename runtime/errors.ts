/**
 * The one catalogue of error codes. Every error that crosses a module, a socket, a thread or an HTTP
 * response carries one of these codes. Codes are matched on `err.code`, never with `instanceof`: classes
 * do not survive ZeroMQ or worker_threads, codes do (they travel as `actor:error {code, message}`).
 *
 * Each entry: `status` (HTTP-style class: 4xx the caller's fault, 5xx ours or a peer's), a one-line
 * `message` (the default text) and a `hint` saying what to do about it. README.md's "Error codes" table
 * documents every code; test/unit/errors-catalogue.test.ts fails when the two drift apart.
 *
 * Prefixes: RT runtime/bus · CFG config · TRN native trainer · PRX proxy · ENV tau2 environment ·
 * RLT rollout · CTL controller · LCH launcher/schedulers · ENG engine.
 */

export interface ErrDef {
  readonly status: number
  readonly message: string
  readonly hint: string
}

export const catalogue = {
  // --- runtime / bus ---------------------------------------------------------------------------------
  RT_ERR_DECODE: {
    status: 400,
    message: 'frame is not a valid msgpack envelope',
    hint: 'the sender is not speaking this protocol; check what is connected to this inbox',
  },
  RT_ERR_VERSION: {
    status: 400,
    message: 'envelope has an unsupported protocol version',
    hint: 'rebuild and restart all actors from one commit',
  },
  RT_ERR_SHAPE: {
    status: 400,
    message: 'envelope or body does not match its message type',
    hint: 'sender and receiver disagree on runtime/messages.ts; restart all actors from one commit',
  },
  RT_ERR_OVERSIZE: {
    status: 413,
    message: 'frame exceeds the configured maximum size',
    hint: 'raise bus.max_frame_bytes or send bulk data by reference',
  },
  RT_ERR_UNKNOWN_TYPE: {
    status: 404,
    message: 'no handler for this message type',
    hint: 'the receiving actor does not implement this message; check the target role',
  },
  RT_ERR_TIMEOUT: {
    status: 504,
    message: 'ask timed out waiting for a reply',
    hint: 'the peer is slow, overloaded or gone; raise the timeout or check `bin/ps`',
  },
  RT_ERR_CANCELLED: { status: 499, message: 'ask was cancelled', hint: 'the caller aborted the request' },
  RT_ERR_PEER_DEAD: {
    status: 503,
    message: 'peer actor is dead or unreachable',
    hint: 'see the controller log and `bin/ps` for why it died',
  },
  RT_ERR_NO_ACTOR: {
    status: 404,
    message: 'no such actor in the directory',
    hint: 'list live actors with `bin/ps`',
  },
  RT_ERR_SEND: {
    status: 503,
    message: 'send failed or timed out (high-water mark reached)',
    hint: 'the peer is not draining its inbox; raise bus.send_timeout_ms or check the peer',
  },
  RT_ERR_CLOSED: { status: 503, message: 'actor is closed', hint: 'the actor was stopped before the call' },
  RT_ERR_HANDLER: {
    status: 500,
    message: 'message handler threw',
    hint: 'a bug in the receiving actor; its log has the stack',
  },
  RT_ERR_RESTART_LIMIT: {
    status: 500,
    message: 'restart intensity exceeded: supervisor gave up',
    hint: 'the child keeps crashing; read its log under the run directory',
  },
  RT_ERR_SPAWN: {
    status: 500,
    message: 'could not start child process',
    hint: 'check the command and its log',
  },
  RT_ERR_BIND: {
    status: 500,
    message: 'could not bind inbox socket',
    hint: 'address in use or not allowed; use an ephemeral port (tcp://127.0.0.1:*)',
  },
  RT_ERR_BAD_ADDRESS: {
    status: 400,
    message: 'not a usable job address',
    hint: 'pass the controller address printed at start, or the run directory holding controller.addr',
  },

  // --- config ----------------------------------------------------------------------------------------
  CFG_ERR_UNKNOWN_KEY: {
    status: 400,
    message: 'unknown config key',
    hint: 'check the spelling against the README config reference',
  },
  CFG_ERR_TYPE: {
    status: 400,
    message: 'config value has the wrong type',
    hint: 'fix the value at this key path',
  },
  CFG_ERR_MISSING: {
    status: 400,
    message: 'required config value is missing',
    hint: 'set it in the YAML or as key.path=value',
  },
  CFG_ERR_VALUE: {
    status: 400,
    message: 'config value is out of range',
    hint: 'see the allowed values in the README',
  },
  CFG_ERR_OVERRIDE: {
    status: 400,
    message: 'command-line override is not key.path=value',
    hint: 'write overrides as a.b.c=value',
  },
  CFG_ERR_FILE: {
    status: 400,
    message: 'config file cannot be read or parsed',
    hint: 'check the path and YAML syntax',
  },

  // --- tau2 environment (actors/rollout/tau2) ---------------------------------------------------------
  ENV_ERR_DATA_DIR: {
    status: 500,
    message: 'tau2 data directory not found or not laid out as <dir>/<domain>/ or <dir>/domains/<domain>/',
    hint: 'set econfig.data_dir (or TAU2_DATA_DIR) to a copy of tau2-bench data/tau2',
  },
  ENV_ERR_DATA_FILE: {
    status: 500,
    message: 'tau2 data file missing or unparseable',
    hint: 'check the file named in the message against tau2-bench data/tau2/domains/<domain>/',
  },
  ENV_ERR_UNKNOWN_DOMAIN: {
    status: 400,
    message: 'unknown tau2 domain',
    hint: 'econfig.domain must be one of airline, retail, telecom, mock',
  },
  ENV_ERR_UNKNOWN_SPLIT: {
    status: 400,
    message: 'unknown task split for this domain',
    hint: 'use a split named in the domain split_tasks.json (train, test, base, ...)',
  },
  ENV_ERR_UNKNOWN_TASK: {
    status: 404,
    message: 'no task with this id in the domain',
    hint: 'list task ids from the domain tasks.json',
  },
  ENV_ERR_SOLO_UNSUPPORTED: {
    status: 400,
    message: 'solo mode is not supported by this domain',
    hint: 'solo_mode works for telecom and mock only',
  },
  ENV_ERR_INIT: {
    status: 500,
    message: 'task initialisation failed',
    hint: 'an initialization action or a message-history replay of the task failed; the task data is inconsistent with the database',
  },
  ENV_ERR_ENV_FUNCTION: {
    status: 500,
    message: 'environment function unknown or returned a non-boolean assertion',
    hint: 'the task names an env function this domain does not define',
  },
  ENV_ERR_WORKER_CRASH: {
    status: 500,
    message: 'the environment worker thread running this episode crashed',
    hint: 'the episode is lost; other episodes continue. The worker log has the stack',
  },
  ENV_ERR_EPISODE_LOST: {
    status: 410,
    message: 'episode state is gone (its worker crashed or the episode was closed)',
    hint: 'start the episode again',
  },
  ENV_ERR_POOL_CLOSED: {
    status: 503,
    message: 'environment pool is closed',
    hint: 'the rollout actor is shutting down',
  },
  ENV_ERR_AGENT_LLM: {
    status: 502,
    message: 'agent LLM request failed or returned an unusable message',
    hint: 'check the agent base URL (proxy session) and the model name',
  },
  ENV_ERR_USER_LLM: {
    status: 502,
    message: 'user simulator LLM request failed or returned an unusable message',
    hint: 'check econfig.user_llm_base_url and econfig.user_llm',
  },
  ENV_ERR_JUDGE: {
    status: 502,
    message: 'NL-assertion judge failed or answered in an unexpected shape',
    hint: 'check econfig.judge_llm_base_url and econfig.judge_llm',
  },

  // --- proxy (actors/proxy, actors/tokenizer) --------------------------------------------------------
  PRX_ERR_AUTH_MISSING: {
    status: 401,
    message: 'no session key: send Authorization: Bearer <apiKey>',
    hint: 'pass the apiKey from the session open reply as the OpenAI client apiKey',
  },
  PRX_ERR_AUTH_INVALID: {
    status: 401,
    message: 'session key is not valid',
    hint: 'use the apiKey returned when this session was opened; keys die with their session',
  },
  PRX_ERR_FORBIDDEN: {
    status: 403,
    message: 'session key belongs to another session',
    hint: 'each session has its own apiKey and baseUrl; do not mix them',
  },
  PRX_ERR_NO_SESSION: {
    status: 404,
    message: 'no such session',
    hint: 'open a session first (proxy:session:open) and use its baseUrl',
  },
  PRX_ERR_SESSION_ENDED: {
    status: 410,
    message: 'session has ended',
    hint: 'open a new session for a new episode',
  },
  PRX_ERR_SESSION_ACTIVE: {
    status: 409,
    message: 'session is still active',
    hint: 'end the session (POST /rl/end_session or proxy:session:end) before exporting it',
  },
  PRX_ERR_FULL: {
    status: 429,
    message: 'proxy is at capacity',
    hint: 'retry later, add proxies, or raise proxy.max_sessions / proxy.max_inflight',
  },
  PRX_ERR_BAD_REQUEST: {
    status: 400,
    message: 'request body is malformed',
    hint: 'send an OpenAI-shaped JSON body; the message names the offending field',
  },
  PRX_ERR_BODY_TOO_LARGE: {
    status: 413,
    message: 'request body is larger than the proxy accepts',
    hint: 'raise proxy.body_limit_bytes, or send shorter conversations',
  },
  PRX_ERR_NO_ROUTE: {
    status: 404,
    message: 'no such endpoint',
    hint: 'the proxy serves /v1/chat/completions, /v1/completions, /v1/models, /rl/set_reward, /rl/end_session, /health',
  },
  PRX_ERR_UNSUPPORTED: {
    status: 400,
    message: 'request option is not supported by this proxy',
    hint: 'drop the option (e.g. n > 1); see the README proxy section',
  },
  PRX_ERR_PROMPT_TOO_LONG: {
    status: 400,
    message: 'prompt exceeds the context length',
    hint: 'shorten the conversation or raise proxy.context_length',
  },
  PRX_ERR_TEMPLATE: {
    status: 400,
    message: 'chat template could not render these messages',
    hint: 'check message roles and order against the model chat template',
  },
  PRX_ERR_TOKENIZER: {
    status: 500,
    message: 'tokenizer could not be loaded',
    hint: 'proxy.model_dir must hold tokenizer.json and tokenizer_config.json (with a chat_template)',
  },
  PRX_ERR_NO_INTERACTION: {
    status: 404,
    message: 'no such interaction in this session',
    hint: 'pass an interaction_id returned as a completion id, or omit it to mean the last completion',
  },
  PRX_ERR_NO_TRAJECTORY: {
    status: 404,
    message: 'no trajectories under this reference (unknown or already consumed)',
    hint: 'each export reference can be fetched once; export the session again only if it was not consumed',
  },
  PRX_ERR_ENGINE_DOWN: {
    status: 503,
    message: 'no inference engine is reachable',
    hint: 'check that the engine servers in proxy.engines are running and healthy',
  },
  PRX_ERR_UPSTREAM: {
    status: 502,
    message: 'inference engine answered with an error or an unreadable reply',
    hint: 'see the engine log; the proxy log has the upstream status and body',
  },
  PRX_ERR_UPSTREAM_TIMEOUT: {
    status: 504,
    message: 'inference engine did not answer in time',
    hint: 'raise proxy.request_timeout_ms or check the engine load',
  },
  PRX_ERR_CLOSED: {
    status: 503,
    message: 'proxy is shutting down',
    hint: 'retry against another proxy',
  },
  PRX_ERR_ENGINE_REFUSED: {
    status: 502,
    message: 'inference engine refused a weight-update request',
    hint: "the message has the engine's reason: names, dtypes and shapes must match its model, and its update group must be initialised; see the engine log",
  },
  // --- native trainer (native/) ---------------------------------------------------------------------
  TRN_ERR_LIBTORCH: {
    status: 500,
    message: 'no libtorch found to build the native addon',
    hint: 'apt-get install libtorch-dev libgloo-dev, or pip install torch, or set LIBTORCH; then npm run build:native',
  },
  TRN_ERR_NOT_BUILT: {
    status: 500,
    message: 'native addon is not built or cannot be loaded',
    hint: 'run npm run build:native (bin/setup does it); check that libtorch is installed',
  },
  TRN_ERR_ARG: {
    status: 400,
    message: 'bad argument to a native trainer call',
    hint: 'check shapes and dtypes against native/index.ts',
  },
  TRN_ERR_CONFIG: {
    status: 400,
    message: 'model config is not supported by the native trainer',
    hint: 'fix the named config.json key; the native model implements HF Qwen3',
  },
  TRN_ERR_CHECKPOINT: {
    status: 400,
    message: 'checkpoint cannot be read or written',
    hint: 'check the directory holds config.json and matching *.safetensors (and disk space when saving)',
  },
  TRN_ERR_BUSY: {
    status: 409,
    message: 'native model or process group is busy with another call',
    hint: 'await the previous call; calls on one model handle (and one process group) are serialised',
  },
  TRN_ERR_DISPOSED: {
    status: 410,
    message: 'native model was disposed',
    hint: 'create or load the model again',
  },
  TRN_ERR_DIST: {
    status: 503,
    message: 'process group rendezvous or collective failed',
    hint: 'check every rank runs with the same worldSize and rendezvous (fresh storePath or host:port), and is alive',
  },
  TRN_ERR_DEVICE: {
    status: 503,
    message: 'the requested device is not available to the native trainer',
    hint: "build the addon against a CUDA libtorch (python3 with torch+CUDA, or LIBTORCH) on a machine with a GPU, or use device 'cpu'",
  },
  TRN_ERR_TORCH: {
    status: 500,
    message: 'libtorch raised an error',
    hint: 'a bug or out of memory in the native trainer; the message has the libtorch text',
  },
  TRN_ERR_BATCH: {
    status: 400,
    message: 'training data of a step is unusable',
    hint: 'the fetched trajectories have no samples or no loss tokens, or arrays that disagree; check the proxy export',
  },
  TRN_ERR_LOST_TRAJECTORY: {
    status: 410,
    message: "some groups' trajectories are gone with their proxy",
    hint: 'the proxy holding them crashed or restarted before the trainer fetched them; the controller drops those groups and trains on others',
  },
  TRN_ERR_RANK: {
    status: 503,
    message: 'a trainer rank did not take part in a collective call',
    hint: 'every rank of trainer.world_size must be running and registered; see the rank logs',
  },
  // --- launcher and schedulers (bin/launch, runtime/scheduler/) ----------------------------------------
  LCH_ERR_SLURM: {
    status: 500,
    message: 'Slurm is not usable here',
    hint: 'install the Slurm client commands (sbatch, squeue, scancel, scontrol) and check SLURM_CONF / munge',
  },
  LCH_ERR_SUBMIT: {
    status: 500,
    message: 'sbatch refused the job',
    hint: 'check scheduler.slurm.partition/account/time_limit/extra_sbatch against the cluster (sbatch says why)',
  },
  LCH_ERR_JOB: {
    status: 500,
    message: 'the Slurm job ended without the launcher inside it reporting',
    hint: 'it was cancelled, timed out or lost a node; read <run dir>/logs/controller.err and slurm state',
  },
  LCH_ERR_SERVER: {
    status: 503,
    message: 'an inference server did not become healthy',
    hint: 'read <run dir>/logs/server-<i>.log; raise scheduler.servers.start_timeout_s for big models',
  },
  // --- embedded engine (actors/engine/) --------------------------------------------------------------
  ENG_ERR_BAD_REQUEST: {
    status: 400,
    message: 'generation request does not fit the engine model',
    hint: 'token ids must be in the vocabulary and prompt + maxNewTokens within max_position_embeddings',
  },
} as const satisfies Record<string, ErrDef>

export type ErrCode = keyof typeof catalogue

export function isErrCode(x: unknown): x is ErrCode {
  return typeof x === 'string' && Object.hasOwn(catalogue, x)
}

/** An error with a catalogue code. `details` is plain data, safe to encode onto the bus or into JSON. */
export class CodedError extends Error {
  readonly code: ErrCode
  readonly status: number
  readonly hint: string
  readonly details: Record<string, unknown> | undefined
  constructor(
    code: ErrCode,
    message?: string,
    details?: Record<string, unknown>,
    options?: { cause?: unknown },
  ) {
    const def = catalogue[code]
    super(message ? `${def.message}: ${message}` : def.message, options)
    this.name = 'CodedError'
    this.code = code
    this.status = def.status
    this.hint = def.hint
    this.details = details
  }
}

/** Make a coded error (`throw fail('CFG_ERR_TYPE', 'rollout.n: expected integer, got "x"')`). */
export function fail(
  code: ErrCode,
  message?: string,
  details?: Record<string, unknown>,
  cause?: unknown,
): CodedError {
  return new CodedError(code, message, details, cause === undefined ? undefined : { cause })
}

/** The wire form of an error (what `actor:error` and error replies carry). */
export interface WireError {
  code: string
  message: string
  details?: Record<string, unknown>
}

export function toWire(err: unknown, fallback: ErrCode = 'RT_ERR_HANDLER'): WireError {
  if (err && typeof err === 'object' && 'code' in err && isErrCode((err as { code: unknown }).code)) {
    const e = err as CodedError
    return e.details
      ? { code: e.code, message: e.message, details: e.details }
      : { code: e.code, message: e.message }
  }
  const message = err instanceof Error ? err.message : String(err)
  return { code: fallback, message: `${catalogue[fallback].message}: ${message}` }
}

/** Rebuild a coded error from its wire form (unknown codes become RT_ERR_HANDLER, keeping the text). */
export function fromWire(w: WireError): CodedError {
  const code = isErrCode(w.code) ? w.code : 'RT_ERR_HANDLER'
  const e = new CodedError(code, undefined, w.details)
  e.message = w.message
  return e
}
