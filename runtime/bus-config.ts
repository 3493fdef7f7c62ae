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
  deadlineMs: 5000,
}
