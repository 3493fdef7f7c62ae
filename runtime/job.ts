/**
 * Finding a running job. `bin/launch` (and `bin/demo`) write the controller's inbox address to
 * `<run dir>/controller.addr` and print it; tools take either the address, a run directory, or nothing
 * (then the newest run directory under ./runs that has a controller.addr).
 */
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fail } from './errors.ts'

export const ADDR_FILE = 'controller.addr'

export function writeJobAddress(runDir: string, addr: string): string {
  const f = join(runDir, ADDR_FILE)
  writeFileSync(f, `${addr}\n`)
  return f
}

function newestRun(root: string): string | undefined {
  let best: { dir: string; t: number } | undefined
  const walk = (dir: string, depth: number) => {
    if (depth > 3 || !existsSync(dir)) return
    const f = join(dir, ADDR_FILE)
    if (existsSync(f)) {
      const t = statSync(f).mtimeMs
      if (!best || t > best.t) best = { dir, t }
    }
    for (const e of readdirSync(dir, { withFileTypes: true }))
      if (e.isDirectory()) walk(join(dir, e.name), depth + 1)
  }
  walk(root, 0)
  return best?.dir
}

/** Resolve a job reference (address | run dir | undefined) to the controller address. */
export function resolveJob(ref: string | undefined, runsRoot = 'runs'): string {
  if (ref && /^(tcp|ipc|inproc):\/\//.test(ref)) return ref
  const dir = ref ?? newestRun(resolve(runsRoot))
  if (!dir)
    throw fail('RT_ERR_BAD_ADDRESS', `no job given and no run directory with ${ADDR_FILE} under ${runsRoot}/`)
  const f = join(dir, ADDR_FILE)
  if (!existsSync(f)) throw fail('RT_ERR_BAD_ADDRESS', `${dir} has no ${ADDR_FILE}`)
  const addr = readFileSync(f, 'utf8').trim()
  if (!/^(tcp|ipc):\/\//.test(addr)) throw fail('RT_ERR_BAD_ADDRESS', `${f} holds ${JSON.stringify(addr)}`)
  return addr
}
