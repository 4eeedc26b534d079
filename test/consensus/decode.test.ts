import { Either } from "effect"
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { decodeBlockWithTxids, txidsOf } from "../../src/consensus/checkBlock.js"
import { encodeBlock } from "../../src/schema/block.js"
import { toHex } from "../../src/schema/hex.js"
import { arbBlock } from "../support/arbitraries.js"

describe("decodeBlockWithTxids", () => {
  it("hashes each transaction's wire bytes to the same txids as hashing the decoded block", () => {
    fc.assert(
      fc.property(arbBlock, (block) => {
        const decoded = decodeBlockWithTxids(encodeBlock(block))
        expect(Either.isRight(decoded)).toBe(true)
        if (Either.isRight(decoded)) {
          expect(decoded.right.block).toEqual(block)
          expect(decoded.right.txids.map(toHex)).toEqual(txidsOf(block).map(toHex))
        }
      }),
      { seed: 0x5eed, numRuns: 300 },
    )
  })

  it("returns the decoder's typed error for bad bytes, never throws", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const decoded = decodeBlockWithTxids(bytes)
        if (Either.isLeft(decoded)) expect(decoded.left._tag).toBe("DecodeError")
      }),
      { seed: 0x5eed, numRuns: 1000 },
    )
  })
})
