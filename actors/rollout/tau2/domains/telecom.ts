/**
 * Telecom domain (SPEC §4.3), agent side: customers, lines, plans, bills, devices (db.toml); "today" is
 * 2025-02-25. The user side (the simulated phone) is in telecom-phone.ts; `sync` ties the two: line
 * status, roaming permission, data-usage exhaustion and payment requests flow between them.
 */
import { createHash } from 'node:crypto'
import { FloatRules, pyFloatRepr } from '../pyjson.ts'
import { type EnvFn, int, num, opt, p, str, type ToolDef, toolMap, transferTool } from '../tools.ts'
import type { DomainModule } from './domain.ts'
import { createPhone, type PhoneState } from './telecom-phone.ts'

type Obj = Record<string, any>
export interface TelecomDb {
  plans: Obj[]
  customers: Obj[]
  lines: Obj[]
  bills: Obj[]
  devices: Obj[]
}
interface S {
  db: TelecomDb
}

export const TODAY = '2025-02-25'
export const telecomFloats = new FloatRules([
  'data_limit_gb',
  'price_per_month',
  'data_refueling_price_per_gb',
  'data_used_gb',
  'data_refueling_gb',
  'total_due',
  'line_items.*.amount',
  'goodwill_credit_used_this_year',
  'charge',
  'new_data_refueling_gb',
])

const digits = (s: string) => s.replace(/\D/g, '')

const customerById = (s: S, id: string): Obj => {
  const c = s.db.customers.find((x) => x.customer_id === id)
  if (!c) throw new Error(`Customer with ID ${id} not found`)
  return c
}
const byId = (list: Obj[], key: string, id: string, what: string): Obj => {
  const x = list.find((o) => o[key] === id)
  if (!x) throw new Error(`${what} with ID ${id} not found`)
  return x
}
const lineById = (s: S, id: string) => byId(s.db.lines, 'line_id', id, 'Line')
const planById = (s: S, id: string) => byId(s.db.plans, 'plan_id', id, 'Plan')
const billById = (s: S, id: string) => byId(s.db.bills, 'bill_id', id, 'Bill')
const deviceById = (s: S, id: string) => byId(s.db.devices, 'device_id', id, 'Device')

function targetLine(s: S, customerId: string, lineId: string): Obj {
  const c = customerById(s, customerId)
  if (!(c.line_ids as string[]).includes(lineId))
    throw new Error(`Line ${lineId} not found for customer ${customerId}`)
  return lineById(s, lineId)
}

/** A new bill id: `B` + 8 hex. Upstream draws it at random; we derive it so replays agree. */
function newBillId(s: S, customerId: string): string {
  for (let n = s.db.bills.length; ; n++) {
    const id = `B${createHash('sha256').update(`${customerId}:${n}`).digest('hex').slice(0, 8)}`
    if (!s.db.bills.some((b) => b.bill_id === id)) return id
  }
}

/** Add a charge (or credit) to the customer's first Draft bill, creating next month's Draft if none. */
function applyOneTimeCharge(s: S, customerId: string, amount: number, description: string): void {
  const c = customerById(s, customerId)
  let draft = (c.bill_ids as string[]).map((id) => billById(s, id)).find((b) => b.status === 'Draft')
  if (!draft) {
    const id = newBillId(s, customerId)
    draft = {
      bill_id: id,
      customer_id: customerId,
      period_start: '2025-03-01',
      period_end: '2025-03-31',
      issue_date: '2025-03-01',
      total_due: 0,
      due_date: '2025-03-15',
      line_items: [],
      status: 'Draft',
    }
    s.db.bills.push(draft)
    c.bill_ids.push(id)
  }
  draft.line_items.push({ description, amount, date: TODAY, item_type: amount < 0 ? 'Credit' : 'Charge' })
  draft.total_due += amount
}

const CUSTOMER_ID = p(str('ID of the customer who owns the line.'))
const _LINE_ID = p(str('ID of the line.'))

