import { createHash } from "node:crypto"
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { sha256 } from "../../src/consensus/hash.js"
import { merkleBranch, merkleRoot, verifyMerkleBranch } from "../../src/consensus/merkle.js"
import { fromHex, toHex } from "../../src/schema/hex.js"

/** leafAt makes distinct, reproducible 32-byte leaves (random bytes could repeat and mutate the tree). */
const leafAt = (seed: number, i: number): Uint8Array => {
  const buf = new Uint8Array(8)
  const view = new DataView(buf.buffer)
  view.setUint32(0, seed)
  view.setUint32(4, i)
  return sha256(buf)
}

const leavesOf = (seed: number, count: number): Array<Uint8Array> =>
  Array.from({ length: count }, (_, i) => leafAt(seed, i))

const flipByte = (bytes: Uint8Array, at: number): Uint8Array => {
  const copy = Uint8Array.from(bytes)
  const i = at % copy.length
  copy[i] = copy[i]! ^ 0x01
  return copy
}

/** pathShape is, per level from the leaves up, whether the node at `index` is the last of an odd level. */
const pathShape = (index: number, count: number): string => {
  const shape: Array<boolean> = []
  for (let width = count, pos = index; width > 1; width = Math.ceil(width / 2), pos = Math.floor(pos / 2)) {
    shape.push(width % 2 === 1 && pos === width - 1)
  }
  return JSON.stringify(shape)
}

const hex = (s: string): Uint8Array => {
  const b = fromHex(s)
  if (b === undefined) throw new Error(`bad hex ${s}`)
  return b
}

describe("merkleRoot", () => {
  it("is 32 zero bytes, not mutated, for no leaves", () => {
    const { root, mutated } = merkleRoot([])
    expect(toHex(root)).toBe("00".repeat(32))
    expect(mutated).toBe(false)
  })

  it("is the leaf itself for one leaf", () => {
    const a = leafAt(1, 0)
    const { root, mutated } = merkleRoot([a])
    expect(toHex(root)).toBe(toHex(a))
    expect(mutated).toBe(false)
  })

  it("is sha256d(a ‖ b) for two leaves", () => {
    const a = leafAt(1, 0)
    const b = leafAt(1, 1)
    const once = createHash("sha256").update(a).update(b).digest()
    const twice = createHash("sha256").update(once).digest()
    expect(toHex(merkleRoot([a, b]).root)).toBe(twice.toString("hex"))
  })

  it("matches Bitcoin block 100000's merkle root", () => {
    // Bitcoin shows ids byte-reversed; the tree itself works on the bytes as hashed.
    const display = [
      "8c14f0db3df150123e6f3dbbf30f8b955a8249b62ac1d1ff16284aefa3d06d87",
      "fff2525b8931402dd09222c50775608f75787bd2b87e56995a7bdd30f79702c4",
      "6359f0868171b1d194cbee1af2f16ea598ae8fad666d9b012c8ed2b79a236ec4",
      "e9a66845e05d5abc0ad04ec80f774a7e585c6e8db975962d069a522137b80c1d",
    ]
    const leaves = display.map((h) => hex(h).reverse())
    const { root, mutated } = merkleRoot(leaves)
    expect(toHex(Uint8Array.from(root).reverse())).toBe(
      "f3e94742aca4b5ef85488dc37c06c3282295ffec960994b2c0d5ac2a25a95766",
    )
    expect(mutated).toBe(false)
  })

  it("flags CVE-2012-2459: [a,b,c] and [a,b,c,c] share a root, only the second is mutated", () => {
    const [a, b, c] = leavesOf(2, 3) as [Uint8Array, Uint8Array, Uint8Array]
    const honest = merkleRoot([a, b, c])
    const forged = merkleRoot([a, b, c, c])
    expect(toHex(forged.root)).toBe(toHex(honest.root))
    expect(honest.mutated).toBe(false)
    expect(forged.mutated).toBe(true)
  })

  it("flags a mutation one level up: six leaves and the same six with the last two repeated", () => {
    const six = leavesOf(3, 6)
    const honest = merkleRoot(six)
    const forged = merkleRoot([...six, six[4]!, six[5]!])
    expect(toHex(forged.root)).toBe(toHex(honest.root))
    expect(honest.mutated).toBe(false)
    expect(forged.mutated).toBe(true)
  })

  it("does not flag the duplicate an odd level pairs with itself", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 300 }), fc.nat(), (count, seed) => {
        expect(merkleRoot(leavesOf(seed, count)).mutated).toBe(false)
      }),
      { seed: 5, numRuns: 50 },
    )
  })
})

