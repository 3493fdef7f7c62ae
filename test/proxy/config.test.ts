import { expect } from 'chai'
import { defaults, validate } from '../../actors/proxy/config.ts'

function code(fn: () => unknown): { code: string; message: string } {
  try {
    fn()
  } catch (err) {
    return err as { code: string; message: string }
  }
  throw new Error('expected a throw')
}

describe('proxy config', () => {
  describe('when the section is valid', () => {
    it('should fill defaults and normalise engine URLs', () => {
      const c = validate({
        model_dir: '/m',
        engines: [{ kind: 'sglang', url: 'http://h:30000/' }],
        export: { style: 'concat' },
      })
      expect(c.port).to.equal(defaults.port)
      expect(c.export).to.deep.equal({ style: 'concat', turn_discount: 1 })
      expect(c.engines[0]!.url).to.equal('http://h:30000')
    })
  })

  describe('when the section is wrong', () => {
    it('should name the key path of unknown keys, wrong types, missing and out-of-range values', () => {
      const unknown = code(() =>
        validate({ model_dir: '/m', engines: [{ kind: 'sglang', url: 'http://h', nope: 1 }] }),
      )
      expect(unknown.code).to.equal('CFG_ERR_UNKNOWN_KEY')
      expect(unknown.message).to.contain('proxy.engines[0].nope')
      const type = code(() => validate({ model_dir: '/m', max_sessions: 'many' }))
      expect([type.code, type.message.includes('proxy.max_sessions')]).to.deep.equal(['CFG_ERR_TYPE', true])
      const missing = code(() => validate({ engines: [{ url: 'http://h' }] }))
      expect([missing.code, missing.message.includes('proxy.engines[0].kind')]).to.deep.equal([
        'CFG_ERR_MISSING',
        true,
      ])
      const url = code(() => validate({ model_dir: '/m', engines: [{ kind: 'vllm' }] }))
      expect([url.code, url.message.includes('proxy.engines[0].url')]).to.deep.equal([
        'CFG_ERR_MISSING',
        true,
      ])
      const range = code(() => validate({ model_dir: '/m', export: { turn_discount: 2 } }))
      expect([range.code, range.message.includes('proxy.export.turn_discount')]).to.deep.equal([
        'CFG_ERR_VALUE',
        true,
      ])
      const kind = code(() => validate({ model_dir: '/m', engines: [{ kind: 'tgi', url: 'http://h' }] }))
      expect(kind.code).to.equal('CFG_ERR_VALUE')
      // engines are spoken to in plain HTTP: a TLS URL is refused up front, not at the first completion
      const tls = code(() => validate({ model_dir: '/m', engines: [{ kind: 'sglang', url: 'https://h' }] }))
      expect([tls.code, tls.message.includes('proxy.engines[0].url')]).to.deep.equal(['CFG_ERR_VALUE', true])
    })
  })
})
