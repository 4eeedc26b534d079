import { allocBytes, Writer } from "../schema/codec.js"
import type { Coin } from "../schema/coin.js"
import type { Tx } from "../schema/tx.js"
import { sha256, tagPrefix } from "./hash.js"

/** SIGHASH_TAG domain-separates fibercoin signature hashes from every other use of SHA-256 (BIP340 tagging). */
export const SIGHASH_TAG = "FiberSighash"

/**
 * txSighashDigest commits, once per transaction, to everything every input signs (BIP341's
 * SIGHASH_DEFAULT idea: a signer knows exactly what it spends and where it all goes, so an offline
 * signer cannot be lied to about input amounts):
 *
 *   sha256(version u32 ‖ lockTime u32 ‖ nIn u32 ‖ (txid ‖ index u32 ‖ amount u64 ‖ key)… ‖ nOut u32 ‖ (value u64 ‖ key)…)
 *
 * `spent[i]` is the coin input i spends. Linear in the transaction's size, computed once, so signing
 * or checking n inputs costs O(n) hashing, not O(n²) (the quadratic-sighash attack BIP143 fixed).
 */
export const txSighashDigest = (tx: Tx, spent: ReadonlyArray<Coin>): Uint8Array => {
  const w = new Writer(4 + 4 + 4 + tx.inputs.length * (32 + 4 + 8 + 32) + 4 + tx.outputs.length * (8 + 32))
  w.u32(tx.version)
  w.u32(tx.lockTime)
  w.u32(tx.inputs.length)
  for (let i = 0; i < tx.inputs.length; i++) {
    const input = tx.inputs[i]!
    const coin = spent[i]!
    w.raw(input.prevout.txid)
    w.u32(input.prevout.index)
    w.u64(coin.value)
    w.raw(coin.pubkey)
  }
  w.u32(tx.outputs.length)
  for (const output of tx.outputs) {
    w.u64(output.value)
    w.raw(output.pubkey)
  }
  return sha256(w.finish())
}

/**
 * sighashes lists the 32-byte message each input signs: hash_FiberSighash(digest ‖ index u32), with
 * the digest of txSighashDigest. One buffer serves every input of the transaction.
 */
export const sighashes = (tx: Tx, spent: ReadonlyArray<Coin>): Array<Uint8Array> => {
  const buf = allocBytes(64 + 32 + 4)
  buf.set(tagPrefix(SIGHASH_TAG), 0)
  buf.set(txSighashDigest(tx, spent), 64)
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  const out: Array<Uint8Array> = []
  for (let i = 0; i < tx.inputs.length; i++) {
    view.setUint32(96, i, true)
    out.push(sha256(buf))
  }
  return out
}