const tools: ToolDef<S>[] = [
  {
    name: 'get_customer_by_phone',
    kind: 'read',
    description: 'Finds a customer by their primary contact or line phone number.',
    params: { phone_number: p(str('The phone number to search for.')) },
    run: (s, a) => {
      const want = digits(a.phone_number as string)
      if (want)
        for (const c of s.db.customers) {
          if (digits(c.phone_number) === want) return c
          for (const lid of c.line_ids as string[]) {
            const l = s.db.lines.find((x) => x.line_id === lid)
            if (l && digits(l.phone_number) === want) return c
          }
        }
      throw new Error(`Customer with phone number ${a.phone_number} not found`)
    },
  },
  {
    name: 'get_customer_by_id',
    kind: 'read',
    description: 'Retrieves a customer directly by their unique ID.',
    params: { customer_id: p(str('The unique identifier of the customer.')) },
    run: (s, a) => customerById(s, a.customer_id as string),
  },
  {
    name: 'get_customer_by_name',
    kind: 'read',
    description:
      'Searches for customers by name and DOB. May return multiple matches if names are similar, DOB helps disambiguate.',
    params: {
      full_name: p(str('The full name of the customer.')),
      dob: p(str('Date of birth for verification, in the format YYYY-MM-DD.')),
    },
    run: (s, a) => {
      const n = (a.full_name as string).trim().toLowerCase()
      return s.db.customers.filter((c) => c.full_name.toLowerCase() === n && c.date_of_birth === a.dob)
    },
  },
  {
    name: 'get_details_by_id',
    kind: 'read',
    description:
      'Retrieves the details for a given ID. The ID must be a valid ID for a Customer, Line, Device, Bill, or Plan.',
    params: { id: p(str('The ID of the object to retrieve.')) },
    run: (s, a) => {
      const id = a.id as string
      if (id.startsWith('L')) return lineById(s, id)
      if (id.startsWith('D')) return deviceById(s, id)
      if (id.startsWith('B')) return billById(s, id)
      if (id.startsWith('C')) return customerById(s, id)
      if (id.startsWith('P')) return planById(s, id)
      throw new Error(`Unknown ID format or type: ${id}`)
    },
  },
  {
    name: 'suspend_line',
    kind: 'write',
    description:
      'Suspends a specific line (max 6 months). Checks: Line status must be Active. Logic: Sets line status to Suspended, records suspension_start_date.',
    params: {
      customer_id: CUSTOMER_ID,
      line_id: p(str('ID of the line to suspend.')),
      reason: p(str('Reason for suspension.')),
    },
    run: (s, a) => {
      const l = targetLine(s, a.customer_id as string, a.line_id as string)
      if (l.status !== 'Active') throw new Error('Line must be active to suspend')
      l.status = 'Suspended'
      l.suspension_start_date = TODAY
      return { message: 'Line suspended successfully. $5/month holding fee will apply.', line: l }
    },
  },
  {
    name: 'resume_line',
    kind: 'write',
    description:
      'Resumes a suspended line. Checks: Line status must be Suspended or Pending Activation. Logic: Sets line status to Active, clears suspension_start_date.',
    params: { customer_id: CUSTOMER_ID, line_id: p(str('ID of the line to resume.')) },
    run: (s, a) => {
      const l = targetLine(s, a.customer_id as string, a.line_id as string)
      if (l.status !== 'Suspended' && l.status !== 'Pending Activation')
        throw new Error('Line must be suspended to resume')
      l.status = 'Active'
      l.suspension_start_date = null
      return { message: 'Line resumed successfully', line: l }
    },
  },
  {
    name: 'get_bills_for_customer',
    kind: 'read',
    description: "Retrieves a list of the customer's bills, most recent first.",
    params: {
      customer_id: p(str('ID of the customer.')),
      limit: opt(int('Maximum number of bills to return.'), 12),
    },
    run: (s, a) => {
      const c = customerById(s, a.customer_id as string)
      const bills = (c.bill_ids as string[]).map((id) => billById(s, id))
      bills.sort((x, y) => (x.issue_date < y.issue_date ? 1 : x.issue_date > y.issue_date ? -1 : 0))
      return bills.slice(0, Math.max(0, a.limit as number))
    },
  },
  {
    name: 'send_payment_request',
    kind: 'write',
    description:
      'Sends a payment request to the customer for a specific bill. Checks: the bill belongs to the customer and no other bill is already awaiting payment. Logic: sets the bill status to Awaiting Payment. Warning: this does not check whether the bill is already paid; check the bill status first.',
    params: {
      customer_id: p(str('ID of the customer who owns the bill.')),
      bill_id: p(str('ID of the bill to send payment request for.')),
    },
    run: (s, a) => {
      const c = customerById(s, a.customer_id as string)
      const awaiting = (c.bill_ids as string[])
        .map((id) => billById(s, id))
        .filter((b) => b.status === 'Awaiting Payment')
      if (awaiting.length) throw new Error('A bill is already awaiting payment for this customer')
      if (!(c.bill_ids as string[]).includes(a.bill_id as string))
        throw new Error(`Bill ${a.bill_id} not found for customer ${a.customer_id}`)
      const b = billById(s, a.bill_id as string)
      b.status = 'Awaiting Payment'
      return `Payment request sent to the customer for bill ${b.bill_id}`
    },
  },
  {
    name: 'get_data_usage',
    kind: 'read',
    description:
      'Retrieves current billing cycle data usage for a line, including data refueling amount, data limit, and cycle end date.',
    params: { customer_id: CUSTOMER_ID, line_id: p(str('ID of the line to check usage for.')) },
    run: (s, a) => {
      const l = targetLine(s, a.customer_id as string, a.line_id as string)
      const plan = planById(s, l.plan_id)
      return {
        line_id: a.line_id,
        data_used_gb: l.data_used_gb,
        data_limit_gb: plan.data_limit_gb,
        data_refueling_gb: l.data_refueling_gb,
        cycle_end_date: '2025-02-28',
      }
    },
  },
  {
    name: 'enable_roaming',
    kind: 'write',
    description: 'Enables international roaming on a line.',
    params: { customer_id: CUSTOMER_ID, line_id: p(str('ID of the line to enable roaming for.')) },
    run: (s, a) => {
      const l = targetLine(s, a.customer_id as string, a.line_id as string)
      if (l.roaming_enabled) return 'Roaming was already enabled'
      l.roaming_enabled = true
      return 'Roaming enabled successfully'
    },
  },
  {
    name: 'disable_roaming',
    kind: 'write',
    description: 'Disables international roaming on a line.',
    params: { customer_id: CUSTOMER_ID, line_id: p(str('ID of the line to disable roaming for.')) },
    run: (s, a) => {
      const l = targetLine(s, a.customer_id as string, a.line_id as string)
      if (!l.roaming_enabled) return 'Roaming was already disabled'
      l.roaming_enabled = false
      return 'Roaming disabled successfully'
    },
  },
  transferTool<S>(
    "Transfer the user to a human agent, with a summary of the user's issue. Only transfer if\n -  the user explicitly asks for a human agent\n -  given the policy and the available tools, you cannot solve the user's issue.",
  ),
  {
    name: 'refuel_data',
    kind: 'write',
    description:
      "Refuels data for a specific line, adding to the customer's bill. Checks: Customer owns the line. Logic: Adds data to the line and charges customer based on the plan's refueling rate.",
    params: {
      customer_id: CUSTOMER_ID,
      line_id: p(str('ID of the line to refuel data for.')),
      gb_amount: p(num('Amount of data to add in gigabytes.')),
    },
    run: (s, a) => {
      const l = targetLine(s, a.customer_id as string, a.line_id as string)
      const gb = a.gb_amount as number
      if (gb <= 0) throw new Error('Refuel amount must be positive')
      const plan = planById(s, l.plan_id)
      const charge = gb * plan.data_refueling_price_per_gb
      l.data_refueling_gb += gb
      applyOneTimeCharge(
        s,
        a.customer_id as string,
        charge,
        `Data refueling: ${pyFloatRepr(gb)} GB at $${pyFloatRepr(plan.data_refueling_price_per_gb)}/GB`,
      )
      return {
        message: `Successfully added ${pyFloatRepr(gb)} GB of data for line ${a.line_id} for $${charge.toFixed(2)}`,
        new_data_refueling_gb: l.data_refueling_gb,
        charge,
      }
    },
  },
]

