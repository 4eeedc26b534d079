/**
 * A small WebAssembly binary writer: just what the generated kernels next to it need (one memory, i32
 * and v128 locals, structured control flow, the i32 and SIMD instructions of SHA-256). Writing the
 * binary from TypeScript keeps the kernel free of a compiler toolchain: `npm ci && npm run build` needs
 * nothing beyond the npm registry, and the bytes are a pure function of this source.
 * Encoding: the WebAssembly core specification 2.0, section 5 (binary format), and the fixed-width SIMD
 * proposal (opcodes under the 0xfd prefix).
 */

/** ValType is a value type's binary code: i32 (0x7f) or v128 (0x7b). */
export type ValType = 0x7f | 0x7b

/** I32 is the i32 value type. */
export const I32: ValType = 0x7f
/** V128 is the SIMD value type. */
export const V128: ValType = 0x7b

/** uleb encodes an unsigned integer as LEB128. */
export const uleb = (n: number): Array<number> => {
  const out: Array<number> = []
  let v = n >>> 0
  do {
    const byte = v & 0x7f
    v >>>= 7
    out.push(v === 0 ? byte : byte | 0x80)
  } while (v !== 0)
  return out
}

/** sleb encodes a 32-bit integer (taken as signed: i32.const's immediate) as signed LEB128. */
export const sleb = (n: number): Array<number> => {
  const out: Array<number> = []
  let v = n | 0
  while (true) {
    const byte = v & 0x7f
    v >>= 7
    const done = (v === 0 && (byte & 0x40) === 0) || (v === -1 && (byte & 0x40) !== 0)
    out.push(done ? byte : byte | 0x80)
    if (done) return out
  }
}

/** Local is a function's parameter or local variable; its index is fixed when the body is encoded. */
export interface Local {
  readonly type: ValType
  /** parameters: their position; locals: the n-th local of their type */
  readonly n: number
  readonly param: boolean
}

/** Piece is one element of a body under construction: a byte, or a local whose index is not yet known. */
export type Piece = number | Local

/** op holds the instruction encodings the kernels use (core opcodes, then SIMD under the 0xfd prefix). */
export const op = {
  block: [0x02, 0x40],
  loop: [0x03, 0x40],
  if: [0x04, 0x40],
  end: [0x0b],
  br: (depth: number): Array<number> => [0x0c, ...uleb(depth)],
  brIf: (depth: number): Array<number> => [0x0d, ...uleb(depth)],
  return: [0x0f],
  call: (index: number): Array<number> => [0x10, ...uleb(index)],
  localGet: (l: Local): Array<Piece> => [0x20, l],
  localSet: (l: Local): Array<Piece> => [0x21, l],
  /** i32LoadAt pushes the word at byte address `offset` (address operand 0, alignment 4). */
  i32LoadAt: (offset: number): Array<number> => [0x41, 0, 0x28, 2, ...uleb(offset)],
  /** i32Store stores to the address operand plus `offset` (alignment 4). */
  i32Store: (offset: number): Array<number> => [0x36, 2, ...uleb(offset)],
  i32Const: (n: number): Array<number> => [0x41, ...sleb(n)],
  i32LtU: [0x49],
  i32GtU: [0x4b],
  i32GeU: [0x4f],
  i32Add: [0x6a],
  i32And: [0x71],
  i32Or: [0x72],
  i32Xor: [0x73],
  i32ShrU: [0x76],
  i32Rotr: [0x78],
  v128Const: (lanes: ReadonlyArray<number>): Array<number> => {
    const bytes: Array<number> = [0xfd, 0x0c]
    for (const lane of lanes) bytes.push(lane & 0xff, (lane >>> 8) & 0xff, (lane >>> 16) & 0xff, lane >>> 24)
    return bytes
  },
  i8x16Shuffle: (lanes: ReadonlyArray<number>): Array<number> => [0xfd, 0x0d, ...lanes],
  i32x4Splat: [0xfd, 0x11],
  i32x4LeU: [0xfd, 0x3e],
  v128And: [0xfd, 0x4e],
  v128Or: [0xfd, 0x50],
  v128Xor: [0xfd, 0x51],
  v128Bitselect: [0xfd, 0x52],
  v128AnyTrue: [0xfd, 0x53],
  i32x4Shl: [0xfd, 0xab, 0x01],
  i32x4ShrU: [0xfd, 0xad, 0x01],
  i32x4Add: [0xfd, 0xae, 0x01],
} as const

