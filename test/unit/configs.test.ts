import { readdirSync } from 'node:fs'
import { expect } from 'chai'
import { runSchema } from '../../actors/config.ts'
import { loadConfig } from '../../runtime/config.ts'

const dir = new URL('../../configs/', import.meta.url).pathname

describe('shipped configs', () => {
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.yaml') && n !== 'demo.yaml')) {
    it(`should validate configs/${f} against the run config schema`, () => {
      const cfg = loadConfig(runSchema, { file: `${dir}${f}` })
      expect(cfg.total_train_steps).to.be.greaterThan(0)
    })
  }

  it('should give the tau2 cluster configs the seed keys', () => {
    for (const d of ['airline', 'retail', 'telecom'] as const) {
      const cfg = loadConfig(runSchema, {
        file: `${dir}tau2-${d}.yaml`,
        overrides: ['econfig.data_dir=/data/tau2'],
      })
      expect(cfg.econfig.domain).to.equal(d)
      expect(cfg.scheduler.type).to.equal('slurm')
      expect(cfg.allocation_mode).to.equal('sglang:d4t2+archon:d4p1t2')
    }
  })
})