const envFns: Record<string, EnvFn<S>> = {
  set_data_usage: (s, a) => {
    const l = targetLine(s, a.customer_id as string, a.line_id as string)
    l.data_used_gb = a.data_used_gb
    return `Data usage set to ${pyFloatRepr(a.data_used_gb as number)} GB for line ${a.line_id}`
  },
  suspend_line_for_overdue_bill: (s, a) => {
    const l = lineById(s, a.line_id as string)
    if (l.status !== 'Active') throw new Error('Line must be active to suspend for unpaid bill')
    const amount = planById(s, l.plan_id).price_per_month
    if (amount <= 0) throw new Error('Amount must be positive for overdue bill')
    const c = customerById(s, a.customer_id as string)
    if ((c.bill_ids as string[]).some((id) => billById(s, id).status === 'Overdue'))
      throw new Error('Customer already has an overdue bill')
    const id = a.new_bill_id as string
    s.db.bills.push({
      bill_id: id,
      customer_id: a.customer_id,
      period_start: '2025-01-01',
      period_end: '2025-01-31',
      issue_date: '2025-01-01',
      total_due: amount,
      due_date: '2025-01-15',
      line_items: [{ description: `Charge for line ${l.line_id}`, amount, date: TODAY, item_type: 'Charge' }],
      status: 'Overdue',
    })
    c.bill_ids.push(id)
    l.status = 'Suspended'
    l.suspension_start_date = TODAY
    if (a.contract_ended) l.contract_end_date = '2025-01-31'
    return `Line ${a.line_id} suspended for unpaid bill ${id}. Contract ended: ${a.contract_ended ? 'True' : 'False'}`
  },
  assert_data_refueling_amount: (s, a) =>
    Math.abs(
      targetLine(s, a.customer_id as string, a.line_id as string).data_refueling_gb -
        (a.expected_amount as number),
    ) < 1e-6,
  assert_line_status: (s, a) =>
    targetLine(s, a.customer_id as string, a.line_id as string).status === a.expected_status,
  assert_overdue_bill_exists: (s, a) => {
    const c = customerById(s, a.customer_id as string)
    const id = a.overdue_bill_id as string
    if (!(c.bill_ids as string[]).includes(id)) throw new Error(`Overdue bill ${id} not found`)
    if (billById(s, id).status !== 'Overdue') throw new Error(`Overdue bill ${id} is not overdue`)
    return true
  },
  assert_no_overdue_bill: (s, a) => {
    const b = s.db.bills.find((x) => x.bill_id === a.overdue_bill_id)
    return !b || b.status === 'Paid'
  },
}

