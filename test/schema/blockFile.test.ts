import { Either } from "effect"
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { regtest, testnet } from "../../src/consensus/params.js"
import { decodeBlockFile, encodeBlockFile } from "../../src/schema/blockFile.js"
import { toHex } from "../../src/schema/hex.js"

const records = fc.array(fc.uint8Array({ minLength: 1, maxLength: 300 }), { maxLength: 8 })

describe("blocks files (magic ‖ length ‖ block, one after another)", () => {
  it("round-trip any sequence of records", () => {
    fc.assert(
      fc.property(records, (blocks) => {
        const decoded = decodeBlockFile(regtest.magic, encodeBlockFile(regtest.magic, blocks))
        expect(Either.isRight(decoded) && decoded.right.map(toHex)).toEqual(blocks.map(toHex))
      }),
      { seed: 0x5eed, numRuns: 200 },
    )
  })

  it("refuse another network's file at its first record", () => {
    const r = decodeBlockFile(regtest.magic, encodeBlockFile(testnet.magic, [Uint8Array.of(1)]))
    expect(Either.isLeft(r) && r.left).toMatchObject({ reason: "invalid-value", offset: 0 })
  })

  it("refuse a truncated last record and a length over the block cap, never throwing", () => {
    const file = encodeBlockFile(regtest.magic, [Uint8Array.of(1, 2, 3), Uint8Array.of(4, 5, 6)])
    const cut = decodeBlockFile(regtest.magic, file.subarray(0, file.length - 1))
    expect(Either.isLeft(cut) && cut.left.reason).toBe("length-exceeds-input")
    const huge = new Uint8Array([...regtest.magic, 0xff, 0xff, 0xff, 0x7f])
    const big = decodeBlockFile(regtest.magic, huge)
    expect(Either.isLeft(big) && big.left.reason).toBe("length-exceeds-cap")
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        const d = decodeBlockFile(regtest.magic, bytes)
        if (Either.isRight(d)) expect(toHex(encodeBlockFile(regtest.magic, d.right))).toBe(toHex(bytes))
      }),
      { seed: 0x5eed, numRuns: 500 },
    )
  })
})
