import { Schema } from "effect"
import { BlockHeader, HEADER_BYTES, readHeader, writeHeader } from "./block.js"
import { decodeWith, Writer } from "./codec.js"
import { BlockHash, Height } from "./primitives.js"

/**
 * BlockStatus is how far a known block has got: its header is valid (`header`), its data is stored
 * (`data`), it connected to a chain and passed every rule (`valid`), or it, or an ancestor, broke a
 * rule (`invalid`: never downloaded or validated again).
 */
export const BlockStatus = Schema.Literal("header", "data", "valid", "invalid")
export type BlockStatus = typeof BlockStatus.Type

/** IndexEntry is one block the node knows of, persisted so the header tree survives a restart. */
export const IndexEntry = Schema.Struct({
  hash: BlockHash,
  header: BlockHeader,
  height: Height,
  /** total work of the chain ending here (sum of blockWork from genesis) */
  chainwork: Schema.BigIntFromSelf,
  status: BlockStatus,
})
export type IndexEntry = typeof IndexEntry.Type

const statusCodes: ReadonlyArray<BlockStatus> = ["header", "data", "valid", "invalid"]

/** INDEX_ENTRY_BYTES: header 80 ‖ height u32 ‖ chainwork 32 (big-endian) ‖ status u8 (the hash is the key). */
export const INDEX_ENTRY_BYTES = HEADER_BYTES + 4 + 32 + 1

export const encodeIndexEntry = (e: IndexEntry): Uint8Array => {
  const w = new Writer(INDEX_ENTRY_BYTES)
  writeHeader(w, e.header)
  w.u32(e.height)
  let work = e.chainwork
  const be = new Uint8Array(32)
  for (let i = 31; i >= 0; i--) {
    be[i] = Number(work & 0xffn)
    work >>= 8n
  }
  w.raw(be)
  w.u8(statusCodes.indexOf(e.status))
  return w.finish()
}

/** decodeIndexEntry needs the hash (the record's key) to rebuild the entry. */
export const decodeIndexEntry = (hash: BlockHash, bytes: Uint8Array) =>
  decodeWith("index entry", INDEX_ENTRY_BYTES, (r): IndexEntry => {
    const header = readHeader(r)
    const height = r.u32("index.height")
    if (height > 0x7fffffff) r.fail("invalid-value", "index.height")
    let chainwork = 0n
    for (const byte of r.bytesN(32, "index.chainwork")) chainwork = (chainwork << 8n) | BigInt(byte)
    const status = statusCodes[r.u8("index.status")] ?? r.fail("invalid-value", "index.status")
    return { hash, header, height: height as Height, chainwork, status }
  })(bytes)

/**
 * ChainTip is the persisted pointer to the active chain's tip and the UTXO set's commitment at it.
 * It is written in the same atomic transaction as the UTXO changes that lead to it.
 */
export const ChainTip = Schema.Struct({
  hash: BlockHash,
  height: Height,
  /** the UTXO set's multiset-hash state at this tip (opaque to storage) */
  utxoCommitment: Schema.Uint8ArrayFromSelf,
})
export type ChainTip = typeof ChainTip.Type

export const encodeChainTip = (t: ChainTip): Uint8Array => {
  const w = new Writer(32 + 4 + 4 + t.utxoCommitment.length)
  w.raw(t.hash)
  w.u32(t.height)
  w.u32(t.utxoCommitment.length)
  w.raw(t.utxoCommitment)
  return w.finish()
}

/** MAX_COMMITMENT_BYTES bounds the commitment state a tip record may carry. */
const MAX_COMMITMENT_BYTES = 4096

export const decodeChainTip = decodeWith("chain tip", 40 + MAX_COMMITMENT_BYTES, (r): ChainTip => {
  const hash = r.bytesN(32, "tip.hash") as BlockHash
  const height = r.u32("tip.height")
  if (height > 0x7fffffff) r.fail("invalid-value", "tip.height")
  const n = r.u32("tip.commitment.length")
  if (n > MAX_COMMITMENT_BYTES) r.fail("length-exceeds-cap", "tip.commitment")
  return { hash, height: height as Height, utxoCommitment: r.bytesN(n, "tip.commitment") }
})