/**
 * FunctionBuilder collects one function: its signature, its locals (allocated on demand by type) and its
 * code. `encode` lays the locals out after the parameters, i32 first, then v128.
 */
export class FunctionBuilder {
  readonly code: Array<Piece> = []
  private readonly counts = { i32: 0, v128: 0 }

  constructor(
    readonly params: ReadonlyArray<ValType>,
    readonly results: ReadonlyArray<ValType>,
  ) {}

  /** param is the i-th parameter. */
  param(i: number): Local {
    return { type: this.params[i]!, n: i, param: true }
  }

  /** local allocates a fresh local of `type`. */
  local(type: ValType): Local {
    const key = type === I32 ? "i32" : "v128"
    return { type, n: this.counts[key]++, param: false }
  }

  /** emit appends instructions. */
  emit(...pieces: ReadonlyArray<ReadonlyArray<Piece>>): void {
    for (const p of pieces) for (const x of p) this.code.push(x)
  }

  /** encode returns the function body: local declarations, code, `end`. */
  encode(): Array<number> {
    const base = this.params.length
    const i32s = this.counts.i32
    const index = (l: Local): number => (l.param ? l.n : l.type === I32 ? base + l.n : base + i32s + l.n)
    const groups = [
      [this.counts.i32, I32],
      [this.counts.v128, V128],
    ].filter(([count]) => count! > 0)
    const out = uleb(groups.length)
    for (const [count, type] of groups) append(out, [...uleb(count!), type!])
    for (const p of this.code) {
      if (typeof p === "number") out.push(p)
      else append(out, uleb(index(p)))
    }
    append(out, op.end)
    return out
  }
}

/** append pushes `src` onto `dst` without spreading (bodies are too long for argument lists). */
const append = (dst: Array<number>, src: ReadonlyArray<number>): void => {
  for (let i = 0; i < src.length; i++) dst.push(src[i]!)
}

const section = (out: Array<number>, id: number, contents: ReadonlyArray<number>): void => {
  out.push(id)
  append(out, uleb(contents.length))
  append(out, contents)
}

const vector = (items: ReadonlyArray<ReadonlyArray<number>>): Array<number> => {
  const out = uleb(items.length)
  for (const item of items) append(out, item)
  return out
}

const name = (s: string): Array<number> => {
  const bytes = [...new TextEncoder().encode(s)]
  return [...uleb(bytes.length), ...bytes]
}

/** ExportedFunction is a function of the module and the name it is exported under. */
export interface ExportedFunction {
  readonly name: string
  readonly body: FunctionBuilder
}

/**
 * encodeModule writes a module with one memory of `memoryPages` 64 KiB pages (exported as "memory") and
 * `functions` (function i has index i, for `call`), each exported under its name.
 */
export const encodeModule = (memoryPages: number, functions: ReadonlyArray<ExportedFunction>): Uint8Array => {
  const types = functions.map((f) => [
    0x60,
    ...uleb(f.body.params.length),
    ...f.body.params,
    ...uleb(f.body.results.length),
    ...f.body.results,
  ])
  const exports = [
    [...name("memory"), 0x02, 0],
    ...functions.map((f, i) => [...name(f.name), 0x00, ...uleb(i)]),
  ]
  const bodies = functions.map((f) => {
    const body = f.body.encode()
    const sized = uleb(body.length)
    append(sized, body)
    return sized
  })
  const out = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]
  section(out, 1, vector(types))
  section(out, 3, vector(functions.map((_, i) => uleb(i))))
  section(out, 5, vector([[0x00, ...uleb(memoryPages)]]))
  section(out, 7, vector(exports))
  section(out, 10, vector(bodies))
  return Uint8Array.from(out)
}
