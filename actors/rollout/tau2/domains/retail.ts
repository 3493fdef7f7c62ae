/**
 * Retail domain (SPEC §4.2): products with variants, users, orders. No user tools, no solo mode.
 * Reproduces upstream quirks that decide DB hashes (see modify_pending_order_items).
 */
import { cowTables, own, preparer } from '../cow.ts'
import { FloatRules, pyDumps, pyRound } from '../pyjson.ts'
import { type Args, arr, p, str, type ToolDef, toolMap, transferTool } from '../tools.ts'
import { calculateTool } from './calculate.ts'
import type { DomainModule } from './domain.ts'

type Obj = Record<string, any>
interface RetailDb {
  products: Record<string, Obj>
  users: Record<string, Obj>
  orders: Record<string, Obj>
}
interface S {
  db: RetailDb
}

export const retailFloats = new FloatRules(['price', 'balance', 'amount', 'exchange_price_difference'])
const ORDER_OPTIONALS = [
  'cancel_reason',
  'exchange_items',
  'exchange_new_items',
  'exchange_payment_method_id',
  'exchange_price_difference',
  'return_items',
  'return_payment_method_id',
]

const order = (s: S, id: string): Obj => {
  if (!s.db.orders[id]) throw new Error('Order not found')
  return own(s.db.orders, id)
}
const user = (s: S, id: string): Obj => {
  if (!s.db.users[id]) throw new Error('User not found')
  return own(s.db.users, id)
}
const product = (s: S, id: string): Obj => {
  const pr = s.db.products[id]
  if (!pr) throw new Error('Product not found')
  return pr
}
const paymentMethod = (s: S, userId: string, id: string): Obj => {
  const pm = user(s, userId).payment_methods[id]
  if (!pm) throw new Error('Payment method not found')
  return pm
}

/** Every id in `ids` must be in the order, counting repeats. */
function checkItemsInOrder(o: Obj, ids: string[], message: (id: string) => string): void {
  const have = new Map<string, number>()
  for (const it of o.items as Obj[]) have.set(it.item_id, (have.get(it.item_id) ?? 0) + 1)
  for (const id of ids) {
    const n = have.get(id) ?? 0
    if (n === 0) throw new Error(message(id))
    have.set(id, n - 1)
  }
}

/** Price difference of swapping items; returns it and the last looked-up variant (see modify quirk). */
function swapDiff(
  s: S,
  o: Obj,
  itemIds: string[],
  newIds: string[],
  allowSame: boolean,
): { diff: number; last: Obj } {
  if (itemIds.length !== newIds.length) throw new Error('The number of items to be exchanged should match')
  let diff = 0
  let last: Obj = {}
  for (let i = 0; i < itemIds.length; i++) {
    const old = (o.items as Obj[]).find((x) => x.item_id === itemIds[i]) as Obj
    if (!allowSame && itemIds[i] === newIds[i])
      throw new Error('The new item id should be different from the old item id')
    const variant = product(s, old.product_id).variants[newIds[i]]
    if (!variant) throw new Error('Variant not found')
    if (!variant.available) throw new Error(`New item ${newIds[i]} not found or available`)
    diff += variant.price - old.price
    last = variant
  }
  return { diff, last }
}

const ADDRESS_PARAMS = {
  address1: p(str("The first line of the address, such as '123 Main St'.")),
  address2: p(str("The second line of the address, such as 'Apt 1' or ''.")),
  city: p(str("The city, such as 'San Francisco'.")),
  state: p(str("The state, such as 'CA'.")),
  country: p(str("The country, such as 'USA'.")),
  zip: p(str("The zip code, such as '12345'.")),
}
const address = (a: Args) => ({
  address1: a.address1,
  address2: a.address2,
  city: a.city,
  country: a.country,
  state: a.state,
  zip: a.zip,
})
const ORDER_ID = p(
  str(
    "The order id, such as '#W0000000'. Be careful there is a '#' symbol at the beginning of the order id.",
  ),
)

