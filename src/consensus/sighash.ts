import { Writer } from "../schema/codec.js"
import type { Coin } from "../schema/coin.js"
import type { Tx } from "../schema/tx.js"
import { sha256, taggedHash } from "./hash.js"

/** SIGHASH_TAG domain-separates fibercoin signature hashes from every other use of SHA-256 (BIP340 tagging). */
export const SIGHASH_TAG = "FiberSighash"

/**
 * TxSighashData is what every input's signature hash shares, computed once per transaction:
 * sha_spent commits to every input's outpoint, amount and key, and sha_outputs to every output
 * (BIP341's SIGHASH_DEFAULT idea: a signer knows exactly what it spends and where it all goes, so an
 * offline signer cannot be lied to about input amounts).
 */
export interface TxSighashData {
  readonly version: number
  readonly lockTime: number
  readonly shaSpent: Uint8Array
  readonly shaOutputs: Uint8Array
}

/** precomputeSighash hashes the spent coins and the outputs of `tx`; `spent[i]` is the coin input i spends. */
export const precomputeSighash = (tx: Tx, spent: ReadonlyArray<Coin>): TxSighashData => {
  const ws = new Writer(tx.inputs.length * (32 + 4 + 8 + 32))
  for (let i = 0; i < tx.inputs.length; i++) {
    const input = tx.inputs[i]!
    const coin = spent[i]!
    ws.raw(input.prevout.txid)
    ws.u32(input.prevout.index)
    ws.u64(coin.value)
    ws.raw(coin.pubkey)
  }
  const wo = new Writer(tx.outputs.length * (8 + 32))
  for (const output of tx.outputs) {
    wo.u64(output.value)
    wo.raw(output.pubkey)
  }
  return {
    version: tx.version,
    lockTime: tx.lockTime,
    shaSpent: sha256(ws.finish()),
    shaOutputs: sha256(wo.finish()),
  }
}

/**
 * sighashOf is the 32-byte message input `index` signs:
 * hash_FiberSighash(version u32 ‖ lockTime u32 ‖ sha_spent ‖ sha_outputs ‖ index u32).
 */
export const sighashOf = (data: TxSighashData, index: number): Uint8Array => {
  const w = new Writer(4 + 4 + 32 + 32 + 4)
  w.u32(data.version)
  w.u32(data.lockTime)
  w.raw(data.shaSpent)
  w.raw(data.shaOutputs)
  w.u32(index)
  return taggedHash(SIGHASH_TAG, w.finish())
}
