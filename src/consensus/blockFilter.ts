import { createRequire } from "node:module"
import { Either } from "effect"
import type { Block } from "../schema/block.js"
import { Reader, varintSize, Writer } from "../schema/codec.js"
import { DecodeError } from "../schema/DecodeError.js"
import { toHex } from "../schema/hex.js"
import { MAX_CFILTER_BYTES } from "../schema/wire.js"
import { sha256d } from "./hash.js"

/**
 * Compact block filters (BIP158's Golomb-coded sets, issue 9): a full node commits to the items of
 * each block in a filter of about 20 bits an item, and a light node asks whether any of its own items
 * is in a block without downloading it. False positives happen with probability 1/M per query item;
 * false negatives never. Pure: no clock, randomness or I/O.
 *
 * Our basic filter's items (fibercoin outputs pay an x-only key; there are no scripts): every
 * output's 32-byte key (`keyItem`), and every non-coinbase input's spent outpoint (`outpointItem`:
 * txid ‖ index u32 LE), without duplicates.
 */

/** FILTER_P is the Golomb-Rice parameter: remainders of P bits (BIP158's basic filter). */
export const FILTER_P = 19
/** FILTER_M is the inverse false-positive rate: items hash into [0, N·M) (BIP158's basic filter). */
export const FILTER_M = 784_931
/** MAX_FILTER_BYTES caps one filter: the wire's cap (MAX_CFILTER_BYTES, about 7× the largest block's filter). */
export const MAX_FILTER_BYTES = MAX_CFILTER_BYTES

/** GcsParams are a Golomb-coded set's parameters: remainders of `p` bits, items hashed into [0, N·m). */
export interface GcsParams {
  readonly p: number
  readonly m: number
}

/** BASIC_FILTER is BIP158's basic filter type (0): P = 19, M = 784931. */
export const BASIC_FILTER: GcsParams = { p: FILTER_P, m: FILTER_M }

/** ZERO_FILTER_HEADER is the previous filter header of the genesis block (BIP157). */
export const ZERO_FILTER_HEADER: Uint8Array = new Uint8Array(32)

/** SipHash is the part of bcrypto's siphash module we call: SipHash-2-4 of `data`, as [hi, lo] int32s. */
interface SipHash {
  readonly siphash: (data: Buffer, key: Buffer) => [number, number]
}

const isSipHash = (mod: unknown): mod is SipHash =>
  typeof mod === "object" && mod !== null && "siphash" in mod && typeof mod.siphash === "function"

const sip: SipHash = (() => {
  const mod: unknown = createRequire(import.meta.url)("bcrypto/lib/siphash")
  if (!isSipHash(mod)) throw new Error("bcrypto/lib/siphash has no siphash function")
  return mod
})()

const asBuffer = (u: Uint8Array): Buffer =>
  Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength)

/** keyItem is the filter item of an output paying `pubkey` (the 32-byte x-only key itself). */
export const keyItem = (pubkey: Uint8Array): Uint8Array => new Uint8Array(pubkey)

/** outpointItem is the filter item of a spent outpoint: txid 32 ‖ index u32 little-endian. */
export const outpointItem = (txid: Uint8Array, index: number): Uint8Array => {
  const item = new Uint8Array(36)
  item.set(txid, 0)
  new DataView(item.buffer).setUint32(32, index >>> 0, true)
  return item
}

/**
 * blockItems are the basic filter's items of `block`, without duplicates: every output's key and
 * every non-coinbase input's outpoint (the first transaction is the coinbase).
 */
export const blockItems = (block: Block): ReadonlyArray<Uint8Array> => {
  const seen = new Map<string, Uint8Array>()
  const add = (item: Uint8Array) => {
    const key = toHex(item)
    if (!seen.has(key)) seen.set(key, item)
  }
  block.txs.forEach((tx, i) => {
    for (const out of tx.outputs) add(keyItem(out.pubkey))
    if (i > 0) for (const input of tx.inputs) add(outpointItem(input.prevout.txid, input.prevout.index))
  })
  return [...seen.values()]
}

