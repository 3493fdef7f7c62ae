/**
 * A fast path for rendering a turn's delta without running the chat template: most turns add one tool
 * result or one user message, and most templates write such a message as fixed text around its content
 * ("content slots"). The layout is learned once per (message roles, reasoning shape, tools/kwargs) by
 * rendering the template with sentinel strings in place of the message fields; later turns fill the slots
 * with their own strings. Running the Jinja interpreter per turn cost ~0.1–0.3 ms (more with tools: the
 * template writes every tool's JSON, which the delta then cuts off again); filling a layout costs ~1 µs.
 *
 * When is a filled layout equal to the template's render? When the fields only ever reach the output
 * verbatim: never tested, transformed or escaped. What guards that:
 * 1. The template's syntax tree (contentRules): every string literal that is not plain output (compared,
 *    searched for, split on: `'</think>' in content`, `content.startswith('<tool_response>')`) must not
 *    occur in a field; strip/lstrip/rstrip arguments must not start or end one; and no field may be empty
 *    or start or end with whitespace (truth tests; strip/trim). Literals compared with `x.role` are exempt
 *    (roles are part of the layout key). A field (or a variable set from one, or a macro parameter) may be
 *    compared or searched only as it is and only with literals. Anything else that could measure or
 *    reshape a field turns the fast path off for the whole template: comparing it with another value
 *    (`m.content == prev.content`), indexing, looping over or filtering anything but the
 *    conversation's lists (`messages`, `tools`, tool calls; `content[0]`, `content|length`, `content|first`),
 *    and methods or filters outside a short list — searches and splits on literals (covered above),
 *    `trim`/`string`/`default` (no-ops on such fields), and, where their result is written out, case
 *    changes and escaping (caught by point 2).
 * 2. Two renders per layout with different sentinels (quotes, backslash, `<&>`, braces, a newline, non-ASCII,
 *    different first and last characters): each must appear once and the second render must equal the
 *    layout filled with the second set, which catches escaping, case changes and text that depends on them.
 * Anything else (assistant messages, tool calls, reasoning, other fields, a rewrite) takes the Jinja path;
 * test/tokenizer/content-slots.test.ts checks the two paths agree for Qwen3 over many messages.
 */
import type { ChatMessage } from './chat-template.ts'

/** What a field must avoid for its template to treat it as opaque text (see the header, point 1). */
export interface ContentRules {
  /** literals the template searches for, compares with or splits on */
  contain: string[]
  /** characters stripped from the ends of fields (strip/lstrip/rstrip arguments) */
  edge: string
}

type AstNode = { type: string; [k: string]: unknown }

const STRIP = new Set(['strip', 'lstrip', 'rstrip'])
/** lists by these names are the conversation's, not a field: they may be measured, indexed, looped over */
const MEASURABLE = new Set(['messages', 'tools', 'tool_calls'])
/** methods that, on a field passing the rules, find nothing, split nothing off and strip nothing */
const SAFE_METHODS = new Set(['startswith', 'endswith', 'split', 'replace', 'strip', 'lstrip', 'rstrip'])
/** methods over a mapping (`tool.parameters.items()`): iterating one is not iterating a field */
const MAP_METHODS = new Set(['items', 'keys', 'values', 'get'])
/** filters that leave a field passing the rules as it is */
const SAFE_FILTERS = new Set(['trim', 'string', 'default', 'd', 'replace'])
/** filters and methods that reshape every character alike: fine where written out (point 2 checks them) */
const OUTPUT_FILTERS = new Set(['tojson', 'upper', 'lower', 'title', 'capitalize', 'e', 'escape', 'safe'])
/** the message fields a slot may hold */
const FIELDS = ['content', 'name', 'tool_call_id'] as const
type Field = (typeof FIELDS)[number]
/** roles whose messages may take the fast path */
const ROLES = new Set(['user', 'tool', 'system'])
const LAYOUT_CACHE_MAX = 256

