/**
 * Tiny models for engine and trainer tests: configs/models/qwen3-debug with overrides, written to a temp
 * directory (config.json only = random init from a seed; `save` adds weights). A larger init range than
 * HF's 0.02 makes a random model's greedy output vary instead of repeating its last input token.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const DEBUG = new URL('../../configs/models/qwen3-debug/config.json', import.meta.url).pathname

export function tempDir(prefix: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), `${prefix}-`))
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) }
}

/** A model directory holding only config.json (qwen3-debug + overrides). */
export function tinyModelDir(dir: string, overrides: Record<string, unknown> = {}): string {
  const cfg = { ...JSON.parse(readFileSync(DEBUG, 'utf8')), initializer_range: 0.5, ...overrides }
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg, null, 2))
  return dir
}

/** A small-vocabulary variant (fast; ids 510/511 are bos/eos). */
export const SMALL_VOCAB = { vocab_size: 512, bos_token_id: 510, eos_token_id: 511 }

/** Resolve at the first `event` of `emitter` whose argument satisfies `cond` (no polling, no sleeps). */
export function when<T>(
  emitter: { on(e: string, f: (x: T) => void): unknown; off(e: string, f: (x: T) => void): unknown },
  event: string,
  cond: (x: T) => boolean,
): Promise<T> {
  return new Promise((resolve) => {
    const on = (x: T) => {
      if (!cond(x)) return
      emitter.off(event, on)
      resolve(x)
    }
    emitter.on(event, on)
  })
}
