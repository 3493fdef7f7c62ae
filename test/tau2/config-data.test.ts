import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import { dataDirOf, defaults, validate } from '../../actors/rollout/tau2/config.ts'
import { loadDomainData, loadTask, loadTasks, resolveLayout } from '../../actors/rollout/tau2/data.ts'
import { FloatRules, pyDumps, pyFloatRepr, pyReprStrList, pyRound } from '../../actors/rollout/tau2/pyjson.ts'
import { renderUserScenario } from '../../actors/rollout/tau2/types.ts'
import { DATA_DIR } from './helpers.ts'

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    return (err as { code?: string }).code
  }
  return undefined
}
function messageOf(fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    return (err as Error).message
  }
  return ''
}

describe('tau2 econfig', () => {
  describe('when the section is valid', () => {
    it('should fill defaults and keep given values', () => {
      const c = validate({ domain: 'telecom', max_steps: 30, solo_mode: true })
      expect(c.domain).to.equal('telecom')
      expect(c.max_steps).to.equal(30)
      expect(c.max_errors).to.equal(defaults.max_errors)
      expect(validate(undefined)).to.deep.equal(defaults)
    })
  })

  describe('when the section is invalid', () => {
    it('should name the key path and the bad value', () => {
      expect(messageOf(() => validate({ max_steps: 'x' }))).to.contain(
        'econfig.max_steps: expected positive integer, got "x"',
      )
      expect(codeOf(() => validate({ max_steps: 'x' }))).to.equal('CFG_ERR_TYPE')
      expect(codeOf(() => validate({ max_steps: 0 }))).to.equal('CFG_ERR_VALUE')
      expect(codeOf(() => validate({ domain: 'bank' }))).to.equal('CFG_ERR_VALUE')
      expect(codeOf(() => validate({ max_step: 3 }))).to.equal('CFG_ERR_UNKNOWN_KEY')
      expect(messageOf(() => validate({ max_step: 3 }))).to.contain('econfig.max_step')
      expect(codeOf(() => validate({ user_llm_args: [] }))).to.equal('CFG_ERR_TYPE')
      expect(codeOf(() => validate({ turn_discount: 1.5 }))).to.equal('CFG_ERR_VALUE')
      expect(codeOf(() => validate({ domain: 'retail', solo_mode: true }))).to.equal('CFG_ERR_VALUE')
      expect(codeOf(() => validate('x'))).to.equal('CFG_ERR_TYPE')
    })

    it('should refuse an empty data_dir when TAU2_DATA_DIR is unset', () => {
      const saved = process.env.TAU2_DATA_DIR
      delete process.env.TAU2_DATA_DIR
      try {
        expect(codeOf(() => dataDirOf({ data_dir: '' }))).to.equal('ENV_ERR_DATA_DIR')
        expect(dataDirOf({ data_dir: '/x' })).to.equal('/x')
      } finally {
        if (saved !== undefined) process.env.TAU2_DATA_DIR = saved
      }
    })
  })
})

