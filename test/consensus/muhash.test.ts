import * as crypto from "node:crypto"
import { Either } from "effect"
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { sha256 } from "../../src/consensus/hash.js"
import {
  applyDeltaToMuHash,
  decodeMuHash,
  encodeMuHash,
  MUHASH_BYTES,
  MUHASH_EMPTY,
  MUHASH_PRIME,
  type MuHash,
  muhashAdd,
  muhashCombine,
  muhashDivide,
  muhashElementNumber,
  muhashFinalize,
  muhashNormalize,
  muhashRemove,
  utxoElement,
  utxoElementFromKey,
} from "../../src/consensus/muhash.js"
import type { Coin } from "../../src/schema/coin.js"
import { encodeCoin } from "../../src/schema/coin.js"
import { toHex } from "../../src/schema/hex.js"
import type { Amount, Height, PublicKey } from "../../src/schema/primitives.js"

const P = MUHASH_PRIME

/**
 * EMPTY_SET_HASH is a regression vector: muhashFinalize(MUHASH_EMPTY), computed once by this
 * implementation. It is sha256 of the number 1 as 384 little-endian bytes, so it also equals Core's
 * MuHash3072 of the empty set; a change here changes every committed UTXO-set hash.
 */
const EMPTY_SET_HASH = "c85525462fdcf30a2c18d6f4b92923000974355c2477f59594d2c205a1d25add"

const hashOf = (elements: ReadonlyArray<Uint8Array>): string =>
  toHex(muhashFinalize(muhashAdd(MUHASH_EMPTY, elements)))

const element = fc.uint8Array({ minLength: 0, maxLength: 48 })
const elements = fc.array(element, { maxLength: 12 })

/** multisetKey is a multiset's identity: its elements' hex, sorted. */
const multisetKey = (xs: ReadonlyArray<Uint8Array>): string => xs.map(toHex).sort().join(",")

/** le384 reads 384 little-endian bytes, independently of the module's own conversion. */
const le384 = (bytes: Uint8Array): bigint => BigInt(`0x${Buffer.from(bytes).reverse().toString("hex")}`)

const le384Bytes = (x: bigint): Uint8Array => Buffer.from(x.toString(16).padStart(768, "0"), "hex").reverse()

/** powMod is naive square-and-multiply with BigInt `%`: the reference the special-form arithmetic must match. */
const powMod = (base: bigint, exp: bigint): bigint => {
  let result = 1n
  for (const bit of exp.toString(2)) {
    result = (result * result) % P
    if (bit === "1") result = (result * base) % P
  }
  return result
}

const single = (x: bigint): MuHash => ({ numerator: x, denominator: 1n })

const bigintBelow = (bound: bigint): fc.Arbitrary<bigint> => fc.bigInt({ min: 0n, max: bound - 1n })

/**
 * coreNumber is Core's MuHash3072::ToNum3072 (ChaCha20 keystream keyed by sha256 of the bytes, zero
 * nonce and counter, 384 bytes, little-endian): only here, to run Core's known answers through
 * fibercoin's group arithmetic.
 */
const coreNumber = (bytes: Uint8Array): bigint => {
  const cipher = crypto.createCipheriv("chacha20", sha256(bytes), Buffer.alloc(16))
  return le384(cipher.update(Buffer.alloc(384))) % P
}

/** coreFromInt is Core's test helper FromInt(i): the element {i, 0, …} of 32 bytes, as a one-element hash. */
const coreFromInt = (i: number): MuHash => {
  const bytes = new Uint8Array(32)
  bytes[0] = i
  return single(coreNumber(bytes))
}

const coin = (seed: number): Coin => ({
  value: (BigInt(seed) * 1000n) as Amount,
  pubkey: sha256(Uint8Array.of(seed & 0xff, seed >> 8)) as PublicKey,
  height: seed as Height,
  coinbase: seed % 2 === 0,
})

