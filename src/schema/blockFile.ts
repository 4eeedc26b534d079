import type { Either } from "effect"
import { MAX_BLOCK_BYTES } from "./block.js"
import { decodeWith, Writer } from "./codec.js"
import type { DecodeError } from "./DecodeError.js"

/**
 * A blocks file holds blocks one after another, each as `magic (4) ‖ length u32 LE ‖ canonical block
 * bytes` (Core's bootstrap.dat layout): the unit of block import, reindex-from-file and test fixtures.
 * The magic names the network, so a file of another network is refused rather than half-imported.
 */
export const encodeBlockFile = (magic: Uint8Array, blocks: ReadonlyArray<Uint8Array>): Uint8Array => {
  const w = new Writer(blocks.reduce((n, b) => n + 8 + b.length, 0))
  for (const b of blocks) {
    w.raw(magic)
    w.u32(b.length)
    w.raw(b)
  }
  return w.finish()
}

/**
 * decodeBlockFile splits a blocks file into the blocks' bytes (not yet decoded or checked). A record
 * with another magic, a length over MAX_BLOCK_BYTES or past the end of the file is a DecodeError.
 */
export const decodeBlockFile = (
  magic: Uint8Array,
  bytes: Uint8Array,
): Either.Either<Array<Uint8Array>, DecodeError> =>
  decodeWith("blocks file", Number.MAX_SAFE_INTEGER, (r) => {
    const blocks: Array<Uint8Array> = []
    while (r.remaining > 0) {
      const start = r.pos
      for (let i = 0; i < 4; i++) {
        if (r.u8("blocks file magic") !== magic[i]) {
          r.pos = start
          r.fail("invalid-value", "blocks file magic")
        }
      }
      const n = r.u32("blocks file length")
      if (n > MAX_BLOCK_BYTES) r.fail("length-exceeds-cap", "blocks file record")
      if (n > r.remaining) r.fail("length-exceeds-input", "blocks file record")
      blocks.push(r.bytesN(n, "blocks file record"))
    }
    return blocks
  })(bytes)