describe("merkleBranch / verifyMerkleBranch", () => {
  it("proves a single leaf with an empty branch", () => {
    const a = leafAt(4, 0)
    expect(merkleBranch([a], 0)).toEqual([])
    expect(verifyMerkleBranch(a, 0, 1, [], a)).toBe(true)
    expect(verifyMerkleBranch(a, 0, 1, [a], a)).toBe(false)
  })

  it("gives the last node of an odd level itself as sibling", () => {
    const leaves = leavesOf(5, 3)
    const branch = merkleBranch(leaves, 2)
    expect(branch.map(toHex)).toEqual([toHex(leaves[2]!), toHex(merkleRoot(leaves.slice(0, 2)).root)])
  })

  it("rejects an index outside the leaves as a caller bug", () => {
    expect(() => merkleBranch(leavesOf(6, 3), 3)).toThrow(RangeError)
    expect(() => merkleBranch(leavesOf(6, 3), -1)).toThrow(RangeError)
  })

  it("rejects branches through the repeated leaves of a mutated tree (CVE-2012-2459)", () => {
    const [a, b, c] = leavesOf(7, 3) as [Uint8Array, Uint8Array, Uint8Array]
    const forged = [a, b, c, c]
    const { root } = merkleRoot(forged)
    for (const index of [2, 3]) {
      expect(verifyMerkleBranch(c, index, 4, merkleBranch(forged, index), root)).toBe(false)
    }
    // The honest three-leaf tree has the same root and proves c at index 2.
    expect(verifyMerkleBranch(c, 2, 3, merkleBranch([a, b, c], 2), root)).toBe(true)
  })

  it("binds the leaf count only through the path's shape", () => {
    const four = leavesOf(8, 4)
    const { root } = merkleRoot(four)
    const branch = merkleBranch(four, 0)
    // Index 0 has the same shape in trees of 3 and 4 leaves, so the proof cannot tell them apart.
    expect(verifyMerkleBranch(four[0]!, 0, 3, branch, root)).toBe(true)
    // Index 3 does not exist in a tree of 3; in a tree of 5, index 0 sits one level deeper.
    expect(verifyMerkleBranch(four[3]!, 3, 3, merkleBranch(four, 3), root)).toBe(false)
    expect(verifyMerkleBranch(four[0]!, 0, 5, branch, root)).toBe(false)
  })

  it("proves every leaf, and any change to leaf, sibling, index, count or root breaks the proof", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 300 }),
        fc.nat(),
        fc.array(fc.nat(), { minLength: 1, maxLength: 6 }),
        fc.nat({ max: 31 }),
        (count, seed, picks, byteAt) => {
          const leaves = leavesOf(seed, count)
          const { root } = merkleRoot(leaves)
          const indexes =
            count <= 32
              ? leaves.map((_, i) => i)
              : [0, count - 1, Math.floor(count / 2), ...picks.map((p) => p % count)]
          for (const index of indexes) {
            const leaf = leaves[index]!
            const branch = merkleBranch(leaves, index)
            expect(verifyMerkleBranch(leaf, index, count, branch, root)).toBe(true)

            expect(verifyMerkleBranch(flipByte(leaf, byteAt), index, count, branch, root)).toBe(false)
            expect(verifyMerkleBranch(leaf, index, count, branch, flipByte(root, byteAt))).toBe(false)
            for (let level = 0; level < branch.length; level++) {
              const mutated = branch.map((s, l) => (l === level ? flipByte(s, byteAt) : s))
              expect(verifyMerkleBranch(leaf, index, count, mutated, root)).toBe(false)
            }
            if (branch.length > 0) {
              expect(verifyMerkleBranch(leaf, index, count, branch.slice(0, -1), root)).toBe(false)
            }
            expect(verifyMerkleBranch(leaf, index, count, [...branch, root], root)).toBe(false)

            const otherIndexes = [
              index - 1,
              index + 1,
              index ^ 1,
              count,
              ...picks.map((p) => p % (count + 2)),
            ]
            for (let bit = 1; bit < count; bit <<= 1) otherIndexes.push(index ^ bit)
            for (const other of otherIndexes) {
              if (other === index) continue
              expect(verifyMerkleBranch(leaf, other, count, branch, root)).toBe(false)
            }

            const otherCounts = [count - 1, count + 1, count * 2, Math.ceil(count / 2), index, index + 1]
            for (const other of otherCounts) {
              if (other === count) continue
              const sameShape = other > index && pathShape(index, other) === pathShape(index, count)
              expect(verifyMerkleBranch(leaf, index, other, branch, root)).toBe(sameShape)
            }
          }
        },
      ),
      { seed: 2459, numRuns: 60 },
    )
  })
})
