import { expect } from 'chai'
import { type DomainData, loadDomainData } from '../../actors/rollout/tau2/data.ts'
import { Environment } from '../../actors/rollout/tau2/environment.ts'
import type { Requestor } from '../../actors/rollout/tau2/types.ts'
import { DATA_DIR } from './helpers.ts'

const cache = new Map<string, DomainData>()
function env(domain: string, solo = false): Environment {
  let d = cache.get(domain)
  if (!d) cache.set(domain, (d = loadDomainData(DATA_DIR, domain)))
  return new Environment(d, { solo })
}
function call(
  e: Environment,
  name: string,
  args: Record<string, unknown>,
  requestor: Requestor = 'assistant',
) {
  return e.getResponse({ id: 'c1', name, arguments: args, requestor })
}

type Case = [tool: string, args: Record<string, unknown>, error: string]

const ERROR_CASES: Record<string, Case[]> = {
  airline: [
    ['get_user_details', { user_id: 'nobody_1' }, 'Error: User nobody_1 not found'],
    ['get_reservation_details', { reservation_id: 'XXXXXX' }, 'Error: Reservation XXXXXX not found'],
    ['get_flight_status', { flight_number: 'HAT999', date: '2024-05-01' }, 'Error: Flight HAT999 not found'],
    [
      'get_flight_status',
      { flight_number: 'HAT001', date: '2024-06-01' },
      'Error: Flight HAT001 not found on date 2024-06-01',
    ],
    ['calculate', { expression: '2 + x' }, 'Error: Invalid characters in expression'],
    ['calculate', { expression: '1 / 0' }, 'Error: division by zero'],
    [
      'update_reservation_passengers',
      { reservation_id: '4WQ150', passengers: [] },
      'Error: Number of passengers does not match',
    ],
    [
      'book_reservation',
      {
        user_id: 'mia_li_3668',
        origin: 'PHL',
        destination: 'LGA',
        flight_type: 'one_way',
        cabin: 'economy',
        flights: [{ flight_number: 'HAT001', date: '2024-05-03' }],
        passengers: [{ first_name: 'Mia', last_name: 'Li', dob: '1990-04-05' }],
        payment_methods: [{ payment_id: 'credit_card_4421486', amount: 1 }],
        total_baggages: 0,
        nonfree_baggages: 0,
        insurance: 'no',
      },
      'Error: Flight HAT001 not available on date 2024-05-03',
    ],
    [
      'update_reservation_baggages',
      { reservation_id: '4WQ150', total_baggages: 6, nonfree_baggages: 1, payment_id: 'credit_card_0' },
      'Error: Payment method not found',
    ],
    [
      'get_user_details',
      { user_id: 'mia_li_3668', extra: 1 },
      "Error: get_user_details() got an unexpected keyword argument 'extra'",
    ],
    ['get_user_details', {}, "Error: get_user_details() missing 1 required positional argument: 'user_id'"],
    ['no_such_tool', {}, "Error: Tool 'no_such_tool' not found."],
  ],
  retail: [
    ['find_user_id_by_email', { email: 'nobody@example.com' }, 'Error: User not found'],
    ['get_order_details', { order_id: '#W0000000' }, 'Error: Order not found'],
    ['get_product_details', { product_id: '1' }, 'Error: Product not found'],
    ['get_item_details', { item_id: '1' }, 'Error: Item not found'],
    [
      'cancel_pending_order',
      { order_id: '#W2611340', reason: 'no longer needed' },
      'Error: Non-pending order cannot be cancelled',
    ],
    [
      'return_delivered_order_items',
      { order_id: '#W2611340', item_ids: ['6469567736'], payment_method_id: 'gift_card_1725971' },
      'Error: Non-delivered order cannot be returned',
    ],
    [
      'exchange_delivered_order_items',
      {
        order_id: '#W2611340',
        item_ids: ['6469567736'],
        new_item_ids: ['6469567736'],
        payment_method_id: 'gift_card_1725971',
      },
      'Error: Non-delivered order cannot be exchanged',
    ],
    ['calculate', { expression: 'import os' }, 'Error: Invalid characters in expression'],
  ],
  telecom: [
    ['get_customer_by_phone', { phone_number: '000' }, 'Error: Customer with phone number 000 not found'],
    ['get_customer_by_id', { customer_id: 'C9' }, 'Error: Customer with ID C9 not found'],
    ['get_details_by_id', { id: 'X1' }, 'Error: Unknown ID format or type: X1'],
    ['get_details_by_id', { id: 'L9999' }, 'Error: Line with ID L9999 not found'],
    [
      'get_data_usage',
      { customer_id: 'C1001', line_id: 'L1004' },
      'Error: Line L1004 not found for customer C1001',
    ],
    [
      'refuel_data',
      { customer_id: 'C1001', line_id: 'L1002', gb_amount: 0 },
      'Error: Refuel amount must be positive',
    ],
    ['resume_line', { customer_id: 'C1001', line_id: 'L1002' }, 'Error: Line must be suspended to resume'],
    [
      'send_payment_request',
      { customer_id: 'C1001', bill_id: 'B1004' },
      'Error: Bill B1004 not found for customer C1001',
    ],
  ],
  mock: [
    ['update_task_status', { task_id: 'task_9', status: 'completed' }, 'Error: Task task_9 not found'],
    ['create_task', { user_id: 'user_9', title: 'x' }, 'Error: User user_9 not found'],
    [
      'update_task_status',
      { task_id: 'task_1', status: 'done' },
      `Error: update_task_status() argument 'status': expected one of "pending", "completed", got "done"`,
    ],
  ],
}

