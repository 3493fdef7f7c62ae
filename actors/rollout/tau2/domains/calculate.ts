/**
 * The `calculate` tool shared by airline and retail: arithmetic over `0-9+-*\/(). ` with Python
 * semantics (`/` true division, `//` floor division, `**` power), result `str(round(value, 2))`.
 * A small recursive-descent parser; nothing is ever evaluated as code.
 */
import { pyFloatRepr, pyRound } from '../pyjson.ts'
import { p, str, type ToolDef } from '../tools.ts'

type Tok = { t: 'num'; v: number } | { t: 'op'; v: string }

function tokenize(src: string): Tok[] {
  const out: Tok[] = []
  let i = 0
  while (i < src.length) {
    const c = src[i]
    if (c === ' ') i++
    else if (/[0-9.]/.test(c)) {
      let j = i
      while (j < src.length && /[0-9.]/.test(src[j])) j++
      const text = src.slice(i, j)
      if (!/^(\d+\.?\d*|\.\d+)$/.test(text)) throw new Error('invalid syntax')
      out.push({ t: 'num', v: Number(text) })
      i = j
    } else if ((c === '*' || c === '/') && src[i + 1] === c) {
      out.push({ t: 'op', v: c + c })
      i += 2
    } else {
      out.push({ t: 'op', v: c })
      i++
    }
  }
  return out
}

/** Evaluate an arithmetic expression the way Python's eval would (for this character set). */
export function evalArithmetic(src: string): number {
  const toks = tokenize(src)
  let k = 0
  const peek = () => toks[k]
  const isOp = (v: string) => peek()?.t === 'op' && peek()?.v === v
  const expr = (): number => {
    let v = term()
    while (isOp('+') || isOp('-')) {
      const op = (toks[k++] as { v: string }).v
      const r = term()
      v = op === '+' ? v + r : v - r
    }
    return v
  }
  const term = (): number => {
    let v = factor()
    while (isOp('*') || isOp('/') || isOp('//')) {
      const op = (toks[k++] as { v: string }).v
      const r = factor()
      if (op === '*') v *= r
      else {
        if (r === 0) throw new Error('division by zero')
        v = op === '/' ? v / r : Math.floor(v / r)
      }
    }
    return v
  }
  const factor = (): number => {
    if (isOp('+')) {
      k++
      return factor()
    }
    if (isOp('-')) {
      k++
      return -factor()
    }
    return power()
  }
  const power = (): number => {
    const base = atom()
    if (isOp('**')) {
      k++
      const e = factor()
      if (base === 0 && e < 0) throw new Error('0.0 cannot be raised to a negative power')
      return base ** e
    }
    return base
  }
  const atom = (): number => {
    const t = toks[k++]
    if (!t) throw new Error('invalid syntax')
    if (t.t === 'num') return t.v
    if (t.v === '(') {
      const v = expr()
      if (!isOp(')')) throw new Error("'(' was never closed")
      k++
      return v
    }
    throw new Error('invalid syntax')
  }
  const v = expr()
  if (k !== toks.length) throw new Error('invalid syntax')
  return v
}

export function calculateTool<S>(): ToolDef<S> {
  return {
    name: 'calculate',
    kind: 'generic',
    description: 'Calculate the result of a mathematical expression.',
    params: {
      expression: p(
        str(
          "The mathematical expression to calculate, such as '2 + 2'. The expression can contain numbers, operators (+, -, *, /), parentheses, and spaces.",
        ),
      ),
    },
    run: (_s, a) => {
      const e = a.expression as string
      if (!/^[0-9+\-*/(). ]*$/.test(e)) throw new Error('Invalid characters in expression')
      const v = evalArithmetic(e)
      if (!Number.isFinite(v)) throw new Error('result is not finite')
      return pyFloatRepr(pyRound(v, 2))
    },
  }
}