const isNode = (x: unknown): x is AstNode =>
  typeof x === 'object' && x !== null && typeof (x as { type?: unknown }).type === 'string'

function isRoleMember(n: unknown): boolean {
  if (!isNode(n) || n.type !== 'MemberExpression' || n.computed) return false
  const p = n.property
  return isNode(p) && p.type === 'Identifier' && p.value === 'role'
}

function isStringList(n: unknown): boolean {
  return (
    isNode(n) &&
    (n.type === 'ArrayLiteral' || n.type === 'TupleLiteral') &&
    (n.value as unknown[]).every((x) => isNode(x) && x.type === 'StringLiteral')
  )
}

/** `….split('…')`: a split on a literal (which no field may contain, so the one part is the whole field) */
function isSplit(n: unknown): boolean {
  if (!isNode(n) || n.type !== 'CallExpression' || nameOf(n.callee) !== 'split') return false
  const sep = (n.args as unknown[])[0]
  return isNode(sep) && sep.type === 'StringLiteral' && sep.value !== ''
}

const COMPARISONS = new Set(['==', '!=', '<', '>', '<=', '>=', 'in', 'not in'])
const CONSTANTS = new Set(['none', 'None', 'true', 'True', 'false', 'False'])

/** A literal a field may be compared with (strings are guarded by the rules; the rest never equal a string). */
function isConstant(n: unknown): boolean {
  if (!isNode(n)) return false
  if (['StringLiteral', 'IntegerLiteral', 'FloatLiteral'].includes(n.type) || isStringList(n)) return true
  return n.type === 'Identifier' && CONSTANTS.has(n.value as string)
}

/**
 * Names that may hold a field: the fields themselves, macro parameters, and every variable set from an
 * expression mentioning one (`set content = message.content.split('</think>')[-1]`), to a fixed point.
 */
function fieldNames(program: unknown): Set<string> {
  const names = new Set<string>(FIELDS)
  const sets: AstNode[] = []
  const collect = (x: unknown): void => {
    if (Array.isArray(x)) {
      for (const y of x) collect(y)
      return
    }
    if (!isNode(x)) return
    if (x.type === 'Set') sets.push(x)
    if (x.type === 'Macro') for (const a of x.args as unknown[]) if (nameOf(a)) names.add(nameOf(a)!)
    for (const [k, v] of Object.entries(x)) if (k !== 'type') collect(v)
  }
  collect(program)
  for (let grew = true; grew; ) {
    grew = false
    for (const st of sets) {
      const target =
        isNode(st.assignee) && st.assignee.type === 'Identifier' ? (st.assignee.value as string) : null
      if (target && !names.has(target) && mentions(st.value ?? st.body, names)) {
        names.add(target)
        grew = true
      }
    }
  }
  return names
}

/** Whether an expression mentions a field: a name in `names` or a member by such a name (`m.content`). */
function mentions(x: unknown, names: Set<string>): boolean {
  if (Array.isArray(x)) return x.some((y) => mentions(y, names))
  if (!isNode(x)) return false
  if (x.type === 'Identifier') return names.has(x.value as string)
  if (x.type === 'MemberExpression' && !x.computed && names.has(nameOf(x) ?? '')) return true
  for (const [k, v] of Object.entries(x))
    if (k !== 'type' && k !== 'property' && mentions(v, names)) return true
  return false
}

/** A field as it is, or trimmed, or split on a literal and indexed: what a comparison with a literal may see. */
function isFieldPath(n: unknown): boolean {
  if (!isNode(n)) return false
  if (n.type === 'Identifier') return true
  if (n.type === 'MemberExpression') return n.computed ? isSplit(n.object) : isFieldPath(n.object)
  if (n.type === 'CallExpression' && isNode(n.callee) && n.callee.type === 'MemberExpression')
    return STRIP.has(nameOf(n.callee) ?? '') && isFieldPath(n.callee.object)
  if (n.type === 'FilterExpression')
    return ['trim', 'string'].includes(filterName(n.filter) ?? '') && isFieldPath(n.operand)
  return false
}

