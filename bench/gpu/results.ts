/** bench/RESULTS.md: one table row per `npm run bench:gpu` run (created with its header when missing). */
import { appendFileSync, existsSync, writeFileSync } from 'node:fs'

export interface ResultRow {
  /** ISO date-time (UTC). */
  date: string
  card: string
  command: string
  tokS: number
  refTokS: number
  ratio: number
  mfu: number
  /** undefined on one GPU. */
  dpScaling?: number
  notes: string
}

const HEADER = `# Benchmark results

Rows appended by \`npm run bench:gpu\` (bench/gpu.ts): native PPO update (forward + backward + AdamW,
bf16 compute, fp32 master) against the PyTorch reference (bench/reference/ppo_ref.py: eager, FSDP2,
SDPA flash) run in the same call on the same card. tok_s and ref_tok_s are tokens/s per GPU; ratio =
tok_s / ref_tok_s; mfu is a fraction of 989 TFLOP/s (bench/gpu/mfu.ts); dp_scaling = tok_s per GPU at N
GPUs / tok_s at 1 GPU. Goals (issue 8): ratio ≥ 1.3, mfu ≥ 0.40, dp_scaling ≥ 0.90.

| date | card | command | tok_s | ref_tok_s | ratio | mfu | dp_scaling | notes |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
`

/** A markdown table cell: pipes escaped, one line. */
function cell(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\s*\n\s*/g, ' ')
}

export function formatRow(r: ResultRow): string {
  const cells = [
    r.date,
    r.card,
    `\`${r.command}\``,
    r.tokS.toFixed(0),
    r.refTokS.toFixed(0),
    r.ratio.toFixed(3),
    r.mfu.toFixed(4),
    r.dpScaling === undefined ? '—' : r.dpScaling.toFixed(3),
    r.notes,
  ]
  return `| ${cells.map(cell).join(' | ')} |\n`
}

/** Appends a row to `file`, writing the header first when the file does not exist. */
export function appendResult(file: string, r: ResultRow): void {
  if (!existsSync(file)) writeFileSync(file, HEADER)
  appendFileSync(file, formatRow(r))
}