/** sipKey is BIP158's SipHash key: the first 16 bytes of the block hash (k0, k1 little-endian). */
const sipKey = (blockHash: Uint8Array): Buffer => Buffer.from(blockHash.subarray(0, 16))

/**
 * hashToRange maps an item to [0, F) as BIP158: the 64-bit SipHash times F, keeping the high 64 bits
 * of the 128-bit product (fast range reduction, no modulo bias worth counting). F < 2^53 here, so
 * the result is an exact Number.
 */
const hashToRange = (item: Uint8Array, key: Buffer, f: bigint): number => {
  const [hi, lo] = sip.siphash(asBuffer(item), key)
  const h = (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0)
  return Number((h * f) >> 64n)
}

/** hashedSet is the sorted, range-mapped values of `items` for a filter of `n` elements. */
const hashedSet = (items: ReadonlyArray<Uint8Array>, key: Buffer, n: number, m: number): Array<number> => {
  const f = BigInt(n) * BigInt(m)
  const values = items.map((item) => hashToRange(item, key, f))
  return values.sort((a, b) => a - b)
}

/**
 * encodeGcs codes the distinct `items` as a Golomb-coded set keyed by `blockHash`: CompactSize N,
 * then the sorted deltas, each as its quotient (delta >> P) in unary (ones closed by a zero) and its P
 * low bits, most significant bit first, padded with zeros to a byte. No items: the one byte 0x00.
 * The caller removes duplicates (BIP158 filters are sets).
 */
export const encodeGcs = (
  items: ReadonlyArray<Uint8Array>,
  blockHash: Uint8Array,
  params: GcsParams = BASIC_FILTER,
): Uint8Array => {
  const { p } = params
  const TWO_P = 2 ** p
  const n = items.length
  const values = hashedSet(items, sipKey(blockHash), n, params.m)
  let bits = 0
  let last = 0
  for (const v of values) {
    bits += Math.floor((v - last) / TWO_P) + 1 + p
    last = v
  }
  const head = varintSize(n)
  const w = new Writer(head)
  w.varint(n)
  const out = new Uint8Array(head + Math.ceil(bits / 8))
  out.set(w.finish(), 0)
  let bit = head * 8
  const put1 = () => {
    out[bit >>> 3]! |= 0x80 >>> (bit & 7)
    bit++
  }
  last = 0
  for (const v of values) {
    const delta = v - last
    last = v
    const q = Math.floor(delta / TWO_P)
    for (let i = 0; i < q; i++) put1()
    bit++ // the zero closing the unary quotient
    const r = delta % TWO_P
    for (let i = p - 1; i >= 0; i--) {
      if (Math.floor(r / 2 ** i) % 2 === 1) put1()
      else bit++
    }
  }
  return out
}

/**
 * buildFilter is the basic filter of `block` (its items: `blockItems`), keyed by `blockHash`; an
 * empty set is the one byte 0x00.
 */
export const buildFilter = (block: Block, blockHash: Uint8Array): Uint8Array =>
  encodeGcs(blockItems(block), blockHash)

/**
 * Gcs walks a filter's values in order (`openGcs`). Its bounds: N may claim no more elements than the
 * remaining bits can hold at P + 1 bits each (so a hostile N allocates nothing), a unary run stops
 * at the end of the bytes, and at most 7 zero padding bits may follow the last element.
 */
interface Gcs {
  readonly n: number
  /** next value, or throws DecodeError when the bits run out */
  readonly next: () => number
  /** end checks that only zero padding (< 8 bits) is left */
  readonly end: () => void
}

