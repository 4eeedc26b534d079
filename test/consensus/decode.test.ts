import { Either } from "effect"
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { decodeBlockWithTxids, txidsOf } from "../../src/consensus/checkBlock.js"
import { type Block, encodeBlock } from "../../src/schema/block.js"
import { toHex } from "../../src/schema/hex.js"
import type { Amount, BlockHash, PublicKey, TxId } from "../../src/schema/primitives.js"

const bytes32 = fc.uint8Array({ minLength: 32, maxLength: 32 })
const u32 = fc.integer({ min: 0, max: 0xffffffff })
const arbBlock: fc.Arbitrary<Block> = fc.record({
  header: fc.record({
    version: u32,
    prev: bytes32.map((b) => b as BlockHash),
    merkleRoot: bytes32,
    time: u32,
    bits: u32,
    nonce: u32,
  }),
  txs: fc.array(
    fc.record({
      version: u32,
      inputs: fc.array(
        fc.record({
          prevout: fc.record({ txid: bytes32.map((b) => b as TxId), index: u32 }),
          witness: fc.uint8Array({ maxLength: 100 }),
        }),
        { maxLength: 4 },
      ),
      outputs: fc.array(
        fc.record({
          value: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }).map((v) => v as Amount),
          pubkey: bytes32.map((b) => b as PublicKey),
        }),
        { maxLength: 4 },
      ),
      lockTime: u32,
    }),
    { maxLength: 6 },
  ),
})

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
