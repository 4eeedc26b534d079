import { Schema } from "effect"
import { decodeWith, type Reader, varintSize, Writer as W, type Writer } from "./codec.js"
import { Amount, PublicKey, TxId, U32 } from "./primitives.js"

/** MAX_TX_BYTES caps one serialized transaction (consensus `bad-txns-oversize`, and the decoder's cap). */
export const MAX_TX_BYTES = 1_000_000
/** MAX_WITNESS_BYTES caps an input's witness: a 64-byte signature, or a coinbase's 4..100 bytes of data. */
export const MAX_WITNESS_BYTES = 100

/** OutPoint names one output of an earlier transaction. */
export const OutPoint = Schema.Struct({ txid: TxId, index: U32 })
export type OutPoint = typeof OutPoint.Type

/**
 * TxIn spends `prevout`. `witness` is the 64-byte BIP340 signature over the input's sighash; in a
 * coinbase (null prevout) it is 4..100 bytes of coinbase data starting with the block height.
 */
export const TxIn = Schema.Struct({
  prevout: OutPoint,
  witness: Schema.Uint8ArrayFromSelf.pipe(
    Schema.filter((b) => b.length <= MAX_WITNESS_BYTES, {
      message: () => `at most ${MAX_WITNESS_BYTES} bytes`,
    }),
  ),
})
export type TxIn = typeof TxIn.Type

/** TxOut pays `value` units to the holder of the x-only key `pubkey`. */
export const TxOut = Schema.Struct({ value: Amount, pubkey: PublicKey })
export type TxOut = typeof TxOut.Type

/** Tx is a transaction: inputs spend earlier outputs, outputs create new ones. */
export const Tx = Schema.Struct({
  version: U32,
  inputs: Schema.Array(TxIn),
  outputs: Schema.Array(TxOut),
  lockTime: U32,
})
export type Tx = typeof Tx.Type

/** Smallest encodings, used to bound counts by the bytes left before anything is allocated. */
const MIN_TXIN_BYTES = 32 + 4 + 1
const TXOUT_BYTES = 8 + 32
export const MIN_TX_BYTES = 4 + 1 + 1 + 4

/** txSize is the exact serialized size of a transaction. */
export const txSize = (tx: Tx): number => {
  let n =
    4 + varintSize(tx.inputs.length) + varintSize(tx.outputs.length) + tx.outputs.length * TXOUT_BYTES + 4
  for (const input of tx.inputs) n += 36 + varintSize(input.witness.length) + input.witness.length
  return n
}

/** writeTx serializes: version u32 ‖ n ‖ (txid ‖ index u32 ‖ varbytes witness)… ‖ n ‖ (value u64 ‖ key)… ‖ lockTime u32. */
export const writeTx = (w: Writer, tx: Tx): void => {
  w.u32(tx.version)
  w.varint(tx.inputs.length)
  for (const input of tx.inputs) {
    w.raw(input.prevout.txid)
    w.u32(input.prevout.index)
    w.varBytes(input.witness)
  }
  w.varint(tx.outputs.length)
  for (const output of tx.outputs) {
    w.u64(output.value)
    w.raw(output.pubkey)
  }
  w.u32(tx.lockTime)
}

/** encodeTx returns the canonical serialization. */
export const encodeTx = (tx: Tx): Uint8Array => {
  const w = new W(txSize(tx))
  writeTx(w, tx)
  return w.finish()
}

/** readTx decodes one transaction at the reader's position (used for standalone txs and inside blocks). */
export const readTx = (r: Reader): Tx => {
  const version = r.u32("tx.version")
  const nIn = r.count("tx.inputs", MAX_TX_BYTES, MIN_TXIN_BYTES)
  const inputs: Array<TxIn> = []
  for (let i = 0; i < nIn; i++) {
    const txid = r.bytesN(32, "txin.prevout.txid") as TxId
    const index = r.u32("txin.prevout.index")
    const witness = r.varBytes("txin.witness", MAX_WITNESS_BYTES)
    inputs.push({ prevout: { txid, index }, witness })
  }
  const nOut = r.count("tx.outputs", MAX_TX_BYTES, TXOUT_BYTES)
  const outputs: Array<TxOut> = []
  for (let i = 0; i < nOut; i++) {
    const value = r.u64("txout.value") as Amount
    const pubkey = r.bytesN(32, "txout.pubkey") as PublicKey
    outputs.push({ value, pubkey })
  }
  const lockTime = r.u32("tx.lockTime")
  return { version, inputs, outputs, lockTime }
}

/** decodeTx decodes exactly one canonical transaction of at most MAX_TX_BYTES. */
export const decodeTx = decodeWith("tx", MAX_TX_BYTES, readTx)
