import { Schema } from "effect"
import { decodeWith, type Reader, Writer } from "./codec.js"
import { Amount, Height, PublicKey } from "./primitives.js"

/** Coin is an unspent output as the UTXO set keeps it: what it pays, to whom, and where it was created. */
export const Coin = Schema.Struct({
  value: Amount,
  pubkey: PublicKey,
  height: Height,
  coinbase: Schema.Boolean,
})
export type Coin = typeof Coin.Type

/** COIN_BYTES: value u64 ‖ key 32 ‖ height u32 ‖ coinbase u8. */
export const COIN_BYTES = 8 + 32 + 4 + 1

export const writeCoin = (w: Writer, c: Coin): void => {
  w.u64(c.value)
  w.raw(c.pubkey)
  w.u32(c.height)
  w.u8(c.coinbase ? 1 : 0)
}

export const readCoin = (r: Reader): Coin => {
  const value = r.u64("coin.value") as Amount
  const pubkey = r.bytesN(32, "coin.pubkey") as PublicKey
  const height = r.u32("coin.height")
  if (height > 0x7fffffff) r.fail("invalid-value", "coin.height")
  const flag = r.u8("coin.coinbase")
  if (flag > 1) r.fail("invalid-value", "coin.coinbase")
  return { value, pubkey, height: height as Height, coinbase: flag === 1 }
}

export const encodeCoin = (c: Coin): Uint8Array => {
  const w = new Writer(COIN_BYTES)
  writeCoin(w, c)
  return w.finish()
}

export const decodeCoin = decodeWith("coin", COIN_BYTES, readCoin)

/** BlockUndo is the coins a block spent, in input order (coinbase excluded): enough to disconnect it. */
export type BlockUndo = ReadonlyArray<Coin>

/** MAX_UNDO_COINS bounds a decoded undo record: no block can spend more inputs than fit in it. */
const MAX_UNDO_COINS = Math.floor(2_000_000 / 37)

export const encodeUndo = (undo: BlockUndo): Uint8Array => {
  const w = new Writer(4 + undo.length * COIN_BYTES)
  w.u32(undo.length)
  for (const c of undo) writeCoin(w, c)
  return w.finish()
}

export const decodeUndo = decodeWith("undo", 4 + MAX_UNDO_COINS * COIN_BYTES, (r): BlockUndo => {
  const n = r.u32("undo.count")
  if (n * COIN_BYTES > r.remaining) r.fail("length-exceeds-input", "undo.count")
  const coins: Array<Coin> = []
  for (let i = 0; i < n; i++) coins.push(readCoin(r))
  return coins
})
