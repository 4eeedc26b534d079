import { Either } from "effect"
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { blockHashOf, sha256 } from "../../src/consensus/hash.js"
import { merkleRoot } from "../../src/consensus/merkle.js"
import { buildProof, MAX_PROOF_TXS, verifyProof } from "../../src/consensus/merkleProof.js"
import { type BlockHeader, encodeHeader } from "../../src/schema/block.js"
import { toHex } from "../../src/schema/hex.js"
import type { BlockHash } from "../../src/schema/primitives.js"
import { mutate } from "../support/arbitraries.js"

/** txidsOf makes `count` distinct, reproducible txids. */
const txidsOf = (count: number, seed = 0): Array<Uint8Array> =>
  Array.from({ length: count }, (_, i) => {
    const buf = new Uint8Array(8)
    new DataView(buf.buffer).setUint32(0, seed)
    new DataView(buf.buffer).setUint32(4, i)
    return sha256(buf)
  })

/** headerFor is a header committing to `txids` (the fields other than the root are arbitrary). */
const headerFor = (txids: ReadonlyArray<Uint8Array>): BlockHeader => ({
  version: 1,
  prev: new Uint8Array(32).fill(7) as BlockHash,
  merkleRoot: merkleRoot(txids).root,
  time: 1_700_000_000,
  bits: 0x207fffff,
  nonce: 42,
})

const matchesOf = (count: number, indexes: ReadonlyArray<number>): Array<boolean> => {
  const set = new Set(indexes)
  return Array.from({ length: count }, (_, i) => set.has(i))
}

/** Parts is a proof split into its fields, to tamper with one and re-encode (small proofs only: 1-byte varints). */
interface Parts {
  header: Uint8Array
  total: number
  hashes: Array<Uint8Array>
  flags: Uint8Array
}

const split = (proof: Uint8Array): Parts => {
  const view = new DataView(proof.buffer, proof.byteOffset, proof.byteLength)
  const n = proof[84]!
  expect(n).toBeLessThan(0xfd)
  const hashes = Array.from({ length: n }, (_, i) => proof.slice(85 + i * 32, 117 + i * 32))
  const at = 85 + n * 32
  const flagLength = proof[at]!
  expect(at + 1 + flagLength).toBe(proof.length)
  return { header: proof.slice(0, 80), total: view.getUint32(80, true), hashes, flags: proof.slice(at + 1) }
}

const join = (p: Parts): Uint8Array => {
  const out = new Uint8Array(80 + 4 + 1 + p.hashes.length * 32 + 1 + p.flags.length)
  out.set(p.header, 0)
  new DataView(out.buffer).setUint32(80, p.total, true)
  out[84] = p.hashes.length
  for (const [i, h] of p.hashes.entries()) out.set(h, 85 + i * 32)
  out[85 + p.hashes.length * 32] = p.flags.length
  out.set(p.flags, 86 + p.hashes.length * 32)
  return out
}

const reasonOf = (bytes: Uint8Array): string =>
  Either.match(verifyProof(bytes), {
    onLeft: (e) => (e._tag === "ProofError" ? e.reason : `decode:${e.reason}`),
    onRight: () => "valid",
  })

const provenIndexes = (bytes: Uint8Array) =>
  Either.getOrThrow(verifyProof(bytes)).matches.map((m) => ({ txid: toHex(m.txid), index: m.index }))

describe("buildProof / verifyProof round trips", () => {
  it.each([1, 2, 3, 7, 100, 1001])("a block of %i transactions proves any subset of them", (count) => {
    const txids = txidsOf(count, count)
    const header = headerFor(txids)
    fc.assert(
      fc.property(fc.uniqueArray(fc.nat(count - 1), { maxLength: Math.min(count, 40) }), (indexes) => {
        const proof = buildProof(header, txids, matchesOf(count, indexes))
        const verified = Either.getOrThrow(verifyProof(proof))
        expect(toHex(verified.blockHash)).toBe(toHex(blockHashOf(encodeHeader(header))))
        expect(toHex(encodeHeader(verified.header))).toBe(toHex(encodeHeader(header)))
        const sorted = [...indexes].sort((a, b) => a - b)
        expect(verified.matches.map((m) => m.index)).toEqual(sorted)
        expect(verified.matches.map((m) => toHex(m.txid))).toEqual(sorted.map((i) => toHex(txids[i]!)))
      }),
      { numRuns: count > 100 ? 20 : 60 },
    )
  })

  it("a proof of one transaction among 1001 holds the path's hashes only, not the block's", () => {
    const txids = txidsOf(1001)
    const proof = buildProof(headerFor(txids), txids, matchesOf(1001, [500]))
    // 10 levels above the leaves: the leaf and one sibling per level
    expect(split(proof).hashes).toHaveLength(11)
    expect(provenIndexes(proof)).toEqual([{ txid: toHex(txids[500]!), index: 500 }])
  })

  it("a proof with no match proves the root and nothing else", () => {
    const txids = txidsOf(7)
    const proof = buildProof(headerFor(txids), txids, matchesOf(7, []))
    expect(split(proof).hashes.map(toHex)).toEqual([toHex(merkleRoot(txids).root)])
    expect(provenIndexes(proof)).toEqual([])
  })

  it("the caller's mistakes are RangeErrors", () => {
    const txids = txidsOf(3)
    expect(() => buildProof(headerFor(txids), [], [])).toThrow(RangeError)
    expect(() => buildProof(headerFor(txids), txids, [true])).toThrow(RangeError)
  })
})

