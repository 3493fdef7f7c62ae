/**
 * Loading a tau2 data directory: tasks, splits, databases, policies, user-simulator guidelines.
 *
 * Two layouts are recognised (checked in this order):
 *   <dir>/<domain>/tasks.json            (flat copy, e.g. ../shared/tau2) + <dir>/user_simulator/
 *   <dir>/domains/<domain>/tasks.json    (tau2-bench `data/tau2`)         + <dir>/user_simulator/
 * and `<dir>/data/tau2/domains/…` when pointed at a tau2-bench checkout.
 * The agent database is `db.json`, `db.toml`, or `db.reconstructed.json` (the approximate airline
 * database of the shared copy); the user database `user_db.json` / `user_db.toml`.
 */
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse as parseToml } from 'smol-toml'
import { fail } from '../../../runtime/errors.ts'
import { DOMAINS, type Tau2Domain } from './config.ts'
import type { Task } from './types.ts'

export interface DataLayout {
  /** folder holding `<domain>/` folders */
  domainsDir: string
  /** folder holding the user simulator guidelines */
  userSimDir: string
}

/** Find the layout of a data directory (throws ENV_ERR_DATA_DIR naming what was tried). */
export function resolveLayout(dir: string): DataLayout {
  const candidates = [dir, join(dir, 'domains'), join(dir, 'data', 'tau2', 'domains')]
  for (const c of candidates) {
    if (DOMAINS.some((d) => existsSync(join(c, d, 'tasks.json')))) {
      const root = c === dir ? dir : join(c, '..')
      return { domainsDir: c, userSimDir: join(root, 'user_simulator') }
    }
  }
  throw fail('ENV_ERR_DATA_DIR', `${dir}: no <domain>/tasks.json under ${candidates.join(', ')}`, { dir })
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch (err) {
    throw fail('ENV_ERR_DATA_FILE', `${path}: ${(err as Error).message}`, { path }, err)
  }
}

function readData(path: string): unknown {
  const text = readText(path)
  try {
    return path.endsWith('.toml') ? parseToml(text) : JSON.parse(text)
  } catch (err) {
    throw fail('ENV_ERR_DATA_FILE', `${path}: ${(err as Error).message}`, { path }, err)
  }
}

function firstExisting(dir: string, names: string[]): string | undefined {
  for (const n of names) if (existsSync(join(dir, n))) return join(dir, n)
  return undefined
}

/** Everything one domain needs, parsed; databases are pristine (clone before mutating). */
export interface DomainData {
  domain: Tau2Domain
  dir: string
  db: Record<string, unknown>
  dbFile: string
  userDb: Record<string, unknown> | undefined
  policy: string
  /** solo-mode policy where the domain has one */
  policySolo: string | undefined
  /** user simulator guidelines: plain, and for domains with user tools */
  guidelines: string
  guidelinesTools: string
}

function asTasks(raw: unknown, path: string): Task[] {
  const list = Array.isArray(raw) ? raw : (raw as { tasks?: unknown })?.tasks
  if (!Array.isArray(list))
    throw fail('ENV_ERR_DATA_FILE', `${path}: expected a JSON array of tasks`, { path })
  for (const t of list)
    if (!t || typeof t !== 'object' || typeof (t as Task).id !== 'string' || !(t as Task).user_scenario)
      throw fail('ENV_ERR_DATA_FILE', `${path}: a task lacks id or user_scenario`, { path })
  return list as Task[]
}

function checkDomain(domain: string): Tau2Domain {
  if (!DOMAINS.includes(domain as Tau2Domain))
    throw fail('ENV_ERR_UNKNOWN_DOMAIN', `${domain} (known: ${DOMAINS.join(', ')})`, { domain })
  return domain as Tau2Domain
}

function domainDir(dataDir: string, domain: Tau2Domain): { dir: string; layout: DataLayout } {
  const layout = resolveLayout(dataDir)
  const dir = join(layout.domainsDir, domain)
  if (!existsSync(dir)) throw fail('ENV_ERR_DATA_DIR', `${dir}: domain folder missing`, { dir })
  return { dir, layout }
}

