import type { Coin } from "../schema/coin.js"
import { toHex } from "../schema/hex.js"
import type { OutPoint } from "../schema/tx.js"

/** outpointKey is the string key of an outpoint in UTXO maps: `<txid hex>:<index>` (connectBlock builds the same form inline). */
export const outpointKey = (txid: Uint8Array, index: number): string => `${toHex(txid)}:${index}`

/** keyOf is outpointKey for an OutPoint. */
export const keyOf = (op: OutPoint): string => outpointKey(op.txid, op.index)

/** UtxoView is read access to the unspent outputs at some tip. Consensus code only reads through it. */
export interface UtxoView {
  readonly get: (key: string) => Coin | undefined
}

/**
 * UtxoDelta is the net change a block makes to the UTXO set: outputs it removes and outputs it adds.
 * Outputs both created and spent inside the block appear in neither list. Connect and disconnect both
 * yield one; applying connect's and then disconnect's delta restores the set exactly.
 */
export interface UtxoDelta {
  readonly spent: ReadonlyArray<string>
  readonly created: ReadonlyArray<readonly [key: string, coin: Coin]>
}

/**
 * MemoryUtxoSet is a plain in-memory UTXO set: the view of tests, benchmarks and the memory storage
 * layer. Not thread-safe; one fiber owns it.
 */
export class MemoryUtxoSet implements UtxoView {
  readonly coins = new Map<string, Coin>()

  get = (key: string): Coin | undefined => this.coins.get(key)

  /** apply removes every spent key and adds every created coin. */
  apply(delta: UtxoDelta): void {
    for (const key of delta.spent) this.coins.delete(key)
    for (const [key, coin] of delta.created) this.coins.set(key, coin)
  }

  get size(): number {
    return this.coins.size
  }
}