describe("verifyProof refuses tampered proofs", () => {
  const txids = txidsOf(7)
  const header = headerFor(txids)
  const proof = buildProof(header, txids, matchesOf(7, [2, 5]))

  it("the untouched proof is valid", () => {
    expect(provenIndexes(proof).map((m) => m.index)).toEqual([2, 5])
  })

  it("a flipped bit in any hash changes the root", () => {
    const parts = split(proof)
    for (let i = 0; i < parts.hashes.length; i++) {
      const hashes = parts.hashes.map((h, j) =>
        j === i ? Uint8Array.from(h, (b, k) => (k === 0 ? b ^ 1 : b)) : h,
      )
      expect(reasonOf(join({ ...parts, hashes }))).toBe("root-mismatch")
    }
  })

  it("a flipped bit in the header's merkle root is a root mismatch", () => {
    const bytes = Uint8Array.from(proof)
    bytes[36]! ^= 0x80
    expect(reasonOf(bytes)).toBe("root-mismatch")
  })

  it("a flipped flag bit is refused, never a proof of something else", () => {
    const parts = split(proof)
    const bits = parts.flags.length * 8
    for (let i = 0; i < bits; i++) {
      const flags = Uint8Array.from(parts.flags)
      flags[i >>> 3]! ^= 1 << (i & 7)
      const tampered = join({ ...parts, flags })
      // a leaf flag next to a matched sibling may be claimed too: that proves a real transaction
      if (reasonOf(tampered) === "valid") {
        for (const m of provenIndexes(tampered)) expect(m.txid).toBe(toHex(txids[m.index]!))
      }
    }
    // the root's own flag: without it the first hash is the root, and the rest are left over
    const flags = Uint8Array.from(parts.flags)
    flags[0]! ^= 1
    expect(reasonOf(join({ ...parts, flags }))).not.toBe("valid")
  })

  it("a set padding bit, a spare flag byte, a missing flag byte are refused", () => {
    const parts = split(proof)
    const padded = Uint8Array.from(parts.flags)
    padded[padded.length - 1]! |= 0x80
    expect(reasonOf(join({ ...parts, flags: padded }))).toBe("nonzero-padding")
    expect(reasonOf(join({ ...parts, flags: Uint8Array.from([...parts.flags, 0]) }))).toBe("unused-flags")
    expect(reasonOf(join({ ...parts, flags: parts.flags.slice(0, -1) }))).not.toBe("valid")
  })

  it("a duplicated last hash, a dropped hash, a wrong total are refused", () => {
    const parts = split(proof)
    expect(reasonOf(join({ ...parts, hashes: [...parts.hashes, parts.hashes.at(-1)!] }))).toBe(
      "unused-hashes",
    )
    expect(reasonOf(join({ ...parts, hashes: parts.hashes.slice(0, -1) }))).toBe("hashes-exhausted")
    expect(reasonOf(join({ ...parts, total: 0 }))).toBe("no-transactions")
    expect(reasonOf(join({ ...parts, total: MAX_PROOF_TXS + 1 }))).toBe("too-many-transactions")
    expect(reasonOf(join({ ...parts, total: 3 }))).toBe("too-many-hashes")
    // the total is bound only through the tree's shape (as in Core): 8 leaves walk as 7 do here, and
    // prove the same transactions; a total that changes the shape does not verify
    expect(provenIndexes(join({ ...parts, total: 8 }))).toEqual(provenIndexes(proof))
    expect(reasonOf(join({ ...parts, total: 9 }))).not.toBe("valid")
  })

  it("truncated at any length, or with a trailing byte, it does not decode", () => {
    for (let n = 0; n < proof.length; n++) expect(reasonOf(proof.subarray(0, n))).toMatch(/^decode:/)
    expect(reasonOf(Uint8Array.from([...proof, 0]))).toBe("decode:trailing-bytes")
  })

  it("a walk into a branch without a matched leaf is refused (one encoding per proof)", () => {
    const parts = split(buildProof(headerFor(txidsOf(2)), txidsOf(2), [false, true]))
    // root flagged, leaf 0 unmatched, leaf 1 matched: clear leaf 1's flag (bit 2)
    const flags = Uint8Array.from(parts.flags)
    flags[0]! &= ~0b100
    expect(reasonOf(join({ ...parts, flags }))).toBe("unmatched-branch")
  })

  it("any mutation of a proof either fails or proves only transactions that are in the block", () => {
    fc.assert(
      fc.property(mutate(proof), (tampered) => {
        const result = verifyProof(tampered)
        if (Either.isLeft(result)) return
        expect(toHex(result.right.header.merkleRoot)).toBe(toHex(header.merkleRoot))
        for (const m of result.right.matches) expect(toHex(m.txid)).toBe(toHex(txids[m.index]!))
      }),
      { numRuns: 2_000 },
    )
  })
})

describe("CVE-2012-2459: a duplicated right child", () => {
  // [a, b, c] and the mutated [a, b, c, c] share a root: the last level pairs c with itself either way
  const txids = txidsOf(3, 9)
  const header = headerFor(txids)
  const mutated = [...txids, txids[2]!]

  it("the mutated list has the honest block's root", () => {
    expect(toHex(merkleRoot(mutated).root)).toBe(toHex(header.merkleRoot))
  })

  it("a proof of the honest block's last transaction is valid", () => {
    expect(provenIndexes(buildProof(header, txids, [false, false, true]))).toEqual([
      { txid: toHex(txids[2]!), index: 2 },
    ])
  })

  it("a proof built over the mutated list (a fourth transaction at index 3) is refused", () => {
    expect(reasonOf(buildProof(header, mutated, [false, false, false, true]))).toBe("duplicate-right-child")
    expect(reasonOf(buildProof(header, mutated, [false, false, true, true]))).toBe("duplicate-right-child")
  })
})
