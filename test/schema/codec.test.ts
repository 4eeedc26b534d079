import { Either, Schema } from "effect"
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { BlockFromBytes, BlockHeaderFromBytes, TxFromBytes } from "../../src/schema/binary.js"
import { decodeBlock, decodeHeader, encodeBlock, encodeHeader, readBlock } from "../../src/schema/block.js"
import { decodeWith, Reader } from "../../src/schema/codec.js"
import { decodeCoin, decodeUndo, encodeCoin, encodeUndo } from "../../src/schema/coin.js"
import { toHex } from "../../src/schema/hex.js"
import type { Amount, Height, PublicKey, TxId } from "../../src/schema/primitives.js"
import { BlockHashHex, TxIdHex } from "../../src/schema/primitives.js"
import { decodeTx, encodeTx, MAX_TX_BYTES, readTx, type Tx } from "../../src/schema/tx.js"
import { arbBlock, arbCoin, arbHeader, arbTx, mutate } from "../support/arbitraries.js"

const SEED = 0x5eed

const codecs = [
  { name: "Tx", arb: arbTx as fc.Arbitrary<unknown>, encode: encodeTx, decode: decodeTx, read: readTx },
  { name: "BlockHeader", arb: arbHeader, encode: encodeHeader, decode: decodeHeader, read: undefined },
  { name: "Block", arb: arbBlock, encode: encodeBlock, decode: decodeBlock, read: readBlock },
  { name: "Coin", arb: arbCoin, encode: encodeCoin, decode: decodeCoin, read: undefined },
  {
    name: "BlockUndo",
    arb: fc.array(arbCoin, { maxLength: 5 }),
    encode: encodeUndo,
    decode: decodeUndo,
    read: undefined,
  },
] as const

describe.each(codecs)("$name binary codec", ({ arb, encode, decode }) => {
  const enc = encode as (v: unknown) => Uint8Array
  const dec = decode as (b: Uint8Array) => Either.Either<unknown, unknown>

  it("round-trips: decode(encode(x)) equals x and re-encodes to the same bytes", () => {
    fc.assert(
      fc.property(arb, (value) => {
        const bytes = enc(value)
        const decoded = dec(bytes)
        expect(Either.isRight(decoded)).toBe(true)
        if (Either.isRight(decoded)) {
          expect(decoded.right).toEqual(value)
          expect(toHex(enc(decoded.right))).toBe(toHex(bytes))
        }
      }),
      { seed: SEED, numRuns: 300 },
    )
  })

  it("never throws on random bytes, and whatever it accepts is canonical (re-encodes to the input)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), (bytes) => {
        const decoded = dec(bytes)
        if (Either.isRight(decoded)) expect(toHex(enc(decoded.right))).toBe(toHex(bytes))
      }),
      { seed: SEED, numRuns: 2000 },
    )
  })

  it("never throws on mutated encodings, and accepts a mutation only if it is itself canonical", () => {
    fc.assert(
      fc.property(
        arb.chain((value) => mutate(enc(value))),
        (bytes) => {
          const decoded = dec(bytes)
          if (Either.isRight(decoded)) expect(toHex(enc(decoded.right))).toBe(toHex(bytes))
          else expect((decoded.left as { _tag: string })._tag).toBe("DecodeError")
        },
      ),
      { seed: SEED, numRuns: 2000 },
    )
  })
})

describe("bounded decoding: untrusted lengths never drive allocation", () => {
  const readers = [
    { name: "Tx", read: readTx },
    { name: "Block", read: readBlock },
  ]
  it.each(readers)(
    "$name: bytes copied out never exceed the input, for random and mutated input",
    ({ read }) => {
      fc.assert(
        fc.property(
          fc.oneof(
            fc.uint8Array({ maxLength: 300 }),
            arbBlock.chain((b) => mutate(encodeBlock(b))),
          ),
          (bytes) => {
            const r = new Reader(bytes)
            try {
              read(r)
            } catch (e) {
              expect((e as { _tag: string })._tag).toBe("DecodeError")
            }
            expect(r.bytesCopied).toBeLessThanOrEqual(bytes.length)
          },
        ),
        { seed: SEED, numRuns: 3000 },
      )
    },
  )

  it("a count claiming 4 billion inputs in a 20-byte tx is refused before any element is read", () => {
    const bytes = Uint8Array.of(1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0xff, ...new Uint8Array(11))
    const r = decodeTx(bytes)
    expect(Either.isLeft(r) && r.left.reason).toBe("length-exceeds-cap")
  })

  it("a count that fits the cap but not the bytes left is length-exceeds-input", () => {
    const bytes = Uint8Array.of(1, 0, 0, 0, 0xfd, 0x00, 0x10, ...new Uint8Array(40))
    const r = decodeTx(bytes)
    expect(Either.isLeft(r) && r.left).toMatchObject({
      reason: "length-exceeds-input",
      what: "tx.inputs",
      offset: 4,
    })
  })

  it("input larger than the type's cap is refused before reading", () => {
    const r = decodeTx(new Uint8Array(MAX_TX_BYTES + 1))
    expect(Either.isLeft(r) && r.left).toMatchObject({ reason: "length-exceeds-cap", offset: 0 })
  })
})

