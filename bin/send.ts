/**
 * bin/send [--job JOB] TARGET TYPE [BODY_JSON] [--tell] [--timeout MS] — send one message and print the
 * reply as JSON. TARGET: an actor id ('rollout/0') or an inbox address. Examples:
 *   bin/send controller sys:stats
 *   bin/send rollout/0 test:echo '{"data":"hi"}'
 *   bin/send --tell worker/1 sys:stop '{"reason":"manual"}'
 */
import { hostname } from 'node:os'
import { parseArgs } from 'node:util'
import { Actor } from '../runtime/actor.ts'
import { fail } from '../runtime/errors.ts'
import { resolveJob } from '../runtime/job.ts'
import { createLogger } from '../runtime/log.ts'
import { type AskType, isAsk, isTell, type TellType } from '../runtime/messages.ts'

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    job: { type: 'string' },
    tell: { type: 'boolean' },
    timeout: { type: 'string', default: '10000' },
  },
})
let client: Actor | undefined

function toJson(v: unknown): string {
  return JSON.stringify(v, (_k, x) =>
    ArrayBuffer.isView(x) && !(x instanceof DataView)
      ? Array.from(x as unknown as ArrayLike<number>)
      : typeof x === 'bigint'
        ? String(x)
        : x,
  )
}

async function run(): Promise<void> {
  const [target, type, bodyText] = positionals
  if (!target || !type)
    throw fail('CFG_ERR_OVERRIDE', 'usage: bin/send [--job JOB] TARGET TYPE [BODY_JSON] [--tell]')
  let body: unknown = {}
  if (bodyText) {
    try {
      body = JSON.parse(bodyText)
    } catch (e) {
      throw fail('RT_ERR_SHAPE', `body is not JSON: ${(e as Error).message}`)
    }
  }
  const ctl = resolveJob(values.job)
  client = new Actor({
    id: `send/${hostname()}/${process.pid}`,
    role: 'cli',
    inbox: false,
    controller: undefined,
    log: createLogger({ level: 'error' }),
  })
  await client.start()
  let addr = target
  if (!/^(tcp|ipc|inproc):\/\//.test(target)) {
    const { entries } = await client.ask(ctl, 'dir:lookup', { id: target })
    if (!entries[0]) throw fail('RT_ERR_NO_ACTOR', target)
    if (entries[0].state === 'dead') throw fail('RT_ERR_PEER_DEAD', target)
    addr = entries[0].addr
  }
  if (values.tell) {
    if (!isTell(type)) throw fail('RT_ERR_UNKNOWN_TYPE', `${type} is not a tell type`)
    await client.tell(addr, type as TellType, body as never)
    process.stdout.write('sent\n')
    return
  }
  if (!isAsk(type))
    throw fail('RT_ERR_UNKNOWN_TYPE', `${type} is not an ask type${isTell(type) ? ' (use --tell)' : ''}`)
  const res = await client.ask(addr, type as AskType, body as never, { timeoutMs: Number(values.timeout) })
  process.stdout.write(`${toJson(res)}\n`)
}

try {
  await run()
} catch (e) {
  const err = e as { code?: string; message: string; hint?: string }
  process.stderr.write(`send: ${err.code ?? 'error'}: ${err.message}${err.hint ? ` → ${err.hint}` : ''}\n`)
  process.exitCode = 1
} finally {
  await client?.stop('done', 0)
}
