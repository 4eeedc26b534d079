/**
 * The header-hash kernel: SHA-256d of an 80-byte block header for many nonces, generated as a
 * WebAssembly module (SIMD: four nonces per instruction) from the SHA-256 definition below (FIPS 180-4).
 *
 * The generator evaluates SHA-256 over symbolic words of three kinds, and emits each operation where
 * its operands allow:
 * - constants (round constants, padding, the initial state) are folded in TypeScript;
 * - uniform words, the same for every nonce of a template (the midstate, the merkle-root tail, time and
 *   bits), become scalar code in the prologue of `scan`, run once per call;
 * - lane words, which depend on the nonce, become v128 code in `scan`'s loop.
 * So the first three rounds of the second block, the schedule words that depend only on the template,
 * and everything the padding zeroes cost nothing per nonce: the precomputation Bitcoin miners do by hand
 * falls out of constant propagation. Only operations some output needs are emitted.
 *
 * Exports of the module (memory layout in `kernelLayout`; words are numbers, SHA-256's big-endian
 * reading of the bytes already applied):
 * - `compress()`: the state after compressing the 16 words at `block` from the initial state, stored
 *   at `midstate` (the midstate of a header's first 64 bytes).
 * - `hash(nonce)`: sha256d of the header given by `midstate`, `tail` (the 3 words of bytes 64..75) and
 *   `nonce`, stored as 8 words at `digest`.
 * - `check(nonce)`: 1 when that hash, read big-endian, is at most the 8 words at `target`, else 0.
 * - `scan(start, count)`: the first i < count such that nonce start + i passes `check`, or -1.
 */
import { encodeModule, FunctionBuilder, I32, type Local, op, type Piece, V128, type ValType } from "./wasm.js"

/** kernelLayout is where the kernel's inputs and outputs live in its memory (byte offsets). */
export const kernelLayout = {
  /** 8 words: the midstate `hash`, `check` and `scan` start from; `compress` writes it */
  midstate: 0,
  /** 3 words: header bytes 64..75 (the merkle root's last 4 bytes, time, bits) */
  tail: 32,
  /** 8 words: the target, most significant word first */
  target: 64,
  /** 8 words: the digest `hash` writes, in output order */
  digest: 96,
  /** 16 words: the block `compress` reads */
  block: 128,
} as const

/** SHA-256 round constants (FIPS 180-4, 4.2.2). */
const K = [
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
  0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
  0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
  0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
  0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
  0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
  0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
  0xc67178f2,
]

/** SHA-256 initial hash value (FIPS 180-4, 5.3.3). */
const IV = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]

// ---------------------------------------------------------------------------------------------------
// Symbolic words

type Place = "prologue" | "loop"

type NodeOp =
  | { readonly kind: "leaf"; readonly code: ReadonlyArray<Piece> }
  | { readonly kind: "add" | "xor" | "and" | "or" | "leU" }
  | { readonly kind: "rotr" | "shr"; readonly bits: number }
  | { readonly kind: "bitselect" | "bswap" | "splat" }

/** Node is an operation whose result lives in a local: a scalar i32 (uniform) or a v128 of 4 lanes. */
interface Node {
  readonly op: NodeOp
  readonly args: ReadonlyArray<Val>
  readonly type: ValType
  readonly place: Place
  live: boolean
  local: Local | undefined
}

/** Val is a symbolic 32-bit word: known now, or computed by a node. */
type Val = { readonly kind: "const"; readonly n: number } | { readonly kind: "node"; readonly node: Node }

const konst = (n: number): Val => ({ kind: "const", n: n >>> 0 })
const isVec = (v: Val): boolean => v.kind === "node" && v.node.type === V128
const rotr32 = (x: number, n: number): number => ((x >>> n) | (x << (32 - n))) >>> 0

type Assoc = "add" | "xor" | "and" | "or"
const fold: Record<Assoc, (a: number, b: number) => number> = {
  add: (a, b) => (a + b) >>> 0,
  xor: (a, b) => (a ^ b) >>> 0,
  and: (a, b) => (a & b) >>> 0,
  or: (a, b) => (a | b) >>> 0,
}
const identity: Record<Assoc, number> = { add: 0, xor: 0, and: 0xffffffff, or: 0 }

/** BSWAP_LANES reverses the bytes of each 32-bit lane (a nonce is little-endian, SHA-256 reads big-endian). */
const BSWAP_LANES = [3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12]

/**
 * Graph builds one function's symbolic computation, folding constants as it goes, then emits the live
 * nodes in creation order: uniform and splat nodes into the prologue, lane nodes into the loop body.
 */
class Graph {
  private readonly nodes: Array<Node> = []
  private readonly splats = new Map<Node | number, Val>()

