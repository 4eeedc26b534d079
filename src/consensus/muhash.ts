import * as crypto from "node:crypto"
import { Either } from "effect"
import { Writer } from "../schema/codec.js"
import { COIN_BYTES, type Coin, writeCoin } from "../schema/coin.js"
import { DecodeError } from "../schema/DecodeError.js"
import { sha256 } from "./hash.js"

/*
 * A multiset hash of the UTXO set, after Bitcoin Core's MuHash3072 (src/crypto/muhash.{h,cpp}):
 * every element maps to a number in the multiplicative group of integers modulo the prime
 * p = 2^3072 − 1103717; a set hashes to the product of its elements' numbers; removal multiplies by
 * the inverse. An additive (XOR or sum) multiset hash would be cheaper, but Wagner's generalized
 * birthday attack ("A Generalized Birthday Problem", CRYPTO 2002) finds a set of elements whose
 * hashes sum to any target in subexponential time, so a forged UTXO set could match a commitment.
 * The multiplicative version rests on the discrete logarithm in a 3072-bit group instead.
 *
 * Arithmetic is native BigInt. Values are kept fully reduced (0 ≤ x < p) at every step; reduction
 * uses p's special form (2^3072 ≡ c mod p, c = 1103717), not BigInt's `%`.
 */

/** NUM3072_BITS is the width of a group element, and NUM3072_BYTES its little-endian encoding. */
const NUM3072_BITS = 3072n
const NUM3072_BYTES = 384
const HEX_DIGITS = NUM3072_BYTES * 2

/** MAX_PRIME_DIFF is c in p = 2^3072 − c (Core's `MAX_PRIME_DIFF`): 2^3072 − c is the largest 3072-bit safe prime. */
const MAX_PRIME_DIFF = 1103717n

/** MASK_3072 is 2^3072 − 1: the low 3072 bits. */
const MASK_3072 = (1n << NUM3072_BITS) - 1n

/** MUHASH_PRIME is MuHash3072's modulus p = 2^3072 − 1103717 (Core's `Num3072` modulus). */
export const MUHASH_PRIME: bigint = (1n << NUM3072_BITS) - MAX_PRIME_DIFF

/** MUHASH_BYTES is the size of an encoded MuHash state: numerator ‖ denominator, 384 bytes each. */
export const MUHASH_BYTES = 2 * NUM3072_BYTES

/**
 * reduce returns x mod p for any x ≥ 0 by folding the bits above 3072 back in (x = hi·2^3072 + lo ≡
 * hi·c + lo), then one conditional subtraction: after the folds x < 2^3072 < 2p. A product of two
 * reduced values needs two or three folds.
 */
const reduce = (x: bigint): bigint => {
  while (x > MASK_3072) x = (x & MASK_3072) + (x >> NUM3072_BITS) * MAX_PRIME_DIFF
  return x >= MUHASH_PRIME ? x - MUHASH_PRIME : x
}

const mulMod = (a: bigint, b: bigint): bigint => reduce(a * b)

/**
 * invert returns a^(−1) mod p by the extended Euclidean algorithm (about 0.45 ms for a 3072-bit value,
 * ~35× cheaper than Fermat's a^(p−2) by square-and-multiply in BigInt; Core likewise uses a gcd, safegcd,
 * not an exponentiation). It equals a^(p−2) mod p, which the tests check. Not constant-time: the UTXO
 * set is public. 0 has no inverse; invert(0) returns 0 (only reachable if an element mapped to 0 mod p,
 * probability about 2^−3050 per element).
 */
const invert = (a: bigint): bigint => {
  let r0 = MUHASH_PRIME
  let r1 = a
  let s0 = 0n
  let s1 = 1n
  while (r1 !== 0n) {
    const q = r0 / r1
    const r2 = r0 - q * r1
    r0 = r1
    r1 = r2
    const s2 = s0 - q * s1
    s0 = s1
    s1 = s2
  }
  return s0 < 0n ? s0 + MUHASH_PRIME : s0
}

/** fromLE reads 384 little-endian bytes as a number (< 2^3072, not yet reduced). */
const fromLE = (bytes: Uint8Array): bigint => {
  const be = Buffer.from(bytes.subarray(0, NUM3072_BYTES)).reverse()
  return BigInt(`0x${be.toString("hex")}`)
}

/** writeLE writes a reduced number as 384 little-endian bytes at `offset` of `out`. */
const writeLE = (out: Uint8Array, offset: number, x: bigint): void => {
  const view = Buffer.from(out.buffer, out.byteOffset + offset, NUM3072_BYTES)
  view.write(x.toString(16).padStart(HEX_DIGITS, "0"), 0, NUM3072_BYTES, "hex")
  view.reverse()
}

