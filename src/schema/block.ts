import { Schema } from "effect"
import { decodeWith, type Reader, varintSize, Writer } from "./codec.js"
import { BlockHash, Bytes32, U32 } from "./primitives.js"
import { MIN_TX_BYTES, readTx, Tx, txSize, writeTx } from "./tx.js"

/** HEADER_BYTES is the fixed size of a serialized block header. */
export const HEADER_BYTES = 80
/** MAX_BLOCK_BYTES caps a serialized block (consensus `bad-blk-length`, and the decoder's cap); it fits a 4 MB frame. */
export const MAX_BLOCK_BYTES = 2_000_000

/** BlockHeader: version ‖ prev ‖ merkle root ‖ time ‖ bits ‖ nonce, 80 bytes. */
export const BlockHeader = Schema.Struct({
  version: U32,
  prev: BlockHash,
  merkleRoot: Bytes32,
  time: U32,
  bits: U32,
  nonce: U32,
})
export type BlockHeader = typeof BlockHeader.Type

/** Block is a header and its transactions, the first of which is the coinbase. */
export const Block = Schema.Struct({ header: BlockHeader, txs: Schema.Array(Tx) })
export type Block = typeof Block.Type

export const writeHeader = (w: Writer, h: BlockHeader): void => {
  w.u32(h.version)
  w.raw(h.prev)
  w.raw(h.merkleRoot)
  w.u32(h.time)
  w.u32(h.bits)
  w.u32(h.nonce)
}

/** encodeHeader returns the 80-byte serialization that the block hash is computed over. */
export const encodeHeader = (h: BlockHeader): Uint8Array => {
  const w = new Writer(HEADER_BYTES)
  writeHeader(w, h)
  return w.finish()
}

export const readHeader = (r: Reader): BlockHeader => ({
  version: r.u32("header.version"),
  prev: r.bytesN(32, "header.prev") as BlockHash,
  merkleRoot: r.bytesN(32, "header.merkleRoot"),
  time: r.u32("header.time"),
  bits: r.u32("header.bits"),
  nonce: r.u32("header.nonce"),
})

/** decodeHeader decodes exactly 80 bytes. */
export const decodeHeader = decodeWith("header", HEADER_BYTES, readHeader)

/** blockSize is the exact serialized size of a block. */
export const blockSize = (block: Block): number => {
  let n = HEADER_BYTES + varintSize(block.txs.length)
  for (const tx of block.txs) n += txSize(tx)
  return n
}

export const encodeBlock = (block: Block): Uint8Array => {
  const w = new Writer(blockSize(block))
  writeHeader(w, block.header)
  w.varint(block.txs.length)
  for (const tx of block.txs) writeTx(w, tx)
  return w.finish()
}

/**
 * readBlock decodes a header and its transactions; the tx count is bounded by the bytes left.
 * `onTx(start, end)`, when given, is told where each transaction's encoding lies in `r.bytes`.
 */
export const readBlock = (r: Reader, onTx?: (start: number, end: number) => void): Block => {
  const header = readHeader(r)
  const n = r.count("block.txs", MAX_BLOCK_BYTES, MIN_TX_BYTES)
  const txs: Array<Tx> = []
  for (let i = 0; i < n; i++) {
    const start = r.pos
    txs.push(readTx(r))
    onTx?.(start, r.pos)
  }
  return { header, txs }
}

/** decodeBlock decodes exactly one canonical block of at most MAX_BLOCK_BYTES. */
export const decodeBlock = decodeWith("block", MAX_BLOCK_BYTES, (r) => readBlock(r))
