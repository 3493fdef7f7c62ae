/**
 * The piscina task: one environment op on this thread's sessions (session.ts). Errors are returned as
 * their wire form, because an Error's `code` does not survive the thread boundary.
 */
import { threadId } from 'node:worker_threads'
import { toWire, type WireError } from '../../../runtime/errors.ts'
import { handleOp, type SessionOp, type SessionResult } from './session.ts'

export interface WorkerReply {
  threadId: number
  result?: SessionResult
  error?: WireError
}

export default function run(op: SessionOp): WorkerReply {
  if (op.op === 'crash' && op.how === 'exit') process.exit(1)
  try {
    return { threadId, result: handleOp(op) }
  } catch (err) {
    return { threadId, error: toWire(err, 'ENV_ERR_INIT') }
  }
}