const tools: ToolDef<S>[] = [
  calculateTool<S>(),
  {
    name: 'cancel_pending_order',
    kind: 'write',
    description:
      "Cancel a pending order. If the order is already processed or delivered, it cannot be cancelled. The agent needs to explain the cancellation detail and ask for explicit user confirmation (yes/no) to proceed. If the user confirms, the order status will be changed to 'cancelled' and the payment will be refunded. The refund will be added to the user's gift card balance immediately if the payment was made using a gift card, otherwise the refund would take 5-7 business days to process. The function returns the order details after the cancellation.",
    params: {
      order_id: ORDER_ID,
      reason: p(
        str(
          "The reason for cancellation, which should be either 'no longer needed' or 'ordered by mistake'.",
          {
            enum: ['no longer needed', 'ordered by mistake'],
          },
        ),
      ),
    },
    run: (s, a) => {
      const o = order(s, a.order_id as string)
      if (o.status !== 'pending') throw new Error('Non-pending order cannot be cancelled')
      if (a.reason !== 'no longer needed' && a.reason !== 'ordered by mistake')
        throw new Error('Invalid reason')
      const refunds = (o.payment_history as Obj[]).map((x) => ({
        transaction_type: 'refund',
        amount: x.amount,
        payment_method_id: x.payment_method_id,
      }))
      for (const r of refunds) {
        o.payment_history.push(r)
        const pm = user(s, o.user_id).payment_methods[r.payment_method_id]
        if (pm?.source === 'gift_card') pm.balance = pyRound(pm.balance + r.amount, 2)
      }
      o.status = 'cancelled'
      o.cancel_reason = a.reason
      return o
    },
  },
  {
    name: 'exchange_delivered_order_items',
    kind: 'write',
    description:
      'Exchange items in a delivered order to new items of the same product type. For a delivered order, return or exchange can be only done once by the agent. The agent needs to explain the exchange detail and ask for explicit user confirmation (yes/no) to proceed.',
    params: {
      order_id: ORDER_ID,
      item_ids: p(
        arr(
          str(),
          "The item ids to be exchanged, each such as '1008292230'. There could be duplicate items in the list.",
        ),
      ),
      new_item_ids: p(
        arr(
          str(),
          "The item ids to be exchanged for, each such as '1008292230'. There could be duplicate items in the list. Each new item id should match the item id in the same position and be of the same product.",
        ),
      ),
      payment_method_id: p(
        str(
          "The payment method id to pay or receive refund for the item price difference, such as 'gift_card_0000000' or 'credit_card_0000000'. These can be looked up from the user or order details.",
        ),
      ),
    },
    run: (s, a) => {
      const o = order(s, a.order_id as string)
      if (o.status !== 'delivered') throw new Error('Non-delivered order cannot be exchanged')
      const itemIds = a.item_ids as string[]
      const newIds = a.new_item_ids as string[]
      checkItemsInOrder(o, itemIds, (id) => `${id} not found`)
      const { diff: raw } = swapDiff(s, o, itemIds, newIds, true)
      const diff = pyRound(raw, 2)
      const pm = paymentMethod(s, o.user_id, a.payment_method_id as string)
      if (pm.source === 'gift_card' && pm.balance < diff)
        throw new Error('Insufficient gift card balance to pay for the price difference')
      o.status = 'exchange requested'
      o.exchange_items = [...itemIds].sort()
      o.exchange_new_items = [...newIds].sort()
      o.exchange_payment_method_id = a.payment_method_id
      o.exchange_price_difference = diff
      return o
    },
  },
  {
    name: 'find_user_id_by_email',
    kind: 'read',
    description:
      'Find user id by email. If the user is not found, the function will return an error message.',
    params: { email: p(str("The email of the user, such as 'something@example.com'.")) },
    run: (s, a) => {
      const e = (a.email as string).toLowerCase()
      for (const [id, u] of Object.entries(s.db.users)) if ((u.email as string).toLowerCase() === e) return id
      throw new Error('User not found')
    },
  },
  {
    name: 'find_user_id_by_name_zip',
    kind: 'read',
    description:
      'Find user id by first name, last name, and zip code. If the user is not found, the function will return an error message. By default, find user id by email, and only call this function if the user is not found by email or cannot remember email.',
    params: {
      first_name: p(str("The first name of the customer, such as 'John'.")),
      last_name: p(str("The last name of the customer, such as 'Doe'.")),
      zip: p(str("The zip code of the customer, such as '12345'.")),
    },
    run: (s, a) => {
      const f = (a.first_name as string).toLowerCase()
      const l = (a.last_name as string).toLowerCase()
      for (const [id, u] of Object.entries(s.db.users))
        if (
          u.name.first_name.toLowerCase() === f &&
          u.name.last_name.toLowerCase() === l &&
          u.address.zip === a.zip
        )
          return id
      throw new Error('User not found')
    },
  },
  {
    name: 'get_item_details',
    kind: 'read',
    description: 'Get the inventory details of an item.',
    params: {
      item_id: p(
        str("The item id, such as '6086499569'. Be careful the item id is different from the product id."),
      ),
    },
    run: (s, a) => {
      for (const pr of Object.values(s.db.products)) {
        const v = pr.variants[a.item_id as string]
        if (v) return v
      }
      throw new Error('Item not found')
    },
  },
  {
    name: 'get_order_details',
    kind: 'read',
    description: 'Get the status and details of an order.',
    params: { order_id: ORDER_ID },
    run: (s, a) => order(s, a.order_id as string),
  },
  {
    name: 'get_product_details',
    kind: 'read',
    description: 'Get the inventory details of a product.',
    params: {
      product_id: p(
        str("The product id, such as '6086499569'. Be careful the product id is different from the item id."),
      ),
    },
    run: (s, a) => product(s, a.product_id as string),
  },
  {
    name: 'get_user_details',
    kind: 'read',
    description: 'Get the details of a user, including their orders.',
    params: { user_id: p(str("The user id, such as 'sara_doe_496'.")) },
    run: (s, a) => user(s, a.user_id as string),
  },
  {
    name: 'list_all_product_types',
    kind: 'read',
    description:
      'List the name and product id of all product types. Each product type has a variety of different items with unique item ids and options. There are only 50 product types in the store.',
    params: {},
    run: (s) => {
      const m: Record<string, string> = {}
      for (const pr of Object.values(s.db.products)) m[pr.name] = pr.product_id
      return pyDumps(m, { sortKeys: true })
    },
  },
  {
    name: 'modify_pending_order_address',
    kind: 'write',
    description:
      'Modify the shipping address of a pending order. The agent needs to explain the modification detail and ask for explicit user confirmation (yes/no) to proceed.',
    params: { order_id: ORDER_ID, ...ADDRESS_PARAMS },
    run: (s, a) => {
      const o = order(s, a.order_id as string)
      if (!(o.status as string).includes('pending')) throw new Error('Non-pending order cannot be modified')
      o.address = address(a)
      return o
    },
  },
  {
    name: 'modify_pending_order_items',
    kind: 'write',
    description:
      'Modify items in a pending order to new items of the same product type. For a pending order, this function can only be called once. The agent needs to explain the exchange detail and ask for explicit user confirmation (yes/no) to proceed.',
    params: {
      order_id: ORDER_ID,
      item_ids: p(
        arr(
          str(),
          "The item ids to be modified, each such as '1008292230'. There could be duplicate items in the list.",
        ),
      ),
      new_item_ids: p(
        arr(
          str(),
          "The item ids to be modified for, each such as '1008292230'. There could be duplicate items in the list. Each new item id should match the item id in the same position and be of the same product.",
        ),
      ),
      payment_method_id: p(
        str(
          "The payment method id to pay or receive refund for the item price difference, such as 'gift_card_0000000' or 'credit_card_0000000'. These can be looked up from the user or order details.",
        ),
      ),
    },
    run: (s, a) => {
      const o = order(s, a.order_id as string)
      if (o.status !== 'pending') throw new Error('Non-pending order cannot be modified')
      const itemIds = a.item_ids as string[]
      const newIds = a.new_item_ids as string[]
      checkItemsInOrder(o, itemIds, (id) => `${id} not found`)
      const { diff, last } = swapDiff(s, o, itemIds, newIds, false)
      const pm = paymentMethod(s, o.user_id, a.payment_method_id as string)
      if (pm.source === 'gift_card' && pm.balance < diff)
        throw new Error('Insufficient gift card balance to pay for the new item')
      o.payment_history.push({
        transaction_type: diff > 0 ? 'payment' : 'refund',
        amount: Math.abs(diff),
        payment_method_id: a.payment_method_id,
      })
      if (pm.source === 'gift_card') pm.balance = pyRound(pm.balance - diff, 2)
      for (let i = 0; i < itemIds.length; i++) {
        const it = (o.items as Obj[]).find((x) => x.item_id === itemIds[i]) as Obj
        // NOTE: upstream gives every modified item the price and options of the last new variant looked up
        // (a loop-variable slip); DB hashes depend on it, so it is kept.
        it.item_id = newIds[i]
        it.price = last.price
        it.options = structuredClone(last.options)
      }
      o.status = 'pending (item modified)'
      return o
    },
  },
  {
    name: 'modify_pending_order_payment',
    kind: 'write',
    description:
      'Modify the payment method of a pending order. The agent needs to explain the modification detail and ask for explicit user confirmation (yes/no) to proceed.',
    params: {
      order_id: ORDER_ID,
      payment_method_id: p(
        str(
          "The payment method id to pay or receive refund for the item price difference, such as 'gift_card_0000000' or 'credit_card_0000000'. These can be looked up from the user or order details.",
        ),
      ),
    },
    run: (s, a) => {
      const o = order(s, a.order_id as string)
      if (!(o.status as string).includes('pending')) throw new Error('Non-pending order cannot be modified')
      const pm = paymentMethod(s, o.user_id, a.payment_method_id as string)
      const hist = o.payment_history as Obj[]
      if (hist.length !== 1 || hist[0].transaction_type !== 'payment')
        throw new Error('There should be exactly one payment for a pending order')
      if (hist[0].payment_method_id === a.payment_method_id)
        throw new Error('The new payment method should be different from the current one')
      const amount = hist[0].amount
      if (pm.source === 'gift_card' && pm.balance < amount)
        throw new Error('Insufficient gift card balance to pay for the order')
      const oldId = hist[0].payment_method_id
      hist.push(
        { transaction_type: 'payment', amount, payment_method_id: a.payment_method_id },
        { transaction_type: 'refund', amount, payment_method_id: oldId },
      )
      if (pm.source === 'gift_card') pm.balance = pyRound(pm.balance - amount, 2)
      const old = user(s, o.user_id).payment_methods[oldId]
      if (old?.source === 'gift_card') old.balance = pyRound(old.balance + amount, 2)
      return o
    },
  },
  {
    name: 'modify_user_address',
    kind: 'write',
    description:
      'Modify the default address of a user. The agent needs to explain the modification detail and ask for explicit user confirmation (yes/no) to proceed.',
    params: { user_id: p(str("The user id, such as 'sara_doe_496'.")), ...ADDRESS_PARAMS },
    run: (s, a) => {
      const u = user(s, a.user_id as string)
      u.address = address(a)
      return u
    },
  },
  {
    name: 'return_delivered_order_items',
    kind: 'write',
    description:
      "Return some items of a delivered order. The order status will be changed to 'return requested'. The agent needs to explain the return detail and ask for explicit user confirmation (yes/no) to proceed. The user will receive follow-up email for how and where to return the item.",
    params: {
      order_id: ORDER_ID,
      item_ids: p(
        arr(
          str(),
          "The item ids to be returned, each such as '1008292230'. There could be duplicate items in the list.",
        ),
      ),
      payment_method_id: p(
        str(
          "The payment method id to pay or receive refund for the item price difference, such as 'gift_card_0000000' or 'credit_card_0000000'. These can be looked up from the user or order details.",
        ),
      ),
    },
    run: (s, a) => {
      const o = order(s, a.order_id as string)
      if (o.status !== 'delivered') throw new Error('Non-delivered order cannot be returned')
      const pmId = a.payment_method_id as string
      const pm = paymentMethod(s, o.user_id, pmId)
      if (pm.source !== 'gift_card' && pmId !== o.payment_history[0]?.payment_method_id)
        throw new Error('Payment method should be the original payment method')
      const itemIds = a.item_ids as string[]
      checkItemsInOrder(o, itemIds, () => 'Some item not found')
      o.status = 'return requested'
      o.return_items = [...itemIds].sort()
      o.return_payment_method_id = pmId
      return o
    },
  },
  transferTool<S>(
    "Transfer the user to a human agent, with a summary of the user's issue. Only transfer if\n -  the user explicitly asks for a human agent\n -  given the policy and the available tools, you cannot solve the user's issue.",
  ),
]
const toolsByName = toolMap(tools)

/** model_dump shape: every optional order field present (null when unset), in model order. */
function normalize(db: Record<string, unknown>): Record<string, unknown> {
  const orders = (db as unknown as RetailDb).orders ?? {}
  for (const o of Object.values(orders)) for (const k of ORDER_OPTIONALS) if (!(k in o)) o[k] = null
  return db
}
const prepare = preparer(normalize)

export const retail: DomainModule = {
  name: 'retail',
  soloSupported: false,
  create(data) {
    const state: S = { db: cowTables(prepare(data.db)) as unknown as RetailDb }
    return {
      agent: {
        state,
        tools: toolsByName,
        envFns: new Map(),
        db: () => state.db as unknown as Record<string, unknown>,
        setDb: (db) => {
          state.db = normalize(db) as unknown as RetailDb
        },
        floats: retailFloats,
      },
      user: undefined,
      sync: () => {},
    }
  },
}
