import { writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import { busSchema } from '../../runtime/bus-config.ts'
import { c, loadConfig, parseOverride } from '../../runtime/config.ts'
import { fail } from '../../runtime/errors.ts'

const schema = c.obj({
  experiment_name: c.str(),
  seed: c.int(1),
  bus: busSchema,
  rollout: c.obj({
    n: c.int(4, { min: 1 }),
    temperature: c.num(1.0, { min: 0 }),
    stop: c.list(c.str(), ['</s>']),
    ids: c.list(c.int(), []),
    async: c.bool(true),
    mode: c.enum(['individual', 'concat'], 'individual'),
    args: c.map(c.num(), {}),
    model: c.opt(c.str()),
  }),
  econfig: c.custom({ domain: 'airline' }, (raw, path) => {
    const r = raw as { domain?: unknown }
    if (typeof r.domain !== 'string') throw fail('CFG_ERR_TYPE', `${path}.domain: expected string`)
    return { domain: r.domain }
  }),
})

function err(fn: () => unknown): { code: string; message: string } {
  try {
    fn()
  } catch (e) {
    return e as { code: string; message: string }
  }
  throw new Error('did not throw')
}

describe('config', () => {
  describe('when only defaults and required values are given', () => {
    it('should fill every default', () => {
      const cfg = loadConfig(schema, { raw: { experiment_name: 'x' } })
      expect(cfg.rollout).to.deep.equal({
        n: 4,
        temperature: 1,
        stop: ['</s>'],
        ids: [],
        async: true,
        mode: 'individual',
        args: {},
        model: undefined,
      })
      expect(cfg.bus.heartbeat_ms).to.equal(1000)
      expect(cfg.econfig).to.deep.equal({ domain: 'airline' })
    })
  })

  describe('when a YAML file and overrides are given', () => {
    it('should merge defaults ← file ← overrides and type each override by the schema', () => {
      const file = join(tmpdir(), `cfg-${process.pid}.yaml`)
      writeFileSync(file, 'experiment_name: run\nrollout:\n  n: 2\n  stop: [a]\n')
      const cfg = loadConfig(schema, {
        file,
        overrides: [
          'rollout.n=8',
          'rollout.temperature=0.7',
          'rollout.async=false',
          'rollout.stop=[x, y]',
          'rollout.ids=1,2,3',
          'rollout.args.top_p=0.9',
          'rollout.model=qwen',
          'econfig.domain=telecom',
          'bus.heartbeat_ms=250',
        ],
      })
      expect(cfg.experiment_name).to.equal('run')
      expect(cfg.rollout.n).to.equal(8)
      expect(cfg.rollout.temperature).to.equal(0.7)
      expect(cfg.rollout.async).to.equal(false)
      expect(cfg.rollout.stop).to.deep.equal(['x', 'y'])
      expect(cfg.rollout.ids).to.deep.equal([1, 2, 3])
      expect(cfg.rollout.args).to.deep.equal({ top_p: 0.9 })
      expect(cfg.rollout.model).to.equal('qwen')
      expect(cfg.econfig.domain).to.equal('telecom')
      expect(cfg.bus.heartbeat_ms).to.equal(250)
    })
  })

  describe('when the input is wrong', () => {
    it('should reject an unknown key, naming its full path', () => {
      const e = err(() => loadConfig(schema, { raw: { experiment_name: 'x', rollout: { nn: 3 } } }))
      expect(e.code).to.equal('CFG_ERR_UNKNOWN_KEY')
      expect(e.message).to.contain('rollout.nn')
    })

    it('should reject an unknown key given as an override', () => {
      const e = err(() => loadConfig(schema, { raw: { experiment_name: 'x' }, overrides: ['rolout.n=3'] }))
      expect(e.code).to.equal('CFG_ERR_UNKNOWN_KEY')
      expect(e.message).to.contain('rolout')
      expect(e.message).to.contain('override')
    })

    it('should reject a wrong type naming path, value and expectation', () => {
      const e = err(() =>
        loadConfig(schema, { raw: { experiment_name: 'x' }, overrides: ['rollout.n=four'] }),
      )
      expect(e.code).to.equal('CFG_ERR_TYPE')
      expect(e.message).to.contain('rollout.n')
      expect(e.message).to.contain('"four"')
      expect(e.message).to.contain('integer')
      const e2 = err(() => loadConfig(schema, { raw: { experiment_name: 'x', rollout: { async: 'yes' } } }))
      expect(e2.code).to.equal('CFG_ERR_TYPE')
      expect(e2.message).to.contain('rollout.async')
      expect(e2.message).to.contain('boolean')
    })

    it('should reject values out of range and outside an enum', () => {
      expect(
        err(() => loadConfig(schema, { raw: { experiment_name: 'x' }, overrides: ['rollout.n=0'] })).code,
      ).to.equal('CFG_ERR_VALUE')
      const e = err(() =>
        loadConfig(schema, { raw: { experiment_name: 'x' }, overrides: ['rollout.mode=both'] }),
      )
      expect(e.code).to.equal('CFG_ERR_VALUE')
      expect(e.message).to.contain('individual|concat')
    })

    it('should reject a missing required value', () => {
      const e = err(() => loadConfig(schema, { raw: {} }))
      expect(e.code).to.equal('CFG_ERR_MISSING')
      expect(e.message).to.contain('experiment_name')
    })

    it('should reject a malformed override and a missing file', () => {
      expect(err(() => parseOverride('rollout.n')).code).to.equal('CFG_ERR_OVERRIDE')
      expect(err(() => parseOverride('=3')).code).to.equal('CFG_ERR_OVERRIDE')
      expect(err(() => loadConfig(schema, { file: '/nonexistent.yaml' })).code).to.equal('CFG_ERR_FILE')
    })

    it('should pass a custom section its own errors', () => {
      const e = err(() =>
        loadConfig(schema, { raw: { experiment_name: 'x' }, overrides: ['econfig.domain=3'] }),
      )
      expect(e.code).to.equal('CFG_ERR_TYPE')
      expect(e.message).to.contain('econfig.domain')
    })
  })
})
