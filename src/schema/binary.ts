import { Either, ParseResult, Schema } from "effect"
import { Block, BlockHeader, decodeBlock, decodeHeader, encodeBlock, encodeHeader } from "./block.js"
import type { DecodeError } from "./DecodeError.js"
import { decodeTx, encodeTx, Tx } from "./tx.js"

/**
 * binary turns a bounded decoder/encoder pair into a Schema from bytes to the value, so wire and RPC
 * code can compose it like any other Schema. The DecodeError's message becomes the ParseError's.
 */
const binary = <A, I, R>(
  to: Schema.Schema<A, I, R>,
  decode: (bytes: Uint8Array) => Either.Either<A, DecodeError>,
  encode: (value: A) => Uint8Array,
) =>
  Schema.transformOrFail(Schema.Uint8ArrayFromSelf, Schema.typeSchema(to), {
    strict: true,
    decode: (bytes, _, ast) =>
      Either.match(decode(bytes), {
        onLeft: (e) => ParseResult.fail(new ParseResult.Type(ast, bytes, e.message)),
        onRight: ParseResult.succeed,
      }),
    encode: (value) => ParseResult.succeed(encode(value)),
  })

/** TxFromBytes: canonical transaction bytes ⇄ Tx. */
export const TxFromBytes = binary(Tx, decodeTx, encodeTx)
/** BlockHeaderFromBytes: 80 bytes ⇄ BlockHeader. */
export const BlockHeaderFromBytes = binary(BlockHeader, decodeHeader, encodeHeader)
/** BlockFromBytes: canonical block bytes ⇄ Block. */
export const BlockFromBytes = binary(Block, decodeBlock, encodeBlock)