const txidOfSeed = (seed: number): Uint8Array => sha256(Uint8Array.of(0xaa, seed & 0xff, seed >> 8))

describe("MuHash set hash: a multiset's hash depends only on the multiset", () => {
  it("adding elements in any order, one by one or in batches, gives the same hash", () => {
    const permuted = elements.chain((xs) =>
      fc.tuple(fc.constant(xs), fc.shuffledSubarray(xs, { minLength: xs.length, maxLength: xs.length })),
    )
    fc.assert(
      fc.property(permuted, fc.nat(), ([xs, ys], cut) => {
        const expected = hashOf(xs)
        expect(hashOf(ys)).toBe(expected)
        const at = xs.length === 0 ? 0 : cut % xs.length
        const batched = muhashAdd(muhashAdd(MUHASH_EMPTY, ys.slice(at)), ys.slice(0, at))
        expect(toHex(muhashFinalize(batched))).toBe(expected)
      }),
      { seed: 0x5eed1, numRuns: 60 },
    )
  })

  it("removing what was added restores the previous hash", () => {
    fc.assert(
      fc.property(elements, elements, (base, extra) => {
        const s = muhashAdd(MUHASH_EMPTY, base)
        expect(toHex(muhashFinalize(muhashRemove(muhashAdd(s, extra), extra)))).toBe(toHex(muhashFinalize(s)))
      }),
      { seed: 0x5eed2, numRuns: 60 },
    )
  })

  it("only the net multiset counts: a removal may come before its addition", () => {
    const ops = fc.tuple(elements, elements).chain(([kept, transient]) => {
      const all = [
        ...kept.map((x) => ["add", x] as const),
        ...transient.map((x) => ["add", x] as const),
        ...transient.map((x) => ["remove", x] as const),
      ]
      return fc.tuple(
        fc.constant(kept),
        fc.shuffledSubarray(all, { minLength: all.length, maxLength: all.length }),
      )
    })
    fc.assert(
      fc.property(ops, ([kept, sequence]) => {
        let state = MUHASH_EMPTY
        for (const [op, x] of sequence)
          state = op === "add" ? muhashAdd(state, [x]) : muhashRemove(state, [x])
        expect(toHex(muhashFinalize(state))).toBe(hashOf(kept))
      }),
      { seed: 0x5eed3, numRuns: 60 },
    )
    const x = Uint8Array.of(1, 2, 3)
    const early = muhashAdd(muhashRemove(MUHASH_EMPTY, [x]), [x])
    expect(toHex(muhashFinalize(early))).toBe(EMPTY_SET_HASH)
  })

  it("combining the hashes of A and B gives the hash of A ∪ B; dividing takes B out again", () => {
    fc.assert(
      fc.property(elements, elements, (a, b) => {
        const ha = muhashAdd(MUHASH_EMPTY, a)
        const hb = muhashAdd(MUHASH_EMPTY, b)
        const union = hashOf([...a, ...b])
        expect(toHex(muhashFinalize(muhashCombine(ha, hb)))).toBe(union)
        expect(toHex(muhashFinalize(muhashDivide(muhashCombine(ha, hb), hb)))).toBe(hashOf(a))
      }),
      { seed: 0x5eed4, numRuns: 40 },
    )
  })

  it("different multisets get different hashes", () => {
    fc.assert(
      fc.property(elements, elements, (a, b) => {
        fc.pre(multisetKey(a) !== multisetKey(b))
        expect(hashOf(a)).not.toBe(hashOf(b))
      }),
      { seed: 0x5eed5, numRuns: 60 },
    )
    // Multiplicity counts: {x} and {x, x} differ.
    const x = Uint8Array.of(9)
    expect(hashOf([x])).not.toBe(hashOf([x, x]))
  })

  it("changing one byte of one element changes the hash", () => {
    const withFlip = fc
      .array(fc.uint8Array({ minLength: 1, maxLength: 48 }), { minLength: 1, maxLength: 8 })
      .chain((xs) =>
        fc.tuple(fc.constant(xs), fc.nat(xs.length - 1), fc.nat(47), fc.integer({ min: 1, max: 255 })),
      )
    fc.assert(
      fc.property(withFlip, ([xs, which, at, mask]) => {
        const changed = xs.map((x) => Uint8Array.from(x))
        const target = changed[which]!
        const i = at % target.length
        target[i] = target[i]! ^ mask
        expect(hashOf(changed)).not.toBe(hashOf(xs))
      }),
      { seed: 0x5eed6, numRuns: 60 },
    )
  })

  it("the empty set's hash is the pinned regression vector, and is restored by add+remove of anything", () => {
    expect(toHex(muhashFinalize(MUHASH_EMPTY))).toBe(EMPTY_SET_HASH)
    const one = new Uint8Array(384)
    one[0] = 1
    expect(toHex(sha256(one))).toBe(EMPTY_SET_HASH)
    fc.assert(
      fc.property(elements, (xs) => {
        expect(toHex(muhashFinalize(muhashRemove(muhashAdd(MUHASH_EMPTY, xs), xs)))).toBe(EMPTY_SET_HASH)
      }),
      { seed: 0x5eed7, numRuns: 40 },
    )
  })

  it("a normalized state has denominator 1, the same hash, and canonical bytes", () => {
    fc.assert(
      fc.property(elements, elements, (a, b) => {
        const roundabout = muhashRemove(muhashAdd(MUHASH_EMPTY, [...a, ...b]), b)
        const direct = muhashAdd(MUHASH_EMPTY, a)
        const n = muhashNormalize(roundabout)
        expect(n.denominator).toBe(1n)
        expect(toHex(muhashFinalize(n))).toBe(toHex(muhashFinalize(roundabout)))
        expect(toHex(encodeMuHash(n))).toBe(toHex(encodeMuHash(muhashNormalize(direct))))
      }),
      { seed: 0x5eed8, numRuns: 30 },
    )
  })
})