  private node(op: NodeOp, args: ReadonlyArray<Val>, type: ValType, place?: Place): Val {
    const inLoop = args.some((a) => a.kind === "node" && a.node.place === "loop")
    const node: Node = {
      op,
      args,
      type,
      place: place ?? (inLoop ? "loop" : "prologue"),
      live: false,
      local: undefined,
    }
    this.nodes.push(node)
    return { kind: "node", node }
  }

  /** leaf is a word the code pushes: a load, a parameter, the loop's nonce vector. */
  leaf(code: ReadonlyArray<Piece>, type: ValType, place: Place): Val {
    return this.node({ kind: "leaf", code }, [], type, place)
  }

  /** vec is `v` as 4 lanes: itself, or a splat made once in the prologue. */
  private vec(v: Val): Val {
    if (isVec(v)) return v
    const key = v.kind === "const" ? v.n : v.node
    let splat = this.splats.get(key)
    if (splat === undefined) {
      splat =
        v.kind === "const"
          ? this.leaf(op.v128Const([v.n, v.n, v.n, v.n]), V128, "prologue")
          : this.node({ kind: "splat" }, [v], V128, "prologue")
      this.splats.set(key, splat)
    }
    return splat
  }

  private binary(kind: Assoc, x: Val, y: Val): Val {
    if (x.kind === "const" && y.kind === "const") return konst(fold[kind](x.n, y.n))
    if (isVec(x) || isVec(y)) return this.node({ kind }, [this.vec(x), this.vec(y)], V128)
    return this.node({ kind }, [x, y], I32)
  }

  /**
   * nary combines words with an associative, commutative operation: constants folded, identities
   * dropped, uniform words first (in the prologue), then lane words left to right.
   */
  nary(kind: Assoc, xs: ReadonlyArray<Val>): Val {
    let c = identity[kind]
    const uniform: Array<Val> = []
    const lanes: Array<Val> = []
    for (const x of xs) {
      if (x.kind === "const") c = fold[kind](c, x.n)
      else (isVec(x) ? lanes : uniform).push(x)
    }
    if (kind === "and" && c === 0) return konst(0)
    if (kind === "or" && c === 0xffffffff) return konst(c)
    let acc: Val | undefined
    for (const u of uniform) acc = acc === undefined ? u : this.binary(kind, acc, u)
    if (c !== identity[kind] || (acc === undefined && lanes.length === 0)) {
      acc = acc === undefined ? konst(c) : this.binary(kind, acc, konst(c))
    }
    for (const l of lanes) acc = acc === undefined ? l : this.binary(kind, acc, l)
    return acc!
  }

  add(...xs: ReadonlyArray<Val>): Val {
    return this.nary("add", xs)
  }

  xor(...xs: ReadonlyArray<Val>): Val {
    return this.nary("xor", xs)
  }

  and(...xs: ReadonlyArray<Val>): Val {
    return this.nary("and", xs)
  }

  or(...xs: ReadonlyArray<Val>): Val {
    return this.nary("or", xs)
  }

  rotr(x: Val, bits: number): Val {
    if (x.kind === "const") return konst(rotr32(x.n, bits))
    return this.node({ kind: "rotr", bits }, [x], x.node.type)
  }

  shr(x: Val, bits: number): Val {
    if (x.kind === "const") return konst(x.n >>> bits)
    return this.node({ kind: "shr", bits }, [x], x.node.type)
  }

  /** choose takes `a`'s bits where `mask` is 1 and `b`'s where it is 0. */
  choose(mask: Val, a: Val, b: Val): Val {
    if (isVec(mask) || isVec(a) || isVec(b)) {
      return this.node({ kind: "bitselect" }, [this.vec(a), this.vec(b), this.vec(mask)], V128)
    }
    return this.xor(this.and(this.xor(a, b), mask), b)
  }

  /** bswap reverses the bytes of a word. */
  bswap(x: Val): Val {
    if (isVec(x)) return this.node({ kind: "bswap" }, [x], V128)
    return this.or(
      this.and(this.rotr(x, 8), konst(0xff00ff00)),
      this.and(this.rotr(x, 24), konst(0x00ff00ff)),
    )
  }

  /** leU compares lanes as unsigned words: all ones where x ≤ y. */
  leU(x: Val, y: Val): Val {
    return this.node({ kind: "leU" }, [this.vec(x), this.vec(y)], V128)
  }

  /** get pushes a word's value (as i32; constants and uniform nodes only where a scalar is wanted). */
  get(v: Val): Array<Piece> {
    if (v.kind === "const") return op.i32Const(v.n)
    return op.localGet(v.node.local!)
  }

