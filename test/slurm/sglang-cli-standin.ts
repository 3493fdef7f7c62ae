/**
 * A STAND-IN for SGLang's server CLI (test fixture; SGLang cannot run here): accepts exactly the command
 * line the launcher generates — `python3 -m sglang.launch_server --model-path M --host H --port P
 * --tp-size T [--pp-size N] --random-seed S` — refuses anything else as argparse would (exit 2), and
 * serves the SGLang HTTP stand-in of test/fixtures/proxy (documented native API) on H:P, with M's
 * tokenizer. Run through test/slurm/python-standin (set as scheduler.servers.python).
 */
import { readFileSync } from 'node:fs'
import { connect, createServer } from 'node:net'
import { join } from 'node:path'
import { ModelTokenizer } from '../../actors/tokenizer/tokenizer.ts'
import type { HfQwen3Config } from '../../native/index.ts'
import { startSglangStandin } from '../fixtures/proxy/sglang-standin.ts'

const argv = process.argv.slice(2)
const usage = (why: string): never => {
  process.stderr.write(`launch_server.py: error: ${why}\n`)
  process.exit(2)
}
if (argv[0] !== '-m' || argv[1] !== 'sglang.launch_server')
  usage(`expected -m sglang.launch_server, got ${argv.slice(0, 2).join(' ')}`)
const known = new Set(['--model-path', '--host', '--port', '--tp-size', '--pp-size', '--random-seed'])
const opts: Record<string, string> = {}
for (let i = 2; i < argv.length; i += 2) {
  if (!known.has(argv[i])) usage(`unrecognized arguments: ${argv[i]}`)
  if (argv[i + 1] === undefined) usage(`argument ${argv[i]}: expected one argument`)
  opts[argv[i]] = argv[i + 1]
}
for (const k of ['--model-path', '--port']) if (!opts[k]) usage(`the following arguments are required: ${k}`)
process.stderr.write(`sglang stand-in: ${argv.join(' ')}\n`)

// the model directory's config.json gives the stand-in native weights of that shape (seeded by
// --random-seed), so the weight-update-group endpoints (publish_mode broadcast) work too
const config = JSON.parse(readFileSync(join(opts['--model-path']!, 'config.json'), 'utf8')) as HfQwen3Config
const standin = await startSglangStandin(ModelTokenizer.fromDir(opts['--model-path']), {
  weights: { config, seed: Number(opts['--random-seed'] ?? 0) },
})
const upstream = Number(new URL(standin.url).port)
// serve on the requested host:port by forwarding to the stand-in's own port
const front = createServer((c) => {
  const s = connect(upstream, '127.0.0.1')
  c.pipe(s)
  s.pipe(c)
  c.on('error', () => s.destroy())
  s.on('error', () => c.destroy())
})
front.listen(Number(opts['--port']), opts['--host'] ?? '127.0.0.1')
const stop = () => {
  front.close()
  standin.close().finally(() => process.exit(0))
}
process.once('SIGTERM', stop)
process.once('SIGINT', stop)