const openGcs = (filter: Uint8Array, params: GcsParams): Gcs => {
  const { p } = params
  const TWO_P = 2 ** p
  if (filter.length > MAX_FILTER_BYTES) {
    throw new DecodeError({ reason: "length-exceeds-cap", what: "filter", offset: 0 })
  }
  const r = new Reader(filter)
  const n = r.varint("filter.n", Number.MAX_SAFE_INTEGER)
  const totalBits = filter.length * 8
  let bit = r.pos * 8
  if (n * (p + 1) > totalBits - bit) {
    throw new DecodeError({ reason: "length-exceeds-input", what: "filter.n", offset: 0 })
  }
  const fail = (reason: DecodeError["reason"], what: string): never => {
    throw new DecodeError({ reason, what, offset: bit >>> 3 })
  }
  let last = 0
  return {
    n,
    next: () => {
      let q = 0
      for (;;) {
        if (bit >= totalBits) fail("truncated", "filter.quotient")
        const b = (filter[bit >>> 3]! >>> (7 - (bit & 7))) & 1
        bit++
        if (b === 0) break
        q++
      }
      if (bit + p > totalBits) fail("truncated", "filter.remainder")
      let r = 0
      for (let i = 0; i < p; i++) {
        r = r * 2 + ((filter[bit >>> 3]! >>> (7 - (bit & 7))) & 1)
        bit++
      }
      last += q * TWO_P + r
      return last
    },
    end: () => {
      if (totalBits - bit >= 8) fail("trailing-bytes", "filter")
      for (; bit < totalBits; bit++) {
        if ((filter[bit >>> 3]! >>> (7 - (bit & 7))) & 1) fail("invalid-value", "filter.padding")
      }
    },
  }
}

const catchDecode = <A>(f: () => A): Either.Either<A, DecodeError> => {
  try {
    return Either.right(f())
  } catch (e) {
    if (e instanceof DecodeError) return Either.left(e)
    throw e
  }
}

/**
 * decodeGcsValues decodes a whole filter into its sorted values (tests and checks); a malformed
 * filter (claimed N beyond its bits, truncated, trailing or non-zero padding bits, over
 * MAX_FILTER_BYTES) is a DecodeError.
 */
export const decodeGcsValues = (
  filter: Uint8Array,
  params: GcsParams = BASIC_FILTER,
): Either.Either<ReadonlyArray<number>, DecodeError> =>
  catchDecode(() => {
    const gcs = openGcs(filter, params)
    const values: Array<number> = []
    for (let i = 0; i < gcs.n; i++) values.push(gcs.next())
    gcs.end()
    return values
  })

/**
 * matchAny tells whether any of `items` is (probably: false positives at 1/M per item) in the filter
 * of the block `blockHash`; never a false negative. One pass over the filter against the sorted
 * hashed items, reading the whole filter even after a match. A malformed filter (see
 * `decodeGcsValues`) answers true: it can never hide a block, so the caller fetches the block,
 * computes its filter and finds the liar, rather than skipping a block on a bad peer's word.
 */
export const matchAny = (
  filter: Uint8Array,
  blockHash: Uint8Array,
  items: ReadonlyArray<Uint8Array>,
  params: GcsParams = BASIC_FILTER,
): boolean =>
  Either.getOrElse(
    catchDecode(() => {
      const gcs = openGcs(filter, params)
      const wanted = gcs.n === 0 ? [] : hashedSet(items, sipKey(blockHash), gcs.n, params.m)
      let j = 0
      let matched = false
      for (let i = 0; i < gcs.n; i++) {
        const v = gcs.next()
        if (matched) continue
        while (j < wanted.length && wanted[j]! < v) j++
        if (j < wanted.length && wanted[j] === v) matched = true
      }
      gcs.end()
      return matched
    }),
    () => true,
  )

/** filterHash is a filter's hash: sha256d of its bytes (BIP157). */
export const filterHash = (filter: Uint8Array): Uint8Array => sha256d(filter)

/**
 * filterHeader chains filters as BIP157: sha256d(filterHash ‖ prevHeader), the genesis block's
 * `prevHeader` being ZERO_FILTER_HEADER (32 zero bytes). A light node checks a peer's filters against
 * the header chain it got (and compared across peers) before trusting a "no match".
 */
export const filterHeader = (hash: Uint8Array, prevHeader: Uint8Array): Uint8Array => {
  const buf = new Uint8Array(64)
  buf.set(hash, 0)
  buf.set(prevHeader, 32)
  return sha256d(buf)
}
