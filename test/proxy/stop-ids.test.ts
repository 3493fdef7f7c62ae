/**
 * Stop strings for engines that stop on token ids only (the embedded engine): a token whose text completes
 * the stop string becomes a stop id. Uses the project's quick-start tokenizer, whose whole tool calls are
 * single tokens ending in `</tool_call>`.
 */
import { expect } from 'chai'
import OpenAI from 'openai'
import { buildApp } from '../../actors/proxy/app.ts'
import { validate } from '../../actors/proxy/config.ts'
import { EmbeddedEngine } from '../../actors/proxy/engines/embedded.ts'
import type { Engine, GenerateRequest, GenerateResult } from '../../actors/proxy/engines/types.ts'
import { ProxyService } from '../../actors/proxy/service.ts'
import { ModelTokenizer } from '../../actors/tokenizer/tokenizer.ts'
import { Actor } from '../../runtime/actor.ts'
import { silentLogger } from '../../runtime/log.ts'

const DIR = new URL('../../configs/models/quickstart', import.meta.url).pathname
const tok = ModelTokenizer.fromDir(DIR)

/** An engine double that records what it was asked and answers with one whole-call token + eos. */
class RecordingEngine implements Engine {
  readonly name = 'recording'
  seen: GenerateRequest[] = []
  constructor(private readonly reply: number[]) {}
  async generate(req: GenerateRequest): Promise<GenerateResult> {
    this.seen.push(req)
    const ids = Int32Array.from(this.reply)
    return {
      outputIds: ids,
      logprobs: new Float32Array(ids.length).fill(-1),
      versions: new Int32Array(ids.length),
      finishReason: 'stop',
    }
  }
  async pause() {}
  async resume() {}
  async updateWeights() {}
  setVersion() {}
  async health() {
    return true
  }
  async close() {}
}

describe('stop strings as stop ids', () => {
  it('should find exactly the tokens whose text contains the stop string', () => {
    const ids = tok.idsCompleting('</tool_call>')
    const brute: number[] = []
    for (let id = 0; id < tok.vocabSize; id++) if (tok.decode([id]).includes('</tool_call>')) brute.push(id)
    expect(ids).to.deep.equal(brute)
    const call = '<tool_call>{"name": "toggle_light", "arguments": {"room": "kitchen"}}</tool_call>'
    const callIds = tok.encode(call)
    expect(callIds).to.have.length(1)
    expect(ids).to.include(callIds[0])
    expect(tok.idsCompleting('no such text anywhere')).to.deep.equal([])
  })

  describe('when an agent asks for a stop string', () => {
    it('should hand the engine the ids completing it (eos stays the only stop id for string-matching engines)', async () => {
      const call = tok.encode(
        '<tool_call>{"name": "toggle_light", "arguments": {"room": "kitchen"}}</tool_call>',
      )
      const engine = new RecordingEngine([...call, tok.eosTokenIds[0]!])
      const config = validate({
        model_dir: DIR,
        reasoning_parser: 'none',
        engines: [{ kind: 'sglang', url: 'http://127.0.0.1:1' }],
      })
      const service = new ProxyService(config, { log: silentLogger(), tokenizer: tok, engines: [engine] })
      const app = buildApp(service)
      await app.listen({ host: '127.0.0.1', port: 0 })
      try {
        service.setPublicUrl(`http://127.0.0.1:${(app.server.address() as { port: number }).port}`)
        const s = await service.openSession()
        const client = new OpenAI({ baseURL: s.baseUrl, apiKey: s.apiKey, maxRetries: 0 })
        await client.chat.completions.create({
          model: 'quickstart',
          messages: [{ role: 'user', content: 'Turn on the kitchen light.' }],
          stop: ['</tool_call>'],
        })
        const sent = engine.seen[0].sampling
        expect(sent.stopTokenIds).to.deep.equal([...tok.eosTokenIds])
        expect(sent.stopStringIds).to.deep.equal(tok.idsCompleting('</tool_call>'))
        expect(sent.stopStringIds).to.have.length.greaterThan(4)
        await client.chat.completions.create({
          model: 'quickstart',
          messages: [{ role: 'user', content: 'hi' }],
        })
        expect(engine.seen[1].sampling.stopStringIds).to.deep.equal([])
      } finally {
        await app.close()
        await service.close()
      }
    })
  })

  describe('when the engine is the embedded one', () => {
    it('should stop on the ids completing a stop string as well as on eos', async () => {
      const log = silentLogger()
      const seen: number[][] = []
      const engineActor = new Actor({ id: 'engine/rec', role: 'engine', log })
      engineActor.handle({
        'engine:generate': (b) => {
          seen.push([...b.sampling.stopTokenIds])
          return {
            outputIds: new Int32Array([1]),
            logprobs: new Float32Array([-1]),
            versions: new Int32Array([0]),
            finishReason: 'stop',
          }
        },
      })
      await engineActor.start()
      const client = new Actor({ id: 'proxy/rec', role: 'proxy', log, inbox: false })
      await client.start()
      try {
        const e = new EmbeddedEngine(client, engineActor.addr, 5000)
        const sampling = {
          maxNewTokens: 4,
          temperature: 1,
          topP: 1,
          stopTokenIds: [9],
          stop: ['x'],
          stopStringIds: [5, 6],
        }
        await e.generate({ inputIds: new Int32Array([1, 2]), sampling })
        await e.generate({ inputIds: new Int32Array([1, 2]), sampling: { ...sampling, stopStringIds: [] } })
        expect(seen).to.deep.equal([[9, 5, 6], [9]])
      } finally {
        await client.stop('done', 0)
        await engineActor.stop('done', 0)
      }
    })
  })
})