/** Load the databases, policy and guidelines of one domain. */
export function loadDomainData(dataDir: string, domainName: string): DomainData {
  const domain = checkDomain(domainName)
  const { dir, layout } = domainDir(dataDir, domain)
  const dbFile = firstExisting(dir, ['db.json', 'db.toml', 'db.reconstructed.json'])
  if (!dbFile)
    throw fail('ENV_ERR_DATA_FILE', `${dir}: no db.json, db.toml or db.reconstructed.json`, { dir })
  const userDbFile = firstExisting(dir, ['user_db.json', 'user_db.toml'])
  let policy: string
  let policySolo: string | undefined
  if (domain === 'telecom') {
    const main = readText(join(dir, 'main_policy.md'))
    const manual = readText(join(dir, 'tech_support_manual.md'))
    const wrap = (m: string, t: string) =>
      `<main_policy>\n${m}\n</main_policy>\n<tech_support_policy>\n${t}\n</tech_support_policy>`
    policy = wrap(main, manual)
    const soloMain = firstExisting(dir, ['main_policy_solo.md'])
    policySolo = soloMain ? wrap(readText(soloMain), manual) : undefined
  } else {
    policy = readText(join(dir, 'policy.md'))
    const solo = firstExisting(dir, ['policy_solo.md'])
    policySolo = solo ? readText(solo) : undefined
  }
  return {
    domain,
    dir,
    db: readData(dbFile) as Record<string, unknown>,
    dbFile,
    userDb: userDbFile ? (readData(userDbFile) as Record<string, unknown>) : undefined,
    policy,
    policySolo,
    guidelines: readText(join(layout.userSimDir, 'simulation_guidelines.md')),
    guidelinesTools: readText(join(layout.userSimDir, 'simulation_guidelines_tools.md')),
  }
}

/**
 * Tasks of one domain and split. `split` names a list in `split_tasks.json`; `all` returns every task in
 * tasks.json. Ids a split names that tasks.json lacks are looked up in `tasks_<split>.json`; if still
 * missing the split cannot be served (ENV_ERR_UNKNOWN_SPLIT says how many are absent).
 */
export function loadTasks(dataDir: string, domainName: string, split = 'all'): Task[] {
  const domain = checkDomain(domainName)
  const { dir } = domainDir(dataDir, domain)
  const tasksPath = join(dir, 'tasks.json')
  const tasks = asTasks(readData(tasksPath), tasksPath)
  if (split === 'all') return tasks
  const splitPath = join(dir, 'split_tasks.json')
  const splits = existsSync(splitPath) ? (readData(splitPath) as Record<string, unknown>) : {}
  const ids = splits[split]
  if (!Array.isArray(ids))
    throw fail(
      'ENV_ERR_UNKNOWN_SPLIT',
      `${domain}: no split "${split}" (known: all, ${Object.keys(splits).join(', ')})`,
      { domain, split },
    )
  const byId = new Map(tasks.map((t) => [t.id, t]))
  const extraPath = join(dir, `tasks_${split}.json`)
  if (ids.some((id) => !byId.has(id)) && existsSync(extraPath))
    for (const t of asTasks(readData(extraPath), extraPath)) if (!byId.has(t.id)) byId.set(t.id, t)
  const missing = ids.filter((id) => !byId.has(id))
  if (missing.length)
    throw fail(
      'ENV_ERR_UNKNOWN_SPLIT',
      `${domain}: split "${split}" names ${missing.length} task ids absent from ${dir} (e.g. ${missing[0]})`,
      { domain, split, missing: missing.length },
    )
  return ids.map((id) => byId.get(id) as Task)
}

/** One task by id (any split). */
export function loadTask(dataDir: string, domain: string, id: string): Task {
  const t = loadTasks(dataDir, domain, 'all').find((x) => x.id === id)
  if (!t) throw fail('ENV_ERR_UNKNOWN_TASK', `${domain}/${id}`, { domain, id })
  return t
}
