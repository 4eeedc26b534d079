import { Schema } from "effect"

/**
 * DecodeError is the one failure of every binary decoder: truncated input, a non-minimal varint, a
 * count or length past the input or past the type's cap, trailing bytes. `offset` is where the
 * decoder stood. Decoders return it (in an Either); they never throw to their caller.
 */
export class DecodeError extends Schema.TaggedError<DecodeError>()("DecodeError", {
  reason: Schema.Literal(
    "truncated",
    "non-canonical-varint",
    "length-exceeds-input",
    "length-exceeds-cap",
    "trailing-bytes",
    "invalid-value",
  ),
  what: Schema.String,
  offset: Schema.Number,
}) {
  override get message(): string {
    return `cannot decode ${this.what}: ${this.reason} at byte ${this.offset}`
  }
}
