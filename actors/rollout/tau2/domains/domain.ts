/**
 * What a domain provides to the environment: a toolkit for the agent (and one for the user where the
 * domain has user tools), and `sync` — tau2's `sync_tools`, run after every tool call, init function
 * and orchestrator step, which propagates state between the agent DB and the user DB.
 */
import type { DomainData } from '../data.ts'
import type { Toolkit } from '../tools.ts'

export interface DomainInstance {
  agent: Toolkit<any>
  user: Toolkit<any> | undefined
  sync: () => void
}

export interface DomainModule {
  name: string
  soloSupported: boolean
  create: (data: DomainData, opts: { solo: boolean }) => DomainInstance
}