/** One of the conversation's lists (`messages`, `messages[::-1]`, `tools|selectattr(…)`), by its name. */
function isList(n: unknown): boolean {
  if (!isNode(n)) return false
  if (MEASURABLE.has(nameOf(n) ?? '')) return true
  if (n.type === 'MemberExpression' && n.computed) return isList(n.object)
  if (n.type === 'FilterExpression') return isList(n.operand)
  return false
}

/** A name of a filter node (`upper`, or `replace` of `replace('a', 'b')`). */
function filterName(f: unknown): string | undefined {
  return isNode(f) && f.type === 'CallExpression' ? nameOf(f.callee) : nameOf(f)
}

/** The name a `length`/`count` operand is known by (`messages`, `message.tool_calls`), if any. */
function nameOf(n: unknown): string | undefined {
  if (!isNode(n)) return undefined
  if (n.type === 'Identifier') return n.value as string
  if (n.type === 'MemberExpression' && !n.computed && isNode(n.property) && n.property.type === 'Identifier')
    return n.property.value as string
  return undefined
}

/**
 * The rules for a parsed template (@huggingface/jinja's `Template.parsed`), or null when the template
 * measures fields in a way the rules cannot follow (then the fast path stays off).
 */
export function contentRules(program: unknown): ContentRules | null {
  const contain = new Set<string>()
  const edge = new Set<string>()
  const names = fieldNames(program)
  let opaque = true
  const walk = (x: unknown, out: boolean): undefined => {
    if (Array.isArray(x)) {
      for (const y of x) walk(y, out)
      return
    }
    if (!isNode(x)) return
    switch (x.type) {
      case 'Program':
        return walk(x.body, true)
      case 'Comment':
        return
      case 'FilterStatement':
      case 'CallStatement':
        // a filtered block or a caller block reshapes whatever it writes: not followed
        opaque = false
        return
      case 'StringLiteral':
        if (!out && x.value !== '') contain.add(x.value as string)
        return
      case 'If':
        walk(x.test, false)
        walk(x.body, out)
        return walk(x.alternate, out)
      case 'For': {
        // looping over a field would measure it; mappings (`….items()`) and the conversation's lists are fine
        const it = x.iterable
        const overMap =
          isNode(it) &&
          ((it.type === 'CallExpression' && MAP_METHODS.has(nameOf(it.callee) ?? '')) ||
            (it.type === 'FilterExpression' && ['items', 'dictsort'].includes(filterName(it.filter) ?? '')))
        if (!isList(it) && !overMap) opaque = false
        walk(x.loopvar, false)
        walk(x.iterable, false)
        walk(x.body, out)
        return walk(x.defaultBlock, out)
      }
      case 'Ternary':
        walk(x.condition, false)
        walk(x.trueExpr, out)
        return walk(x.falseExpr, out)
      case 'BinaryExpression': {
        const op = (x.operator as { value?: string }).value
        if (out && (op === '+' || op === '~')) {
          walk(x.left, true)
          return walk(x.right, true)
        }
        const roleLit = (a: unknown, b: unknown) =>
          isRoleMember(a) &&
          (((op === '==' || op === '!=') && isNode(b) && b.type === 'StringLiteral') ||
            ((op === 'in' || op === 'not in') && isStringList(b)))
        if (roleLit(x.left, x.right)) return walk(x.left, false)
        if (roleLit(x.right, x.left)) return walk(x.right, false)
        // a field may only be compared, as it is, with a literal (which the rules keep out of it): not with
        // another field (`m.content == prev.content`) nor built into something else (`'Q' ~ content == 'Qx'`)
        if (op !== undefined && COMPARISONS.has(op)) {
          for (const [a, b] of [
            [x.left, x.right],
            [x.right, x.left],
          ])
            if (mentions(a, names) && !(isFieldPath(a) && isConstant(b))) opaque = false
        }
        walk(x.left, false)
        return walk(x.right, false)
      }
      case 'CallExpression': {
        const c = x.callee
        const method = isNode(c) && c.type === 'MemberExpression' && !c.computed ? nameOf(c) : undefined
        if (
          method !== undefined &&
          !isList((c as AstNode).object) &&
          !SAFE_METHODS.has(method) &&
          !MAP_METHODS.has(method) &&
          !(out && OUTPUT_FILTERS.has(method))
        )
          opaque = false
        // searching a field for something other than a literal (`content.startswith(prefix)`)
        if (
          method !== undefined &&
          mentions((c as AstNode).object, names) &&
          !(x.args as unknown[]).every((a) => isNode(a) && a.type === 'StringLiteral')
        )
          opaque = false
        if (method !== undefined && STRIP.has(method)) {
          for (const a of x.args as unknown[]) {
            if (isNode(a) && a.type === 'StringLiteral') for (const ch of a.value as string) edge.add(ch)
            else walk(a, false)
          }
          return walk(c, false)
        }
        if (nameOf(c) === 'len' && !isList((x.args as unknown[])[0])) opaque = false
        walk(c, false)
        return walk(x.args, false)
      }
      case 'FilterExpression': {
        const f = x.filter
        const fname = filterName(f) ?? ''
        if (!isList(x.operand) && !SAFE_FILTERS.has(fname) && !(out && OUTPUT_FILTERS.has(fname)))
          opaque = false
        walk(x.operand, false)
        return walk(f, false)
      }
      case 'MemberExpression': {
        // a key lookup (`message['content']`) tests nothing
        if (x.computed && isNode(x.property) && x.property.type === 'StringLiteral')
          return walk(x.object, false)
        // indexing or slicing a field (`content[0]`, `content[:80]`) measures it: only the conversation's
        // lists and the parts of a split (on a literal no field may contain: the whole field) may be indexed
        if (x.computed && !isList(x.object) && !isSplit(x.object)) opaque = false
        walk(x.object, false)
        return walk(x.property, false)
      }
      default:
        // statements whose output a variable captures (set blocks, macros, filter/call blocks) and every
        // other expression: their literals count as searched for (conservative)
        for (const [k, v] of Object.entries(x)) if (k !== 'type') walk(v, false)
    }
  }
  walk(program, true)
  return opaque ? { contain: [...contain], edge: [...edge].join('') } : null
}

