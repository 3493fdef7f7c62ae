/** Bus settings shared by every actor (`bus:` in the YAML config). */
export interface BusConfig {
  /** inbox bind endpoint; port `*` = ephemeral (tcp://127.0.0.1:*; use tcp://0.0.0.0:* across nodes) */
  bind: string
  /** ZeroMQ send high-water mark (messages queued per peer before send waits) */
  sendHighWaterMark: number
  /** ZeroMQ receive high-water mark */
  receiveHighWaterMark: number
  /** a send waiting on a full high-water mark fails with RT_ERR_SEND after this long */
  sendTimeoutMs: number
  /** default ask timeout */
  askTimeoutMs: number
  /** frames larger than this (all frames of one message together) are rejected, RT_ERR_OVERSIZE */
  maxFrameBytes: number
  /** handlers running at once per actor; beyond it the inbox stops reading (backpressure) */
  maxInflight: number
  /** heartbeat interval the controller hands to registering actors */
  heartbeatMs: number
  /** an actor silent this long is declared dead */
  deadlineMs: number
}

export const busDefaults: BusConfig = {
  bind: 'tcp://127.0.0.1:*',
  sendHighWaterMark: 10000,
  receiveHighWaterMark: 10000,
  sendTimeoutMs: 10000,
  askTimeoutMs: 30000,
  maxFrameBytes: 1 << 30,
  maxInflight: 1024,
  heartbeatMs: 1000,
  deadlineMs: 15000,
}

import { type ConfigOf, c } from './config.ts'

/** `bus:` in YAML (snake_case, as every config section). */
export const busSchema = c.obj({
  bind: c.str(busDefaults.bind, {
    doc: 'inbox bind endpoint; `*` port = ephemeral; tcp://0.0.0.0:* across nodes',
  }),
  send_high_water_mark: c.int(busDefaults.sendHighWaterMark, {
    min: 1,
    doc: 'messages queued per peer before send waits',
  }),
  receive_high_water_mark: c.int(busDefaults.receiveHighWaterMark, {
    min: 1,
    doc: 'messages queued on receive',
  }),
  send_timeout_ms: c.int(busDefaults.sendTimeoutMs, {
    min: 0,
    doc: 'a send blocked this long fails (RT_ERR_SEND)',
  }),
  ask_timeout_ms: c.int(busDefaults.askTimeoutMs, { min: 1, doc: 'default ask timeout' }),
  max_frame_bytes: c.int(busDefaults.maxFrameBytes, {
    min: 1024,
    doc: 'larger messages are rejected (RT_ERR_OVERSIZE)',
  }),
  max_inflight: c.int(busDefaults.maxInflight, {
    min: 1,
    doc: 'handlers running at once per actor (backpressure)',
  }),
  heartbeat_ms: c.int(busDefaults.heartbeatMs, { min: 10, doc: 'actor heartbeat interval' }),
  deadline_ms: c.int(busDefaults.deadlineMs, {
    min: 20,
    doc: 'an actor silent this long is declared dead (a crashed process is seen at once by its supervisor)',
  }),
})

export function toBusConfig(s: ConfigOf<typeof busSchema>): BusConfig {
  return {
    bind: s.bind,
    sendHighWaterMark: s.send_high_water_mark,
    receiveHighWaterMark: s.receive_high_water_mark,
    sendTimeoutMs: s.send_timeout_ms,
    askTimeoutMs: s.ask_timeout_ms,
    maxFrameBytes: s.max_frame_bytes,
    maxInflight: s.max_inflight,
    heartbeatMs: s.heartbeat_ms,
    deadlineMs: s.deadline_ms,
  }
}
