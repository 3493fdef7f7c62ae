/** The domain registry. */
import { fail } from '../../../../runtime/errors.ts'
import { airline } from './airline.ts'
import type { DomainModule } from './domain.ts'
import { home } from './home.ts'
import { mock } from './mock.ts'
import { retail } from './retail.ts'
import { telecom } from './telecom.ts'

export type { DomainInstance, DomainModule } from './domain.ts'

const registry: Record<string, DomainModule> = { airline, retail, telecom, mock, home }

export function domainModule(name: string): DomainModule {
  const m = registry[name]
  if (!m)
    throw fail('ENV_ERR_UNKNOWN_DOMAIN', `${name} (known: ${Object.keys(registry).join(', ')})`, {
      domain: name,
    })
  return m
}