describe("canonical encoding", () => {
  const oneInputTx: Tx = {
    version: 1,
    inputs: [{ prevout: { txid: new Uint8Array(32) as TxId, index: 7 }, witness: new Uint8Array(64) }],
    outputs: [{ value: 5n as Amount, pubkey: new Uint8Array(32) as PublicKey }],
    lockTime: 0,
  }
  const canonical = encodeTx(oneInputTx)

  it("a non-minimal varint (0xfd 0x01 0x00 for 1) is rejected with non-canonical-varint", () => {
    const bytes = new Uint8Array([...canonical.slice(0, 4), 0xfd, 0x01, 0x00, ...canonical.slice(5)])
    const r = decodeTx(bytes)
    expect(Either.isLeft(r) && r.left).toMatchObject({ reason: "non-canonical-varint", offset: 4 })
  })

  it("0xfe and 0xff forms of small values are non-canonical", () => {
    const r = new Reader(Uint8Array.of(0xfe, 0xff, 0xff, 0, 0))
    expect(() => r.varint("x", 1e9)).toThrowError(/non-canonical-varint/)
    const r2 = new Reader(Uint8Array.of(0xff, 1, 0, 0, 0, 0, 0, 0, 0))
    expect(() => r2.varint("x", 1e9)).toThrowError(/non-canonical-varint/)
  })

  it("trailing bytes after a valid tx are rejected", () => {
    const r = decodeTx(new Uint8Array([...canonical, 0]))
    expect(Either.isLeft(r) && r.left).toMatchObject({ reason: "trailing-bytes", offset: canonical.length })
  })

  it("a witness longer than 100 bytes is length-exceeds-cap", () => {
    const big = { ...oneInputTx, inputs: [{ ...oneInputTx.inputs[0]!, witness: new Uint8Array(101) }] }
    const r = decodeTx(encodeTx(big))
    expect(Either.isLeft(r) && r.left.reason).toBe("length-exceeds-cap")
  })

  it("a coin flag other than 0/1 is invalid-value", () => {
    const bytes = encodeCoin({
      value: 1n as Amount,
      pubkey: new Uint8Array(32) as PublicKey,
      height: 3 as Height,
      coinbase: true,
    })
    bytes[bytes.length - 1] = 2
    expect(Either.isLeft(decodeCoin(bytes))).toBe(true)
  })

  it("decodeWith turns only DecodeError into Left; a bug in a reader still surfaces", () => {
    const buggy = decodeWith("buggy", 10, () => {
      throw new TypeError("bug")
    })
    expect(() => buggy(new Uint8Array(1))).toThrowError(TypeError)
  })
})

describe("Schema codecs compose the binary codecs", () => {
  it("TxFromBytes, BlockHeaderFromBytes and BlockFromBytes round-trip through Schema", () => {
    fc.assert(
      fc.property(arbBlock, (block) => {
        const bytes = Schema.encodeSync(BlockFromBytes)(block)
        expect(Schema.decodeSync(BlockFromBytes)(bytes)).toEqual(block)
        const h = Schema.encodeSync(BlockHeaderFromBytes)(block.header)
        expect(h.length).toBe(80)
        expect(Schema.decodeSync(BlockHeaderFromBytes)(h)).toEqual(block.header)
        for (const tx of block.txs)
          expect(Schema.decodeSync(TxFromBytes)(Schema.encodeSync(TxFromBytes)(tx))).toEqual(tx)
      }),
      { seed: SEED, numRuns: 100 },
    )
  })

  it("a bad encoding is a ParseError carrying the decoder's message", () => {
    const r = Schema.decodeEither(TxFromBytes)(Uint8Array.of(1, 2, 3))
    expect(Either.isLeft(r) && r.left.message).toMatch(/cannot decode tx\.version: truncated at byte 0/)
  })

  it("hex schemas accept 64 hex characters and reject anything else", () => {
    const hex = "ab".repeat(32)
    expect(toHex(Schema.decodeUnknownSync(TxIdHex)(hex))).toBe(hex)
    expect(toHex(Schema.decodeUnknownSync(BlockHashHex)(hex.toUpperCase()))).toBe(hex)
    expect(Either.isLeft(Schema.decodeUnknownEither(TxIdHex)("ab".repeat(31)))).toBe(true)
    expect(Either.isLeft(Schema.decodeUnknownEither(TxIdHex)("zz".repeat(32)))).toBe(true)
    expect(Schema.encodeSync(TxIdHex)(Schema.decodeUnknownSync(TxIdHex)(hex))).toBe(hex)
  })
})
