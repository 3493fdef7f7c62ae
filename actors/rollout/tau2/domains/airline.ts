/**
 * Airline domain (SPEC §4.1): flights, users and reservations; "now" is 2024-05-15T15:00:00 EST.
 * No user tools, no solo mode.
 */
import { cowTables, own, preparer } from '../cow.ts'
import { FloatRules } from '../pyjson.ts'
import { type Args, arr, int, obj, p, str, type ToolDef, toolMap, transferTool } from '../tools.ts'
import { calculateTool } from './calculate.ts'
import type { DomainModule } from './domain.ts'

type Obj = Record<string, any>
export interface AirlineDb {
  flights: Record<string, Obj>
  users: Record<string, Obj>
  reservations: Record<string, Obj>
}
interface S {
  db: AirlineDb
}

const NOW = '2024-05-15T15:00:00'
export const airlineFloats = new FloatRules(['payment_methods.*.amount'])

const AIRPORTS: [string, string][] = [
  ['SFO', 'San Francisco'],
  ['JFK', 'New York'],
  ['LAX', 'Los Angeles'],
  ['ORD', 'Chicago'],
  ['DFW', 'Dallas'],
  ['DEN', 'Denver'],
  ['SEA', 'Seattle'],
  ['ATL', 'Atlanta'],
  ['MIA', 'Miami'],
  ['BOS', 'Boston'],
  ['PHX', 'Phoenix'],
  ['IAH', 'Houston'],
  ['LAS', 'Las Vegas'],
  ['MCO', 'Orlando'],
  ['EWR', 'Newark'],
  ['CLT', 'Charlotte'],
  ['MSP', 'Minneapolis'],
  ['DTW', 'Detroit'],
  ['PHL', 'Philadelphia'],
  ['LGA', 'LaGuardia'],
]

const CABIN = str('The cabin class.', { enum: ['basic_economy', 'economy', 'business'] })
const FLIGHT_REF = obj(
  {
    flight_number: str("Flight number, such as 'HAT001'."),
    date: str("The date for the flight in the format 'YYYY-MM-DD', such as '2024-05-01'."),
  },
  ['flight_number', 'date'],
  'FlightInfo',
)
const PASSENGER = obj(
  {
    first_name: str('The first name of the passenger.'),
    last_name: str('The last name of the passenger.'),
    dob: str("The date of birth of the passenger in the format 'YYYY-MM-DD'."),
  },
  ['first_name', 'last_name', 'dob'],
  'Passenger',
)
const PAYMENT = obj(
  { payment_id: str('The payment id stored in user profile.'), amount: int('The amount to be paid.') },
  ['payment_id', 'amount'],
  'Payment',
)

function user(s: S, id: string): Obj {
  if (!s.db.users[id]) throw new Error(`User ${id} not found`)
  return own(s.db.users, id)
}
function reservation(s: S, id: string): Obj {
  if (!s.db.reservations[id]) throw new Error(`Reservation ${id} not found`)
  return own(s.db.reservations, id)
}
function flight(s: S, n: string): Obj {
  const f = s.db.flights[n]
  if (!f) throw new Error(`Flight ${n} not found`)
  return f
}
function flightOnDate(s: S, n: string, date: string): Obj {
  const f = flight(s, n)
  const d = f.dates[date]
  if (!d) throw new Error(`Flight ${n} not found on date ${date}`)
  return d
}

function directFlight(f: Obj, status: Obj, date: string | null): Obj {
  return {
    flight_number: f.flight_number,
    origin: f.origin,
    destination: f.destination,
    status: 'available',
    scheduled_departure_time_est: f.scheduled_departure_time_est,
    scheduled_arrival_time_est: f.scheduled_arrival_time_est,
    date,
    available_seats: status.available_seats,
    prices: status.prices,
  }
}

function searchDirect(s: S, origin: string, destination: string, date: string, withDate: boolean): Obj[] {
  const out: Obj[] = []
  for (const f of Object.values(s.db.flights)) {
    if (f.origin !== origin || f.destination !== destination) continue
    const st = f.dates[date]
    if (st?.status === 'available') out.push(directFlight(f, st, withDate ? date : null))
  }
  return out
}

/** The update-style payment check shared by flight and baggage changes. */
function chargeForUpdate(_s: S, u: Obj, paymentId: string, total: number): void {
  const pm = u.payment_methods[paymentId]
  if (!pm) throw new Error('Payment method not found')
  if (pm.source === 'certificate') throw new Error('Certificate cannot be used to update reservation')
  if (pm.source === 'gift_card') {
    if (pm.amount < total) throw new Error('Gift card balance is not enough')
    pm.amount -= total
  }
}