describe('tau2 data directory', () => {
  describe('when laid out flat (<dir>/<domain>/)', () => {
    it('should load splits, the full task file and single tasks', () => {
      expect(loadTasks(DATA_DIR, 'airline', 'train')).to.have.length(30)
      expect(loadTasks(DATA_DIR, 'airline', 'test')).to.have.length(20)
      expect(loadTasks(DATA_DIR, 'retail', 'train')).to.have.length(74)
      expect(loadTasks(DATA_DIR, 'telecom', 'base')).to.have.length(114)
      expect(loadTasks(DATA_DIR, 'telecom', 'small')).to.have.length(20)
      expect(loadTasks(DATA_DIR, 'mock', 'all')).to.have.length(10)
      expect(loadTask(DATA_DIR, 'retail', '7').id).to.equal('7')
    })

    it('should fail with coded errors for unknown domains, splits, tasks and missing data', () => {
      expect(codeOf(() => loadTasks(DATA_DIR, 'bank', 'all'))).to.equal('ENV_ERR_UNKNOWN_DOMAIN')
      expect(codeOf(() => loadTasks(DATA_DIR, 'retail', 'nope'))).to.equal('ENV_ERR_UNKNOWN_SPLIT')
      // the shared copy lacks tasks_full.json: the full split cannot be served
      expect(messageOf(() => loadTasks(DATA_DIR, 'telecom', 'full'))).to.match(/names \d+ task ids absent/)
      expect(codeOf(() => loadTask(DATA_DIR, 'retail', 'x'))).to.equal('ENV_ERR_UNKNOWN_TASK')
      expect(codeOf(() => resolveLayout('/nonexistent/tau2'))).to.equal('ENV_ERR_DATA_DIR')
    })

    it('should compose the telecom policy from the main policy and the manual', () => {
      const d = loadDomainData(DATA_DIR, 'telecom')
      expect(d.policy.startsWith('<main_policy>\n')).to.equal(true)
      expect(d.policy).to.contain('</main_policy>\n<tech_support_policy>\n')
      expect(d.policySolo).to.be.a('string')
      expect(d.dbFile.endsWith('db.toml')).to.equal(true)
    })
  })

  describe('when laid out like tau2-bench (<dir>/domains/<domain>/)', () => {
    let root: string
    beforeEach(() => {
      root = mkdtempSync(join(tmpdir(), 'tau2-layout-'))
      mkdirSync(join(root, 'domains'))
      symlinkSync(join(DATA_DIR, 'mock'), join(root, 'domains', 'mock'))
      symlinkSync(join(DATA_DIR, 'user_simulator'), join(root, 'user_simulator'))
    })
    afterEach(() => rmSync(root, { recursive: true, force: true }))

    it('should detect the layout and load the domain', () => {
      expect(resolveLayout(root).domainsDir).to.equal(join(root, 'domains'))
      expect(loadTasks(root, 'mock', 'base')).to.have.length(10)
      expect(loadDomainData(root, 'mock').guidelines).to.contain('###STOP###')
    })
  })
})

describe('tau2 Python-compatible formatting', () => {
  it('should print floats like Python repr', () => {
    expect(pyFloatRepr(100)).to.equal('100.0')
    expect(pyFloatRepr(0.1 + 0.2)).to.equal('0.30000000000000004')
    expect(pyFloatRepr(1e-6)).to.equal('1e-06')
    expect(pyFloatRepr(1e16)).to.equal('1e+16')
    expect(pyFloatRepr(123456789012345.6)).to.equal('123456789012345.6')
    expect(pyFloatRepr(-0.5)).to.equal('-0.5')
  })

  it('should round half to even on exact ties only', () => {
    expect(pyRound(0.125, 2)).to.equal(0.12)
    expect(pyRound(0.375, 2)).to.equal(0.38)
    expect(pyRound(2.675, 2)).to.equal(2.67) // 2.675 is below the tie in binary
    expect(pyRound(54.045, 2)).to.equal(54.05)
    expect(pyRound(-1.005, 2)).to.equal(-1)
  })

  it('should dump with Python separators, ASCII escapes, sorted keys and typed floats', () => {
    const rules = new FloatRules(['payment_methods.*.amount'])
    const v = { b: 1, a: 'é"\n', payment_methods: { g: { amount: 5 } }, n: null, l: [1, 2.5] }
    expect(pyDumps(v, { sortKeys: true, floats: rules })).to.equal(
      '{"a": "\\u00e9\\"\\n", "b": 1, "l": [1, 2.5], "n": null, "payment_methods": {"g": {"amount": 5.0}}}',
    )
    expect(pyReprStrList(["it's", 'x'])).to.equal(`["it's", 'x']`)
  })

  it('should render a structured user scenario as tau2 does', () => {
    const text = renderUserScenario({
      persona: 'Calm',
      instructions: {
        domain: 'd',
        reason_for_call: 'r\nr2',
        known_info: 'k',
        unknown_info: null,
        task_instructions: 't',
      },
    })
    expect(text).to.equal(
      'Persona:\n\tCalm\nInstructions:\n\tDomain: d\n\tReason for call:\n\t\tr\n\t\tr2\n\tKnown info:\n\t\tk\n\tTask instructions:\n\t\tt',
    )
  })
})