describe("MuHash encoding for the tip record", () => {
  it("round-trips numerator ‖ denominator, 384 bytes little-endian each", () => {
    fc.assert(
      fc.property(elements, elements, (a, b) => {
        const state = muhashRemove(muhashAdd(MUHASH_EMPTY, a), b)
        const bytes = encodeMuHash(state)
        expect(bytes.length).toBe(MUHASH_BYTES)
        expect(le384(bytes.subarray(0, 384))).toBe(state.numerator)
        expect(le384(bytes.subarray(384))).toBe(state.denominator)
        const decoded = decodeMuHash(bytes)
        expect(Either.isRight(decoded)).toBe(true)
        if (Either.isRight(decoded)) {
          expect(decoded.right).toEqual(state)
          expect(toHex(muhashFinalize(decoded.right))).toBe(toHex(muhashFinalize(state)))
        }
      }),
      { seed: 0x5eed9, numRuns: 40 },
    )
  })

  it("rejects wrong lengths and values that are not reduced group elements, without throwing", () => {
    const good = encodeMuHash(muhashAdd(MUHASH_EMPTY, [Uint8Array.of(1)]))
    const reasonOf = (bytes: Uint8Array): string | undefined => {
      const r = decodeMuHash(bytes)
      return Either.isLeft(r) ? `${r.left.reason} ${r.left.what}` : undefined
    }
    expect(reasonOf(new Uint8Array(0))).toBe("truncated muhash")
    expect(reasonOf(good.subarray(0, 767))).toBe("truncated muhash")
    expect(reasonOf(new Uint8Array(769))).toBe("length-exceeds-cap muhash")
    expect(reasonOf(new Uint8Array(1536))).toBe("length-exceeds-cap muhash")
    const withParts = (num: Uint8Array, den: Uint8Array): Uint8Array => {
      const out = new Uint8Array(768)
      out.set(num, 0)
      out.set(den, 384)
      return out
    }
    const one = le384Bytes(1n)
    for (const bad of [P, P + 1n, (1n << 3072n) - 1n, 0n]) {
      expect(reasonOf(withParts(le384Bytes(bad), one))).toBe("invalid-value muhash.numerator")
      expect(reasonOf(withParts(one, le384Bytes(bad)))).toBe("invalid-value muhash.denominator")
    }
    expect(reasonOf(withParts(le384Bytes(P - 1n), le384Bytes(P - 1n)))).toBeUndefined()
  })
})