  /** emit marks what `roots` need and returns the code computing it, split by place. */
  emit(
    fn: FunctionBuilder,
    roots: ReadonlyArray<Val>,
  ): { readonly prologue: Array<Piece>; readonly loop: Array<Piece> } {
    const stack = roots.flatMap((r) => (r.kind === "node" ? [r.node] : []))
    while (stack.length > 0) {
      const n = stack.pop()!
      if (n.live) continue
      n.live = true
      for (const a of n.args) if (a.kind === "node") stack.push(a.node)
    }
    const out = { prologue: [] as Array<Piece>, loop: [] as Array<Piece> }
    for (const n of this.nodes) {
      if (!n.live) continue
      const code = out[n.place]
      const vec = n.type === V128
      const args = n.args.map((a) => this.get(a))
      const o = n.op
      switch (o.kind) {
        case "leaf":
          code.push(...o.code)
          break
        case "add":
          code.push(...args[0]!, ...args[1]!, ...(vec ? op.i32x4Add : op.i32Add))
          break
        case "xor":
          code.push(...args[0]!, ...args[1]!, ...(vec ? op.v128Xor : op.i32Xor))
          break
        case "and":
          code.push(...args[0]!, ...args[1]!, ...(vec ? op.v128And : op.i32And))
          break
        case "or":
          code.push(...args[0]!, ...args[1]!, ...(vec ? op.v128Or : op.i32Or))
          break
        case "leU":
          code.push(...args[0]!, ...args[1]!, ...op.i32x4LeU)
          break
        case "rotr":
          if (vec) {
            code.push(...args[0]!, ...op.i32Const(o.bits), ...op.i32x4ShrU)
            code.push(...args[0]!, ...op.i32Const(32 - o.bits), ...op.i32x4Shl, ...op.v128Or)
          } else {
            code.push(...args[0]!, ...op.i32Const(o.bits), ...op.i32Rotr)
          }
          break
        case "shr":
          code.push(...args[0]!, ...op.i32Const(o.bits), ...(vec ? op.i32x4ShrU : op.i32ShrU))
          break
        case "bitselect":
          code.push(...args[0]!, ...args[1]!, ...args[2]!, ...op.v128Bitselect)
          break
        case "bswap":
          code.push(...args[0]!, ...args[0]!, ...op.i8x16Shuffle(BSWAP_LANES))
          break
        case "splat":
          code.push(...args[0]!, ...op.i32x4Splat)
          break
      }
      n.local = fn.local(n.type)
      code.push(...op.localSet(n.local))
    }
    return out
  }
}

// ---------------------------------------------------------------------------------------------------
// SHA-256 over symbolic words

const bigSigma0 = (g: Graph, x: Val): Val => g.xor(g.rotr(x, 2), g.rotr(x, 13), g.rotr(x, 22))
const bigSigma1 = (g: Graph, x: Val): Val => g.xor(g.rotr(x, 6), g.rotr(x, 11), g.rotr(x, 25))
const smallSigma0 = (g: Graph, x: Val): Val => g.xor(g.rotr(x, 7), g.rotr(x, 18), g.shr(x, 3))
const smallSigma1 = (g: Graph, x: Val): Val => g.xor(g.rotr(x, 17), g.rotr(x, 19), g.shr(x, 10))

/** compress is SHA-256's compression function (FIPS 180-4, 6.2.2): `state` after one 16-word block. */
const compress = (g: Graph, state: ReadonlyArray<Val>, block: ReadonlyArray<Val>): Array<Val> => {
  const w = [...block]
  let [a, b, c, d, e, f, gg, h] = state as [Val, Val, Val, Val, Val, Val, Val, Val]
  for (let t = 0; t < 64; t++) {
    if (t >= 16) w[t] = g.add(smallSigma1(g, w[t - 2]!), w[t - 7]!, smallSigma0(g, w[t - 15]!), w[t - 16]!)
    // Ch(e, f, g) = f where e, else g; Maj(a, b, c) = b where a and c differ, else a
    const t1 = g.add(h, w[t]!, konst(K[t]!), bigSigma1(g, e), g.choose(e, f, gg))
    const t2 = g.add(bigSigma0(g, a), g.choose(g.xor(a, c), b, a))
    h = gg
    gg = f
    f = e
    e = g.add(d, t1)
    d = c
    c = b
    b = a
    a = g.add(t1, t2)
  }
  return [a, b, c, d, e, f, gg, h].map((v, i) => g.add(state[i]!, v))
}

const words = (g: Graph, offset: number, n: number): Array<Val> =>
  Array.from({ length: n }, (_, i) => g.leaf(op.i32LoadAt(offset + 4 * i), I32, "prologue"))

/**
 * headerDigest is sha256d of the header from the midstate: the second block (tail, nonce, padding for
 * 80 bytes = 640 bits), then the 32-byte digest with its padding (256 bits).
 */
