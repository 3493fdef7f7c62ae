import { readFileSync } from 'node:fs'
import { expect } from 'chai'
import { runSchema } from '../../actors/config.ts'
import { busSchema } from '../../runtime/bus-config.ts'
import { describeSchema } from '../../runtime/config.ts'

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')

describe('config reference', () => {
  it('should document every key of the run config in a README table', () => {
    const keys = describeSchema(runSchema)
      .map((r) => r.key)
      .filter((k) => k !== 'econfig' && k !== 'proxy')
    const missing = keys.filter((k) => {
      // sections document their keys with or without the section prefix (`actor.` table rows are `ppo.eps_clip`)
      const short = k.replace(/^(bus|engine|actor)\./, '')
      return !readme.includes(`| \`${k}\` |`) && !readme.includes(`| \`${short}\` |`)
    })
    expect(missing, 'keys without a README row').to.deep.equal([])
  })

  it('should document every bus key', () => {
    for (const r of describeSchema(busSchema)) expect(readme, r.key).to.include(`| \`bus.${r.key}\` |`)
  })
})