describe("MuHash group arithmetic modulo p = 2^3072 − 1103717", () => {
  it("p has the documented form", () => {
    expect(P).toBe(2n ** 3072n - 1103717n)
  })

  it("the special-form reduction agrees with BigInt % on products of reduced values", () => {
    const edges = [0n, 1n, 2n, P - 1n, P - 2n, (1n << 3071n) + 12345n, P - 1103717n]
    for (const a of edges)
      for (const b of edges) expect(muhashCombine(single(a), single(b)).numerator).toBe((a * b) % P)
    fc.assert(
      fc.property(bigintBelow(P), bigintBelow(P), (a, b) => {
        expect(muhashCombine(single(a), single(b)).numerator).toBe((a * b) % P)
      }),
      { seed: 0x5eeda, numRuns: 300 },
    )
  })

  it("an element's number is SHAKE256(bytes, 384) little-endian, reduced", () => {
    fc.assert(
      fc.property(element, (x) => {
        const digest = crypto.createHash("shake256", { outputLength: 384 }).update(x).digest()
        const n = muhashElementNumber(x)
        expect(n).toBe(le384(digest) % P)
        expect(n < P).toBe(true)
      }),
      { seed: 0x5eedb, numRuns: 50 },
    )
  })

  it("the inverse used by finalize is Fermat's a^(p−2), and a × a⁻¹ ≡ 1", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 1n, max: P - 1n }), (a) => {
        const inv = muhashNormalize({ numerator: 1n, denominator: a }).numerator
        expect((a * inv) % P).toBe(1n)
        expect(inv).toBe(powMod(a, P - 2n))
      }),
      { seed: 0x5eedc, numRuns: 5 },
    )
    expect(muhashNormalize({ numerator: 1n, denominator: P - 1n }).numerator).toBe(P - 1n)
  })

  it("matches Bitcoin Core's muhash_tests known answers when fed Core's element mapping", () => {
    // src/test/crypto_tests.cpp muhash_tests: FromInt(0) *= FromInt(1), /= FromInt(2), finalized.
    // Core prints the uint256 reversed (GetHex), so compare against the reversed digest.
    const acc = muhashDivide(muhashCombine(coreFromInt(0), coreFromInt(1)), coreFromInt(2))
    expect(Buffer.from(muhashFinalize(acc)).reverse().toString("hex")).toBe(
      "10d312b100cbd32ada024a6646e40d3482fcff103668d2625f10002a607d5863",
    )
    // Serialization: FromInt(1) *= FromInt(2) serializes as numerator (LE) ‖ denominator 1 (LE).
    const ser = encodeMuHash(muhashCombine(coreFromInt(1), coreFromInt(2)))
    expect(toHex(ser.subarray(0, 16))).toBe("1fa093295ea30a6a3acdc7b3f770fa53")
    expect(toHex(ser.subarray(384))).toBe(toHex(le384Bytes(1n)))
    // The empty set is the same in both mappings.
    expect(toHex(muhashFinalize(muhashDivide(coreFromInt(3), coreFromInt(3))))).toBe(EMPTY_SET_HASH)
  })
})