const headerDigest = (g: Graph, nonce: Val): Array<Val> => {
  const midstate = words(g, kernelLayout.midstate, 8)
  const tail = words(g, kernelLayout.tail, 3)
  const zeros = (n: number) => Array.from({ length: n }, () => konst(0))
  const first = compress(g, midstate, [...tail, g.bswap(nonce), konst(0x80000000), ...zeros(10), konst(640)])
  return compress(g, IV.map(konst), [...first, konst(0x80000000), ...zeros(6), konst(256)])
}

const FN_COMPRESS = 0
const FN_HASH = 1
const FN_CHECK = 2

const compressFunction = (): FunctionBuilder => {
  const fn = new FunctionBuilder([], [])
  const g = new Graph()
  const out = compress(g, IV.map(konst), words(g, kernelLayout.block, 16))
  fn.emit(g.emit(fn, out).prologue)
  out.forEach((v, i) => {
    fn.emit(op.i32Const(0), g.get(v), op.i32Store(kernelLayout.midstate + 4 * i))
  })
  return fn
}

const hashFunction = (): FunctionBuilder => {
  const fn = new FunctionBuilder([I32], [])
  const g = new Graph()
  const digest = headerDigest(g, g.leaf(op.localGet(fn.param(0)), I32, "prologue"))
  fn.emit(g.emit(fn, digest).prologue)
  digest.forEach((v, i) => {
    fn.emit(op.i32Const(0), g.get(v), op.i32Store(kernelLayout.digest + 4 * i))
  })
  return fn
}

const checkFunction = (): FunctionBuilder => {
  const fn = new FunctionBuilder([I32], [I32])
  fn.emit(op.localGet(fn.param(0)), op.call(FN_HASH))
  for (let i = 0; i < 8; i++) {
    const pair = [...op.i32LoadAt(kernelLayout.digest + 4 * i), ...op.i32LoadAt(kernelLayout.target + 4 * i)]
    fn.emit(pair, op.i32LtU, op.if, op.i32Const(1), op.return, op.end)
    fn.emit(pair, op.i32GtU, op.if, op.i32Const(0), op.return, op.end)
  }
  fn.emit(op.i32Const(1))
  return fn
}

/**
 * scanFunction hashes 4 nonces per iteration and keeps only the lanes whose first digest word is at
 * most the target's first word; those few (or ties) are settled exactly by `check`, in nonce order.
 */
const scanFunction = (): FunctionBuilder => {
  const fn = new FunctionBuilder([I32, I32], [I32])
  const start = fn.param(0)
  const count = fn.param(1)
  const nonces = fn.local(V128)
  const i = fn.local(I32)
  const g = new Graph()
  const digest = headerDigest(g, g.leaf(op.localGet(nonces), V128, "loop"))
  const candidates = g.leU(digest[0]!, g.leaf(op.i32LoadAt(kernelLayout.target), I32, "prologue"))
  const code = g.emit(fn, [candidates])
  fn.emit(code.prologue)
  fn.emit(op.localGet(start), op.i32x4Splat, op.v128Const([0, 1, 2, 3]), op.i32x4Add, op.localSet(nonces))
  fn.emit(op.block, op.loop)
  fn.emit(op.localGet(i), op.localGet(count), op.i32GeU, op.brIf(1))
  fn.emit(code.loop)
  fn.emit(g.get(candidates), op.v128AnyTrue, op.if)
  for (let lane = 0; lane < 4; lane++) {
    const index = [...op.localGet(i), ...op.i32Const(lane), ...op.i32Add]
    fn.emit(index, op.localGet(count), op.i32LtU, op.if)
    fn.emit(op.localGet(start), index, op.i32Add, op.call(FN_CHECK), op.if, index, op.return, op.end)
    fn.emit(op.end)
  }
  fn.emit(op.end)
  fn.emit(op.localGet(nonces), op.v128Const([4, 4, 4, 4]), op.i32x4Add, op.localSet(nonces))
  fn.emit(op.localGet(i), op.i32Const(4), op.i32Add, op.localSet(i))
  fn.emit(op.br(0), op.end, op.end)
  fn.emit(op.i32Const(-1))
  return fn
}

/** kernelModuleBytes generates the kernel's WebAssembly binary (deterministic; a few milliseconds). */
export const kernelModuleBytes = (): Uint8Array => {
  const functions = [
    { name: "compress", body: compressFunction() },
    { name: "hash", body: hashFunction() },
    { name: "check", body: checkFunction() },
    { name: "scan", body: scanFunction() },
  ]
  if (functions[FN_COMPRESS]!.name !== "compress" || functions[FN_CHECK]!.name !== "check") {
    throw new Error("kernel function indices out of order")
  }
  return encodeModule(1, functions)
}