describe('tau2 tools', () => {
  for (const [domain, cases] of Object.entries(ERROR_CASES)) {
    describe(`when ${domain} tools are called with bad input`, () => {
      for (const [tool, args, error] of cases)
        it(`should answer ${tool}(${JSON.stringify(args).slice(0, 60)}) with "${error.slice(0, 70)}"`, () => {
          const m = call(env(domain), tool, args)
          expect(m.error).to.equal(true)
          expect(m.content).to.equal(error)
        })
    })
  }

  describe('when results are serialised', () => {
    it('should print floats the Python way and top-level strings verbatim', () => {
      const e = env('airline')
      expect(call(e, 'calculate', { expression: '(2 + 2) * 1' }).content).to.equal('4.0')
      expect(call(e, 'calculate', { expression: '10 / 3' }).content).to.equal('3.33')
      expect(call(e, 'calculate', { expression: '7 // 2 + 2 ** 3' }).content).to.equal('11.0')
      const user = call(e, 'get_user_details', { user_id: 'mia_li_3668' }).content
      expect(user).to.contain(
        '"certificate_4856383": {"source": "certificate", "id": "certificate_4856383", "amount": 100.0}',
      )
      expect(call(e, 'get_flight_status', { flight_number: 'HAT001', date: '2024-05-03' }).content).to.equal(
        'cancelled',
      )
      expect(call(e, 'transfer_to_human_agents', { summary: 's' }).content).to.equal('Transfer successful')
    })

    it('should list retail product types as sorted Python JSON', () => {
      const text = call(env('retail'), 'list_all_product_types', {}).content
      const parsed = JSON.parse(text) as Record<string, string>
      expect(Object.keys(parsed)).to.deep.equal(Object.keys(parsed).sort())
      expect(text).to.match(/^\{"[^"]+": "\d+", /)
    })
  })

  describe('when an airline reservation is booked', () => {
    it('should charge the payment methods, take seats and store the reservation as HATHAT', () => {
      const e = env('airline')
      const before = JSON.parse(
        call(e, 'search_direct_flight', { origin: 'JFK', destination: 'SEA', date: '2024-05-20' }).content,
      )
      expect(before.length).to.be.greaterThan(0)
      const f = before[0]
      const price = f.prices.economy
      const m = call(e, 'book_reservation', {
        user_id: 'mia_li_3668',
        origin: 'JFK',
        destination: 'SEA',
        flight_type: 'one_way',
        cabin: 'economy',
        flights: [{ flight_number: f.flight_number, date: '2024-05-20' }],
        passengers: [{ first_name: 'Mia', last_name: 'Li', dob: '1990-04-05' }],
        payment_methods: [
          { payment_id: 'certificate_4856383', amount: 100 },
          { payment_id: 'credit_card_4421486', amount: price + 30 - 100 },
        ],
        total_baggages: 0,
        nonfree_baggages: 0,
        insurance: 'yes',
      })
      expect(m.error, m.content).to.equal(false)
      expect(JSON.parse(m.content).reservation_id).to.equal('HATHAT')
      const user = JSON.parse(call(e, 'get_user_details', { user_id: 'mia_li_3668' }).content)
      expect(user.payment_methods).to.not.have.property('certificate_4856383')
      expect(user.reservations).to.include('HATHAT')
      const after = JSON.parse(
        call(e, 'search_direct_flight', { origin: 'JFK', destination: 'SEA', date: '2024-05-20' }).content,
      )
      expect(after[0].available_seats.economy).to.equal(f.available_seats.economy - 1)
      // a fresh environment is untouched (copy-on-write keeps the shared database pristine)
      const fresh = JSON.parse(call(env('airline'), 'get_user_details', { user_id: 'mia_li_3668' }).content)
      expect(fresh.payment_methods).to.have.property('certificate_4856383')
    })

    it('should refuse a payment that does not add up', () => {
      const e = env('airline')
      const m = call(e, 'book_reservation', {
        user_id: 'mia_li_3668',
        origin: 'JFK',
        destination: 'SEA',
        flight_type: 'one_way',
        cabin: 'economy',
        flights: [{ flight_number: 'HAT069', date: '2024-05-20' }],
        passengers: [{ first_name: 'Mia', last_name: 'Li', dob: '1990-04-05' }],
        payment_methods: [{ payment_id: 'credit_card_4421486', amount: 1 }],
        total_baggages: 0,
        nonfree_baggages: 0,
        insurance: 'no',
      })
      expect(m.error).to.equal(true)
      expect(m.content).to.match(
        /^Error: (Payment amount does not add up, total price is \d+, but paid 1|Flight HAT069 .*)$/,
      )
    })
  })

  describe('when the telecom phone is used', () => {
    it('should answer write tools with the status bar and route user tools by requestor', () => {
      const e = env('telecom')
      const m = call(e, 'toggle_airplane_mode', {}, 'user')
      expect(m.error).to.equal(false)
      expect(m.content).to.equal('Airplane Mode is now ON.\nStatus Bar: ✈️ Airplane Mode | 🔋 80%')
      expect(call(e, 'toggle_airplane_mode', {}).content).to.equal(
        "Error: Tool 'toggle_airplane_mode' not found.",
      )
      expect(call(e, 'run_speed_test', {}, 'user').content).to.equal('Speed test failed: No Connection.')
      call(e, 'toggle_airplane_mode', {}, 'user')
      expect(call(e, 'run_speed_test', {}, 'user').content).to.match(
        /^Speed Test Result: 275\.00 Mbps \(Excellent\)/,
      )
    })

    it('should route user tools to the phone in solo mode and refuse user requests', () => {
      const e = env('telecom', true)
      expect(call(e, 'check_sim_status', {}).content).to.equal('Your SIM card is active and working.')
      expect(call(e, 'check_sim_status', {}, 'user').error).to.equal(true)
      expect(e.agentToolSchemas().map((t) => t.function.name)).to.include.members([
        'refuel_data',
        'reboot_device',
      ])
    })

    it('should propagate a paid payment request to the bill on sync', () => {
      const e = env('telecom')
      e.runEnvFunction({
        env_type: 'user',
        func_name: 'set_user_info',
        arguments: { name: 'John Smith', phone_number: '555-123-2002' },
      })
      e.runEnvFunction({
        env_type: 'assistant',
        func_name: 'suspend_line_for_overdue_bill',
        arguments: { customer_id: 'C1001', line_id: 'L1002', new_bill_id: 'B9999', contract_ended: false },
      })
      e.sync()
      expect(call(e, 'send_payment_request', { customer_id: 'C1001', bill_id: 'B9999' }).error).to.equal(
        false,
      )
      expect(call(e, 'check_payment_request', {}, 'user').content).to.equal(
        'You have a payment request for bill B9999 of 65.0 USD.',
      )
      expect(call(e, 'make_payment', {}, 'user').content).to.equal(
        'Payment of 65.0 USD has been made for bill B9999.',
      )
      expect(
        e.runEnvAssertion({
          env_type: 'assistant',
          func_name: 'assert_no_overdue_bill',
          arguments: { overdue_bill_id: 'B9999' },
        }),
      ).to.equal(true)
    })
  })

  describe('when OpenAI schemas are produced', () => {
    it('should give every tool a name, description and an object schema with required parameters', () => {
      for (const d of ['airline', 'retail', 'telecom', 'mock']) {
        const e = env(d)
        const tools = [...e.agentToolSchemas(), ...e.userToolSchemas()]
        expect(tools.length, d).to.be.greaterThan(3)
        for (const t of tools) {
          expect(t.type).to.equal('function')
          expect(t.function.description.length, t.function.name).to.be.greaterThan(10)
          expect(t.function.parameters.type).to.equal('object')
          for (const r of t.function.parameters.required)
            expect(t.function.parameters.properties).to.have.property(r)
        }
      }
      const book = env('airline')
        .agentToolSchemas()
        .find((t) => t.function.name === 'book_reservation')
      expect(book?.function.parameters.required).to.include.members([
        'user_id',
        'flights',
        'payment_methods',
        'insurance',
      ])
      expect(
        env('telecom')
          .userToolSchemas(['toggle_data'])
          .map((t) => t.function.name),
      ).to.deep.equal(['toggle_data'])
    })
  })
})