describe("MuHash of UTXO entries", () => {
  it("an entry's element is txid ‖ index u32 LE ‖ encodeCoin(coin), from bytes or from its map key", () => {
    const txid = txidOfSeed(7)
    const c = coin(7)
    const el = utxoElement(txid, 0x01020304, c)
    expect(toHex(el)).toBe(`${toHex(txid)}04030201${toHex(encodeCoin(c))}`)
    expect(toHex(utxoElementFromKey(`${toHex(txid)}:${0x01020304}`, c))).toBe(toHex(el))
    expect(toHex(utxoElementFromKey(`${toHex(txid)}:4294967295`, c))).toBe(
      toHex(utxoElement(txid, 0xffffffff, c)),
    )
  })

  it("a malformed map key is a broken invariant and throws", () => {
    const txid = toHex(txidOfSeed(1))
    for (const key of [
      `${txid}`,
      `${txid}:`,
      `${txid}:01`,
      `${txid}:4294967296`,
      `${txid.slice(2)}:0`,
      `zz${txid.slice(2)}:0`,
    ]) {
      expect(() => utxoElementFromKey(key, coin(1))).toThrow(/malformed outpoint key/)
    }
  })

  it("applying a block's delta, then its reverse, follows the UTXO set", () => {
    const entry = (seed: number, index: number) =>
      [`${toHex(txidOfSeed(seed))}:${index}`, coin(seed)] as const
    const genesis = [entry(1, 0), entry(2, 0), entry(2, 1)]
    const spent = [entry(2, 0)]
    const created = [entry(3, 0), entry(3, 1)]
    const scan = (entries: ReadonlyArray<readonly [string, Coin]>) =>
      toHex(
        muhashFinalize(
          muhashAdd(
            MUHASH_EMPTY,
            entries.map(([k, c]) => utxoElementFromKey(k, c)),
          ),
        ),
      )
    const s0 = applyDeltaToMuHash(MUHASH_EMPTY, [], genesis)
    expect(toHex(muhashFinalize(s0))).toBe(scan(genesis))
    const s1 = applyDeltaToMuHash(s0, spent, created)
    expect(toHex(muhashFinalize(s1))).toBe(scan([entry(1, 0), entry(2, 1), ...created]))
    const s2 = applyDeltaToMuHash(s1, created, spent)
    expect(toHex(muhashFinalize(s2))).toBe(scan(genesis))
    // The same coin at a different outpoint is a different element.
    expect(scan([entry(2, 0)])).not.toBe(scan([[`${toHex(txidOfSeed(2))}:1`, coin(2)]]))
  })
})

describe("MuHash cost (informative, no assertion)", () => {
  it("prints µs per add, per remove and per finalize", () => {
    const n = 2000
    const els = Array.from({ length: n }, (_, i) => utxoElement(txidOfSeed(i), i, coin(i)))
    const time = (f: () => void): number => {
      const start = process.hrtime.bigint()
      f()
      return Number(process.hrtime.bigint() - start) / 1000
    }
    let state = MUHASH_EMPTY
    time(() => {
      for (const e of els) state = muhashAdd(state, [e])
    })
    const addUs = time(() => {
      for (const e of els) state = muhashAdd(state, [e])
    })
    const removeUs = time(() => {
      for (const e of els) state = muhashRemove(state, [e])
    })
    const batchUs = time(() => {
      state = muhashAdd(state, els)
    })
    const rounds = 20
    const finalizeUs = time(() => {
      for (let i = 0; i < rounds; i++) muhashFinalize(state)
    })
    const normalized = muhashNormalize(state)
    const finalizeNormUs = time(() => {
      for (let i = 0; i < rounds; i++) muhashFinalize(normalized)
    })
    const codecUs = time(() => {
      for (let i = 0; i < rounds; i++) decodeMuHash(encodeMuHash(state))
    })
    console.log(
      `muhash: add ${(addUs / n).toFixed(2)} µs/element, remove ${(removeUs / n).toFixed(2)} µs/element, ` +
        `batch add ${(batchUs / n).toFixed(2)} µs/element, finalize ${(finalizeUs / rounds).toFixed(0)} µs ` +
        `(normalized ${(finalizeNormUs / rounds).toFixed(0)} µs), encode+decode ${(codecUs / rounds).toFixed(1)} µs`,
    )
  })
})