/**
 * MuHash is a MuHash3072 accumulator (Core's `MuHash3072`): the set's hash is numerator / denominator
 * in the group mod p. Additions multiply the numerator and removals the denominator, so an update is one
 * multiplication and no inversion; `muhashFinalize` divides once. Both values are always reduced
 * (1 ≤ x < p). Two states for the same multiset can differ (e.g. {x}/{} and {x, y}/{y}); compare sets by
 * `muhashFinalize`, or normalize both first. Immutable: every operation returns a new state. The Chain
 * actor owns the UTXO set's state and persists it in its tip record with `encodeMuHash`.
 */
export interface MuHash {
  readonly numerator: bigint
  readonly denominator: bigint
}

/** MUHASH_EMPTY is the hash state of the empty set: 1/1 (Core's default-constructed `MuHash3072`). */
export const MUHASH_EMPTY: MuHash = { numerator: 1n, denominator: 1n }

/**
 * muhashElementNumber maps an element's bytes to a group element: SHAKE256 of the bytes with a
 * 384-byte output, read little-endian, reduced mod p. fibercoin's own mapping (about 3.5 µs); Core's
 * MuHash3072::ToNum3072 keys a ChaCha20 keystream with sha256(bytes) instead, which node:crypto does
 * not expose cheaply (createCipheriv costs ~10 µs per element). Values ≥ p (probability ~2^−3052) are
 * reduced, as Core's Multiply does. Pure; any fiber may call it.
 */
export const muhashElementNumber = (element: Uint8Array): bigint => {
  const digest = crypto.createHash("shake256", { outputLength: NUM3072_BYTES }).update(element).digest()
  digest.reverse()
  const x = BigInt(`0x${digest.toString("hex")}`)
  return x >= MUHASH_PRIME ? x - MUHASH_PRIME : x
}

const productOf = (acc: bigint, elements: ReadonlyArray<Uint8Array>): bigint => {
  for (const element of elements) acc = mulMod(acc, muhashElementNumber(element))
  return acc
}

/**
 * muhashAdd inserts each element (a multiset: inserting twice counts twice) into the numerator, one
 * multiplication per element (Core's MuHash3072::Insert). Multiplicative, not additive, so Wagner's
 * generalized birthday attack cannot assemble a colliding set. Pure; any fiber may call it.
 */
export const muhashAdd = (state: MuHash, elements: ReadonlyArray<Uint8Array>): MuHash =>
  elements.length === 0
    ? state
    : { numerator: productOf(state.numerator, elements), denominator: state.denominator }

/**
 * muhashRemove deletes each element by multiplying it into the denominator (Core's
 * MuHash3072::Remove); no inversion happens until `muhashFinalize`. Removing an element before it is
 * added is fine: the group is commutative, so only the net multiset matters. Pure; any fiber may call it.
 */
export const muhashRemove = (state: MuHash, elements: ReadonlyArray<Uint8Array>): MuHash =>
  elements.length === 0
    ? state
    : { numerator: state.numerator, denominator: productOf(state.denominator, elements) }

/**
 * muhashCombine is the hash of the union of two multisets (Core's MuHash3072 `*=`): numerators and
 * denominators multiply. For disjoint UTXO sets this is the set union (e.g. hashing shards in parallel).
 * Pure; any fiber may call it.
 */
export const muhashCombine = (a: MuHash, b: MuHash): MuHash => ({
  numerator: mulMod(a.numerator, b.numerator),
  denominator: mulMod(a.denominator, b.denominator),
})

/**
 * muhashDivide is the hash of `a` with the multiset `b` taken out (Core's MuHash3072 `/=`): a's numerator
 * times b's denominator over a's denominator times b's numerator. Pure; any fiber may call it.
 */
export const muhashDivide = (a: MuHash, b: MuHash): MuHash => ({
  numerator: mulMod(a.numerator, b.denominator),
  denominator: mulMod(a.denominator, b.numerator),
})

/**
 * muhashNormalize returns the same set's state with denominator 1: numerator × denominator⁻¹ (one
 * inversion, ~0.45 ms). Normalized states are canonical (equal sets give equal states and equal
 * `encodeMuHash` bytes) and finalize without an inversion. The encoding is 768 bytes either way, so
 * normalizing is optional: the Chain actor may store unnormalized states and normalize when it wants
 * canonical bytes. Pure; any fiber may call it.
 */
export const muhashNormalize = (state: MuHash): MuHash =>
  state.denominator === 1n
    ? state
    : { numerator: mulMod(state.numerator, invert(state.denominator)), denominator: 1n }

/**
 * muhashFinalize is the 32-byte set hash (`hash_serialized` of gettxoutsetinfo; Core's
 * MuHash3072::Finalize): sha256 of numerator / denominator mod p as 384 little-endian bytes. Costs one
 * inversion (~0.45 ms) unless the state is normalized. Pure; any fiber may call it.
 */