const tools: ToolDef<S>[] = [
  {
    name: 'book_reservation',
    kind: 'write',
    description: 'Book a reservation.',
    params: {
      user_id: p(str("The ID of the user to book the reservation such as 'sara_doe_496'.")),
      origin: p(str("The IATA code for the origin city such as 'SFO'.")),
      destination: p(str("The IATA code for the destination city such as 'JFK'.")),
      flight_type: p(
        str('The type of flight such as one_way or round_trip.', { enum: ['one_way', 'round_trip'] }),
      ),
      cabin: p(CABIN),
      flights: p(arr(FLIGHT_REF, 'An array of objects containing details about each piece of flight.')),
      passengers: p(arr(PASSENGER, 'An array of objects containing details about each passenger.')),
      payment_methods: p(arr(PAYMENT, 'An array of objects containing details about each payment method.')),
      total_baggages: p(int('The total number of baggage items to book the reservation.')),
      nonfree_baggages: p(int('The number of non-free baggage items to book the reservation.')),
      insurance: p(str('Whether the reservation has insurance.', { enum: ['yes', 'no'] })),
    },
    run: (s, a: Args) => {
      const u = user(s, a.user_id as string)
      const id = ['HATHAT', 'HATHAU', 'HATHAV'].find((x) => !s.db.reservations[x])
      if (!id) throw new Error('Too many reservations')
      const pax = (a.passengers as Obj[]).length
      const cabin = a.cabin as string
      const legs: Obj[] = []
      let total = 0
      for (const fr of a.flights as Obj[]) {
        const f = flight(s, fr.flight_number)
        const st = f.dates[fr.date]
        if (!st) throw new Error(`Flight ${fr.flight_number} not found on date ${fr.date}`)
        if (st.status !== 'available')
          throw new Error(`Flight ${fr.flight_number} not available on date ${fr.date}`)
        if (st.available_seats[cabin] < pax) throw new Error(`Not enough seats on flight ${fr.flight_number}`)
        const price = st.prices[cabin]
        total += price * pax
        legs.push({
          origin: f.origin,
          destination: f.destination,
          flight_number: f.flight_number,
          date: fr.date,
          price,
        })
      }
      if (a.insurance === 'yes') total += 30 * pax
      total += 50 * (a.nonfree_baggages as number)
      const payments = a.payment_methods as Obj[]
      for (const pay of payments) {
        const pm = u.payment_methods[pay.payment_id]
        if (!pm) throw new Error(`Payment method ${pay.payment_id} not found`)
        if ((pm.source === 'gift_card' || pm.source === 'certificate') && pm.amount < pay.amount)
          throw new Error(`Not enough balance in payment method ${pay.payment_id}`)
      }
      const paid = payments.reduce((acc, x) => acc + x.amount, 0)
      if (paid !== total)
        throw new Error(`Payment amount does not add up, total price is ${total}, but paid ${paid}`)
      for (const pay of payments) {
        const pm = u.payment_methods[pay.payment_id]
        if (pm.source === 'gift_card') pm.amount -= pay.amount
        else if (pm.source === 'certificate') delete u.payment_methods[pay.payment_id]
      }
      for (const leg of legs)
        own(s.db.flights, leg.flight_number).dates[leg.date].available_seats[cabin] -= pax
      const r = {
        reservation_id: id,
        user_id: a.user_id,
        origin: a.origin,
        destination: a.destination,
        flight_type: a.flight_type,
        cabin,
        flights: legs,
        passengers: structuredClone(a.passengers),
        payment_history: payments.map((x) => ({ payment_id: x.payment_id, amount: x.amount })),
        created_at: NOW,
        total_baggages: a.total_baggages,
        nonfree_baggages: a.nonfree_baggages,
        insurance: a.insurance,
        status: null,
      }
      s.db.reservations[id] = r
      u.reservations.push(id)
      return r
    },
  },
  calculateTool<S>(),
  {
    name: 'cancel_reservation',
    kind: 'write',
    description: 'Cancel the whole reservation.',
    params: { reservation_id: p(str("The reservation ID, such as 'ZFA04Y'.")) },
    run: (s, a) => {
      const r = reservation(s, a.reservation_id as string)
      const refunds = (r.payment_history as Obj[]).map((x) => ({
        payment_id: x.payment_id,
        amount: -x.amount,
      }))
      r.payment_history.push(...refunds)
      r.status = 'cancelled'
      return r
    },
  },
  {
    name: 'get_flight_status',
    kind: 'read',
    description: 'Get the status of a flight.',
    params: {
      flight_number: p(str('The flight number.')),
      date: p(str('The date of the flight.')),
    },
    run: (s, a) => flightOnDate(s, a.flight_number as string, a.date as string).status,
  },
  {
    name: 'get_reservation_details',
    kind: 'read',
    description: 'Get the details of a reservation.',
    params: { reservation_id: p(str("The reservation ID, such as '8JX2WO'.")) },
    run: (s, a) => reservation(s, a.reservation_id as string),
  },
  {
    name: 'get_user_details',
    kind: 'read',
    description: 'Get the details of a user, including their reservations.',
    params: { user_id: p(str("The user ID, such as 'sara_doe_496'.")) },
    run: (s, a) => user(s, a.user_id as string),
  },
  {
    name: 'list_all_airports',
    kind: 'read',
    description: 'Returns a list of all available airports.',
    params: {},
    run: () => AIRPORTS.map(([iata, city]) => ({ iata, city })),
  },
  {
    name: 'search_direct_flight',
    kind: 'read',
    description: 'Search for direct flights between two cities on a specific date.',
    params: {
      origin: p(str("The origin city airport in three letters, such as 'JFK'.")),
      destination: p(str("The destination city airport in three letters, such as 'LAX'.")),
      date: p(str("The date of the flight in the format 'YYYY-MM-DD', such as '2024-01-01'.")),
    },
    run: (s, a) => searchDirect(s, a.origin as string, a.destination as string, a.date as string, false),
  },
  {
    name: 'search_onestop_flight',
    kind: 'read',
    description: 'Search for one-stop flights between two cities on a specific date.',
    params: {
      origin: p(str("The origin city airport in three letters, such as 'JFK'.")),
      destination: p(str("The destination city airport in three letters, such as 'LAX'.")),
      date: p(str("The date of the flight in the format 'YYYY-MM-DD', such as '2024-05-01'.")),
    },
    run: (s, a) => {
      const date = a.date as string
      const out: Obj[][] = []
      for (const f1 of Object.values(s.db.flights)) {
        if (f1.origin !== a.origin || f1.destination === a.destination) continue
        const st1 = f1.dates[date]
        if (st1?.status !== 'available') continue
        const date2 = (f1.scheduled_arrival_time_est as string).includes('+1')
          ? `2024-05-${Number(date.slice(-2)) + 1}`
          : date
        for (const f2 of Object.values(s.db.flights)) {
          if (f2.origin !== f1.destination || f2.destination !== a.destination) continue
          const st2 = f2.dates[date2]
          if (st2?.status !== 'available') continue
          if (f2.scheduled_departure_time_est < f1.scheduled_arrival_time_est) continue
          out.push([directFlight(f1, st1, date), directFlight(f2, st2, date2)])
        }
      }
      return out
    },
  },
  {
    name: 'send_certificate',
    kind: 'write',
    description: 'Send a certificate to a user. Be careful!',
    params: {
      user_id: p(str("The ID of the user to book the reservation, such as 'sara_doe_496'.")),
      amount: p(int('The amount of the certificate to send.')),
    },
    run: (s, a) => {
      const u = user(s, a.user_id as string)
      const id = ['certificate_3221322', 'certificate_3221323', 'certificate_3221324'].find(
        (x) => !u.payment_methods[x],
      )
      if (!id) throw new Error('Too many certificates')
      u.payment_methods[id] = { source: 'certificate', id, amount: a.amount }
      return `Certificate ${id} added to user ${a.user_id} with amount ${a.amount}.`
    },
  },
  transferTool<S>(
    "Transfer the user to a human agent, with a summary of the user's issue. Only transfer if\n -  the user explicitly asks for a human agent\n -  given the policy and the available tools, you cannot solve the user's issue.",
  ),
  {
    name: 'update_reservation_baggages',
    kind: 'write',
    description: 'Update the baggage information of a reservation.',
    params: {
      reservation_id: p(str("The reservation ID, such as 'ZFA04Y'")),
      total_baggages: p(int('The updated total number of baggage items included in the reservation.')),
      nonfree_baggages: p(int('The updated number of non-free baggage items included in the reservation.')),
      payment_id: p(
        str(
          "The payment id stored in user profile, such as 'credit_card_7815826', 'gift_card_7815826', 'certificate_7815826'.",
        ),
      ),
    },
    run: (s, a) => {
      const r = reservation(s, a.reservation_id as string)
      const u = user(s, r.user_id)
      const total = 50 * Math.max(0, (a.nonfree_baggages as number) - r.nonfree_baggages)
      chargeForUpdate(s, u, a.payment_id as string, total)
      if (total !== 0) r.payment_history.push({ payment_id: a.payment_id, amount: total })
      r.total_baggages = a.total_baggages
      r.nonfree_baggages = a.nonfree_baggages
      return r
    },
  },
  {
    name: 'update_reservation_flights',
    kind: 'write',
    description: 'Update the flight information of a reservation.',
    params: {
      reservation_id: p(str("The reservation ID, such as 'ZFA04Y'.")),
      cabin: p(CABIN),
      flights: p(
        arr(
          FLIGHT_REF,
          'An array of objects containing details about each piece of flight in the ENTIRE new reservation. Even if the a flight segment is not changed, it should still be included in the array.',
        ),
      ),
      payment_id: p(
        str(
          "The payment id stored in user profile, such as 'credit_card_7815826', 'gift_card_7815826', 'certificate_7815826'.",
        ),
      ),
    },
    run: (s, a) => {
      const r = reservation(s, a.reservation_id as string)
      const u = user(s, r.user_id)
      const cabin = a.cabin as string
      const pax = (r.passengers as Obj[]).length
      const legs: Obj[] = []
      let total = 0
      for (const fr of a.flights as Obj[]) {
        const kept = (r.flights as Obj[]).find(
          (x) => x.flight_number === fr.flight_number && x.date === fr.date && cabin === r.cabin,
        )
        if (kept) {
          total += kept.price * pax
          legs.push(kept)
          continue
        }
        const f = flight(s, fr.flight_number)
        const st = f.dates[fr.date]
        if (!st) throw new Error(`Flight ${fr.flight_number} not found on date ${fr.date}`)
        if (st.status !== 'available')
          throw new Error(`Flight ${fr.flight_number} not available on date ${fr.date}`)
        if (st.available_seats[cabin] < pax) throw new Error(`Not enough seats on flight ${fr.flight_number}`)
        const price = st.prices[cabin]
        total += price * pax
        legs.push({
          origin: f.origin,
          destination: f.destination,
          flight_number: f.flight_number,
          date: fr.date,
          price,
        })
      }
      total -= (r.flights as Obj[]).reduce((acc, x) => acc + x.price, 0) * pax
      chargeForUpdate(s, u, a.payment_id as string, total)
      if (total !== 0) r.payment_history.push({ payment_id: a.payment_id, amount: total })
      r.flights = legs
      r.cabin = cabin
      return r
    },
  },
  {
    name: 'update_reservation_passengers',
    kind: 'write',
    description: 'Update the passenger information of a reservation.',
    params: {
      reservation_id: p(str("The reservation ID, such as 'ZFA04Y'.")),
      passengers: p(arr(PASSENGER, 'An array of objects containing details about each passenger.')),
    },
    run: (s, a) => {
      const r = reservation(s, a.reservation_id as string)
      const ps = a.passengers as Obj[]
      if (ps.length !== r.passengers.length) throw new Error('Number of passengers does not match')
      r.passengers = structuredClone(ps)
      return r
    },
  },
]

const toolsByName = toolMap(tools)

/** Fill fields the data model defaults (a reservation's `status`). */
function normalize(db: Record<string, unknown>): Record<string, unknown> {
  for (const r of Object.values((db as unknown as AirlineDb).reservations ?? {}))
    if (!('status' in r)) r.status = null
  return db
}
const prepare = preparer(normalize)

export const airline: DomainModule = {
  name: 'airline',
  soloSupported: false,
  create(data) {
    const state: S = { db: cowTables(prepare(data.db)) as unknown as AirlineDb }
    return {
      agent: {
        state,
        tools: toolsByName,
        envFns: new Map(),
        db: () => state.db as unknown as Record<string, unknown>,
        setDb: (db) => {
          state.db = normalize(db) as unknown as AirlineDb
        },
        floats: airlineFloats,
      },
      user: undefined,
      sync: () => {},
    }
  },
}