const DATETIME_FIELDS: Record<string, string[]> = {
  customers: ['created_at'],
  devices: ['activation_date', 'last_esim_transfer_date'],
}
const OPTIONAL_FIELDS: Record<string, string[]> = {
  customers: ['last_extension_date'],
  lines: [
    'device_id',
    'contract_end_date',
    'last_plan_change_date',
    'last_sim_replacement_date',
    'suspension_start_date',
  ],
  devices: ['imei', 'activation_date', 'last_esim_transfer_date'],
}

/** model_dump shape: optional fields present as null, datetimes as Python `str(datetime)`. */
function normalize(db: Record<string, any>): Record<string, unknown> {
  for (const [table, keys] of Object.entries(OPTIONAL_FIELDS))
    for (const row of (db[table] ?? []) as Obj[]) for (const k of keys) if (!(k in row)) row[k] = null
  for (const [table, keys] of Object.entries(DATETIME_FIELDS))
    for (const row of (db[table] ?? []) as Obj[])
      for (const k of keys) if (typeof row[k] === 'string') row[k] = (row[k] as string).replace('T', ' ')
  for (const c of (db.customers ?? []) as Obj[]) if (!('payment_methods' in c)) c.payment_methods = []
  for (const b of (db.bills ?? []) as Obj[]) if (!('line_items' in b)) b.line_items = []
  return db
}

const toolsByName = toolMap(tools)

export const telecom: DomainModule = {
  name: 'telecom',
  soloSupported: true,
  create(data) {
    const state: S = { db: normalize(structuredClone(data.db)) as unknown as TelecomDb }
    const phone = createPhone(structuredClone(data.userDb ?? {}))
    /** sync_tools: propagate line and billing state to the phone, and payments back. */
    const sync = () => {
      const sur = (phone.state as PhoneState).db.surroundings
      if (!sur.phone_number) return
      const line = state.db.lines.find((l) => l.phone_number === sur.phone_number)
      if (!line) return
      sur.line_active = line.status === 'Active'
      sur.roaming_allowed = line.roaming_enabled
      const plan = state.db.plans.find((x) => x.plan_id === line.plan_id)
      if (plan)
        sur.mobile_data_usage_exceeded = line.data_used_gb >= plan.data_limit_gb + line.data_refueling_gb
      const customer = state.db.customers.find((c) => (c.line_ids as string[]).includes(line.line_id))
      if (sur.payment_request) {
        if (sur.payment_request.paid) {
          const b = state.db.bills.find((x) => x.bill_id === sur.payment_request?.bill_id)
          if (b) b.status = 'Paid'
          sur.payment_request = null
        }
      } else if (customer) {
        const b = (customer.bill_ids as string[])
          .map((id) => state.db.bills.find((x) => x.bill_id === id))
          .find((x) => x?.status === 'Awaiting Payment')
        if (b) sur.payment_request = { bill_id: b.bill_id, amount_due: b.total_due, paid: false }
      }
    }
    return {
      agent: {
        state,
        tools: toolsByName,
        envFns: new Map(Object.entries(envFns)),
        db: () => state.db as unknown as Record<string, unknown>,
        setDb: (db) => {
          state.db = normalize(db) as unknown as TelecomDb
        },
        floats: telecomFloats,
      },
      user: phone,
      sync,
    }
  },
}
