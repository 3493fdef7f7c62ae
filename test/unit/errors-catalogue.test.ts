import { readFileSync } from 'node:fs'
import { expect } from 'chai'
import { CodedError, catalogue, fail, fromWire, toWire } from '../../runtime/errors.ts'

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
// rows of the README's "Error codes" table: | `CODE` | status | meaning |
const documented = new Set([...readme.matchAll(/^\|\s*`([A-Z]+_ERR_[A-Z0-9_]+)`\s*\|/gm)].map((m) => m[1]))

describe('error catalogue', () => {
  it('should document every code in the README table', () => {
    const missing = Object.keys(catalogue).filter((c) => !documented.has(c))
    expect(missing, 'codes missing from README "Error codes"').to.deep.equal([])
  })

  it('should not document codes that do not exist', () => {
    const stale = [...documented].filter((c) => !Object.hasOwn(catalogue, c))
    expect(stale, 'README rows without a catalogue entry').to.deep.equal([])
  })

  it('should give every code a status, message and hint', () => {
    for (const [code, def] of Object.entries(catalogue)) {
      expect(code).to.match(/^[A-Z]+_ERR_[A-Z0-9_]+$/)
      expect(def.status, code).to.be.within(400, 599)
      expect(def.message.length, code).to.be.greaterThan(3)
      expect(def.hint.length, code).to.be.greaterThan(3)
    }
  })

  it('should round-trip a coded error through its wire form', () => {
    const e = fail('CFG_ERR_TYPE', 'rollout.n: expected integer, got "x"', { key: 'rollout.n' })
    const back = fromWire(toWire(e))
    expect(back).to.be.instanceOf(CodedError)
    expect(back.code).to.equal('CFG_ERR_TYPE')
    expect(back.message).to.equal(e.message)
    expect(back.details).to.deep.equal({ key: 'rollout.n' })
  })

  it('should wrap a plain error under the fallback code', () => {
    const w = toWire(new Error('boom'))
    expect(w.code).to.equal('RT_ERR_HANDLER')
    expect(w.message).to.contain('boom')
  })
})