/** Whether `s` passes `rules` (see the header): non-empty, no edge whitespace or stripped character, no literal. */
export function opaqueText(s: string, rules: ContentRules): boolean {
  if (s.length === 0) return false
  const a = s[0]!
  const z = s[s.length - 1]!
  if (/\s/.test(a) || /\s/.test(z) || rules.edge.includes(a) || rules.edge.includes(z)) return false
  for (const lit of rules.contain) if (s.includes(lit)) return false
  return true
}

/** Text = pieces[0] + value(slots[0]) + pieces[1] + … + pieces[n]; fields not in `slots` are not written. */
interface Layout {
  pieces: string[]
  slots: { msg: number; field: Field }[]
}

/** The layout key of a delta (roles and which fields are set), or null when it cannot take the fast path. */
function shapeOf(messages: readonly ChatMessage[], rules: ContentRules): string | null {
  let shape = ''
  for (const m of messages) {
    if (!ROLES.has(m.role) || m.tool_calls !== undefined || m.reasoning_content !== undefined) return null
    for (const k of Object.keys(m))
      if (k !== 'role' && !(FIELDS as readonly string[]).includes(k)) return null
    shape += `${m.role}:`
    for (const f of FIELDS) {
      const v = m[f]
      if (v === undefined) continue
      if (typeof v !== 'string' || !opaqueText(v, rules)) return null
      shape += f[0]
    }
    shape += ','
  }
  return shape
}

/** Sentinel values: set 0 and set 1 differ in length and in every position; both pass the Qwen3 rules. */
function sentinel(set: number, msg: number, field: Field): string {
  return set === 0
    ? `\u2063S${msg}${field}«"q'\\<a&b>{{x}}\nλ→🙂»\u2063`
    : `\u2064T${msg}${field}:Zz9\u00e9<\u2064`
}

