import * as fc from "fast-check"
import type { Block, BlockHeader } from "../../src/schema/block.js"
import type { Coin } from "../../src/schema/coin.js"
import type { Amount, BlockHash, Height, PublicKey, TxId } from "../../src/schema/primitives.js"
import type { Tx } from "../../src/schema/tx.js"

/** Arbitraries for the wire records: any value the types allow, valid by the rules or not. */
export const bytes32 = fc.uint8Array({ minLength: 32, maxLength: 32 })
export const u32 = fc.integer({ min: 0, max: 0xffffffff })
export const amount = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }).map((v) => v as Amount)
export const arbTx: fc.Arbitrary<Tx> = fc.record({
  version: u32,
  inputs: fc.array(
    fc.record({
      prevout: fc.record({ txid: bytes32.map((b) => b as TxId), index: u32 }),
      witness: fc.uint8Array({ maxLength: 100 }),
    }),
    { maxLength: 6 },
  ),
  outputs: fc.array(fc.record({ value: amount, pubkey: bytes32.map((b) => b as PublicKey) }), {
    maxLength: 6,
  }),
  lockTime: u32,
})
export const arbHeader: fc.Arbitrary<BlockHeader> = fc.record({
  version: u32,
  prev: bytes32.map((b) => b as BlockHash),
  merkleRoot: bytes32,
  time: u32,
  bits: u32,
  nonce: u32,
})
export const arbBlock: fc.Arbitrary<Block> = fc.record({
  header: arbHeader,
  txs: fc.array(arbTx, { maxLength: 5 }),
})
export const arbCoin: fc.Arbitrary<Coin> = fc.record({
  value: amount,
  pubkey: bytes32.map((b) => b as PublicKey),
  height: fc.integer({ min: 0, max: 0x7fffffff }).map((h) => h as Height),
  coinbase: fc.boolean(),
})

/** A mutation of an encoding: flip a byte, truncate, extend, delete or insert a run of bytes. */
export const mutate = (input: Uint8Array) =>
  fc.oneof(
    fc.record({ at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) }).map(({ at, xor }) => {
      const out = new Uint8Array(input)
      if (out.length > 0) out[at % out.length]! ^= xor
      return out
    }),
    fc.nat().map((n) => input.slice(0, input.length === 0 ? 0 : n % input.length)),
    fc.uint8Array({ minLength: 1, maxLength: 8 }).map((tail) => new Uint8Array([...input, ...tail])),
    fc.record({ at: fc.nat(), len: fc.integer({ min: 1, max: 9 }) }).map(({ at, len }) => {
      const i = input.length === 0 ? 0 : at % input.length
      return new Uint8Array([...input.slice(0, i), ...input.slice(i + len)])
    }),
    fc.record({ at: fc.nat(), run: fc.uint8Array({ minLength: 1, maxLength: 9 }) }).map(({ at, run }) => {
      const i = input.length === 0 ? 0 : at % (input.length + 1)
      return new Uint8Array([...input.slice(0, i), ...run, ...input.slice(i)])
    }),
  )
