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
