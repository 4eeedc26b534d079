import { ParseResult, Schema } from "effect"
import { fromHex, toHex } from "./hex.js"

/** Bytes32 is any 32-byte string: a hash, an x-only key, a merkle root. */
export const Bytes32 = Schema.Uint8ArrayFromSelf.pipe(
  Schema.filter((b) => b.length === 32, { message: () => "expected exactly 32 bytes" }),
)

/** BlockHash is sha256d of an 80-byte header, in byte order. */
export const BlockHash = Bytes32.pipe(Schema.brand("BlockHash"))
export type BlockHash = typeof BlockHash.Type

/** TxId is sha256d of a transaction's serialization, in byte order. */
export const TxId = Bytes32.pipe(Schema.brand("TxId"))
export type TxId = typeof TxId.Type

/** PublicKey is a BIP340 x-only public key (32 bytes). Whether it lifts to a curve point is checked at verification. */
export const PublicKey = Bytes32.pipe(Schema.brand("PublicKey"))
export type PublicKey = typeof PublicKey.Type

/** Signature is a 64-byte BIP340 signature (r ‖ s). */
export const Signature = Schema.Uint8ArrayFromSelf.pipe(
  Schema.filter((b) => b.length === 64, { message: () => "expected exactly 64 bytes" }),
  Schema.brand("Signature"),
)
export type Signature = typeof Signature.Type

/** MAX_U64 bounds every amount on the wire; MAX_MONEY (consensus) bounds it further. */
export const MAX_U64 = (1n << 64n) - 1n

/** Amount is a number of units (1 coin = 100,000,000 units) as a bigint, never a float. */
export const Amount = Schema.BigIntFromSelf.pipe(
  Schema.greaterThanOrEqualToBigInt(0n),
  Schema.lessThanOrEqualToBigInt(MAX_U64),
  Schema.brand("Amount"),
)
export type Amount = typeof Amount.Type

/** U32 is an unsigned 32-bit integer field (versions, times, bits, nonces, indexes). */
export const U32 = Schema.Number.pipe(Schema.int(), Schema.between(0, 0xffffffff))

/** Height is a block's distance from genesis. */
export const Height = Schema.Number.pipe(Schema.int(), Schema.between(0, 0x7fffffff), Schema.brand("Height"))
export type Height = typeof Height.Type

/** PeerId names one connection for its lifetime. */
export const PeerId = Schema.Number.pipe(Schema.int(), Schema.nonNegative(), Schema.brand("PeerId"))
export type PeerId = typeof PeerId.Type

/** HexBytes decodes a hex string (either case) to bytes and encodes bytes as lower-case hex. */
export const HexBytes = Schema.transformOrFail(Schema.String, Schema.Uint8ArrayFromSelf, {
  strict: true,
  decode: (s, _, ast) => {
    const bytes = fromHex(s)
    return bytes === undefined
      ? ParseResult.fail(new ParseResult.Type(ast, s, "expected a hex string"))
      : ParseResult.succeed(bytes)
  },
  encode: (b) => ParseResult.succeed(toHex(b)),
})

/** hexOf composes HexBytes with a byte schema, for RPC and config: `Schema.decodeUnknownEither(hexOf(TxId))("ab…")`. */
export const hexOf = <A, R>(to: Schema.Schema<A, Uint8Array, R>) => Schema.compose(HexBytes, to)

/** Hex string of a block hash, as RPC shows it. */
export const BlockHashHex = hexOf(BlockHash)
/** Hex string of a txid, as RPC shows it. */
export const TxIdHex = hexOf(TxId)