export const muhashFinalize = (state: MuHash): Uint8Array => {
  const out = new Uint8Array(NUM3072_BYTES)
  writeLE(out, 0, muhashNormalize(state).numerator)
  return sha256(out)
}

/**
 * encodeMuHash serializes a state as numerator ‖ denominator, 384 bytes little-endian each (Core's
 * MuHash3072 serialization), for the Chain actor's tip record. Not canonical per set unless the state
 * is normalized (see `muhashNormalize`).
 */
export const encodeMuHash = (state: MuHash): Uint8Array => {
  const out = new Uint8Array(MUHASH_BYTES)
  writeLE(out, 0, state.numerator)
  writeLE(out, NUM3072_BYTES, state.denominator)
  return out
}

/**
 * decodeMuHash parses `encodeMuHash`'s 768 bytes. It returns a DecodeError, never throws, for a wrong
 * length ("truncated" / "length-exceeds-cap") or a value that is not a reduced unit of the group
 * ("invalid-value": 0, or ≥ p; Core reduces overflowing values, fibercoin only ever writes reduced ones,
 * so such bytes mean corruption).
 */
export const decodeMuHash = (bytes: Uint8Array): Either.Either<MuHash, DecodeError> => {
  if (bytes.length < MUHASH_BYTES) {
    return Either.left(new DecodeError({ reason: "truncated", what: "muhash", offset: bytes.length }))
  }
  if (bytes.length > MUHASH_BYTES) {
    return Either.left(new DecodeError({ reason: "length-exceeds-cap", what: "muhash", offset: 0 }))
  }
  const numerator = fromLE(bytes.subarray(0, NUM3072_BYTES))
  if (numerator === 0n || numerator >= MUHASH_PRIME) {
    return Either.left(new DecodeError({ reason: "invalid-value", what: "muhash.numerator", offset: 0 }))
  }
  const denominator = fromLE(bytes.subarray(NUM3072_BYTES))
  if (denominator === 0n || denominator >= MUHASH_PRIME) {
    return Either.left(
      new DecodeError({ reason: "invalid-value", what: "muhash.denominator", offset: NUM3072_BYTES }),
    )
  }
  return Either.right({ numerator, denominator })
}

/** UTXO_ELEMENT_BYTES: txid 32 ‖ index u32 ‖ coin. */
const UTXO_ELEMENT_BYTES = 32 + 4 + COIN_BYTES

/**
 * utxoElement is the bytes one UTXO entry contributes to the set hash: the outpoint (txid 32 bytes ‖
 * index u32 LE) ‖ encodeCoin(coin). Including the outpoint makes equal coins at different outpoints
 * distinct elements. Pure; any fiber may call it.
 */
export const utxoElement = (txid: Uint8Array, index: number, coin: Coin): Uint8Array => {
  const w = new Writer(UTXO_ELEMENT_BYTES)
  w.raw(txid)
  w.u32(index)
  writeCoin(w, coin)
  return w.finish()
}

const keyPattern = /^[0-9a-fA-F]{64}:(?:0|[1-9][0-9]{0,9})$/

/**
 * utxoElementFromKey is `utxoElement` for a UTXO map key `<txid hex>:<index>` (outpointKey's form).
 * Keys are built by fibercoin itself, so a malformed one is a broken invariant: it throws rather than
 * hashing something else. Pure; any fiber may call it.
 */
export const utxoElementFromKey = (key: string, coin: Coin): Uint8Array => {
  const index = keyPattern.test(key) ? Number(key.slice(65)) : -1
  if (index < 0 || index > 0xffffffff) throw new Error(`muhash: malformed outpoint key ${key}`)
  const txid = new Uint8Array(32)
  Buffer.from(txid.buffer, txid.byteOffset, 32).write(key.slice(0, 64), 0, 32, "hex")
  return utxoElement(txid, index, coin)
}

/** UtxoEntry is one UTXO map entry as a block's delta lists it: `[outpointKey, coin]`. */
export type UtxoEntry = readonly [key: string, coin: Coin]

/**
 * applyDeltaToMuHash updates the UTXO set's hash by one block's delta: `removed` are the coins it
 * spent (with their coins, from the UTXO view or the block's undo record) and `created` the coins it
 * added. Disconnecting a block applies the same lists swapped. Costs about 6 µs per entry and no
 * inversion. Pure; the Chain actor calls it when it connects or disconnects a block.
 */
export const applyDeltaToMuHash = (
  state: MuHash,
  removed: ReadonlyArray<UtxoEntry>,
  created: ReadonlyArray<UtxoEntry>,
): MuHash =>
  muhashAdd(
    muhashRemove(
      state,
      removed.map(([key, coin]) => utxoElementFromKey(key, coin)),
    ),
    created.map(([key, coin]) => utxoElementFromKey(key, coin)),
  )