function withValues(messages: readonly ChatMessage[], set: number): ChatMessage[] {
  return messages.map((m, i) => {
    const out: ChatMessage = { role: m.role, content: sentinel(set, i, 'content') }
    if (m.name !== undefined) out.name = sentinel(set, i, 'name')
    if (m.tool_call_id !== undefined) out.tool_call_id = sentinel(set, i, 'tool_call_id')
    return out
  })
}

function fill(layout: Layout, messages: readonly ChatMessage[]): string {
  let text = layout.pieces[0]!
  for (let i = 0; i < layout.slots.length; i++) {
    const s = layout.slots[i]!
    text += messages[s.msg]![s.field]! + layout.pieces[i + 1]!
  }
  return text
}

/**
 * Learn the layout of `messages` from `renderDelta` (the template's delta text for some messages, or null
 * when the template rewrites history), checked with a second sentinel set; null when it does not hold.
 */
function learn(
  messages: readonly ChatMessage[],
  rules: ContentRules,
  renderDelta: (m: ChatMessage[]) => string | null,
): Layout | null {
  const first = withValues(messages, 0)
  for (const m of first)
    for (const f of FIELDS) if (m[f] !== undefined && !opaqueText(m[f]!, rules)) return null
  const text = renderDelta(first)
  if (text === null) return null
  const found: { at: number; msg: number; field: Field; len: number }[] = []
  first.forEach((m, msg) => {
    for (const field of FIELDS) {
      const v = m[field]
      if (v === undefined) continue
      const at = text.indexOf(v)
      if (at >= 0) found.push({ at, msg, field, len: v.length })
    }
  })
  found.sort((a, b) => a.at - b.at)
  const pieces: string[] = []
  let from = 0
  for (const f of found) {
    if (f.at < from) return null // overlapping: not a plain slot
    pieces.push(text.slice(from, f.at))
    from = f.at + f.len
  }
  pieces.push(text.slice(from))
  const layout: Layout = { pieces, slots: found.map((f) => ({ msg: f.msg, field: f.field })) }
  // a second set fills to exactly what the template writes (a field written twice, escaped or changed,
  // or text around it that depends on it, leaves the first set's sentinels or differences behind)
  const second = withValues(messages, 1)
  for (const m of second)
    for (const f of FIELDS) if (m[f] !== undefined && !opaqueText(m[f]!, rules)) return null
  if (renderDelta(second) !== fill(layout, second)) return null
  return layout
}

/** Delta layouts per key, learned on first use. */
export class ContentSlots {
  private readonly layouts = new Map<string, Layout | null>()
  /** deltas rendered by filling a layout (tests check the fast path is taken) */
  filled = 0

  constructor(private readonly rules: ContentRules) {}

  /**
   * The delta text of `messages` by filling a learned layout, or undefined when the fast path does not
   * apply (the caller renders with the template). `context` keys everything else the render depends on
   * (reasoning shape, tools, kwargs); `renderDelta` renders the delta of sentinel messages the slow way.
   */
  render(
    messages: readonly ChatMessage[],
    context: string,
    renderDelta: (m: ChatMessage[]) => string | null,
  ): string | undefined {
    const shape = shapeOf(messages, this.rules)
    if (shape === null) return undefined
    const key = `${context}\u0000${shape}`
    let layout = this.layouts.get(key)
    if (layout === undefined) {
      try {
        layout = learn(messages, this.rules, renderDelta)
      } catch {
        // the template refused the sentinel messages: the template itself renders (or refuses) the real ones
        layout = null
      }
      if (this.layouts.size >= LAYOUT_CACHE_MAX) this.layouts.delete(this.layouts.keys().next().value!)
      this.layouts.set(key, layout)
    }
    if (layout === null) return undefined
    this.filled++
    return fill(layout, messages)
  }
}
