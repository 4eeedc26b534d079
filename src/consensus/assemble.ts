import type { Block, BlockHeader } from "../schema/block.js"
import type { Coin } from "../schema/coin.js"
import type { BlockHash, Height, TxId } from "../schema/primitives.js"
import { encodeTx, type Tx, type TxOut } from "../schema/tx.js"
import { headerHash } from "./checkBlock.js"
import { NULL_INDEX } from "./checkTx.js"
import { txidOf } from "./hash.js"
import { merkleRoot } from "./merkle.js"
import { checkProofOfWork } from "./pow.js"
import { sighashes } from "./sighash.js"
import type { SignatureBackend } from "./signature.js"

/**
 * makeCoinbase builds a coinbase for `height`: one input spending the null outpoint whose data is the
 * height (u32 little-endian, the BIP34 commitment) followed by `extra` (≤ 96 bytes: extra nonce, tag).
 */
export const makeCoinbase = (
  height: Height | number,
  outputs: ReadonlyArray<TxOut>,
  extra: Uint8Array = new Uint8Array(0),
): Tx => {
  const witness = new Uint8Array(4 + extra.length)
  new DataView(witness.buffer).setUint32(0, height, true)
  witness.set(extra, 4)
  return {
    version: 1,
    inputs: [{ prevout: { txid: new Uint8Array(32) as TxId, index: NULL_INDEX }, witness }],
    outputs,
    lockTime: 0,
  }
}

/** HeaderTemplate is a header without its merkle root and nonce, which assembleBlock fills in. */
export interface HeaderTemplate {
  readonly version?: number
  readonly prev: BlockHash
  readonly time: number
  readonly bits: number
}

/** assembleBlock puts `txs` (coinbase first) under a header committing to their merkle root, nonce 0. */
export const assembleBlock = (template: HeaderTemplate, txs: ReadonlyArray<Tx>): Block => {
  const { root } = merkleRoot(txs.map((tx) => txidOf(encodeTx(tx))))
  const header: BlockHeader = {
    version: template.version ?? 1,
    prev: template.prev,
    merkleRoot: root,
    time: template.time,
    bits: template.bits,
    nonce: 0,
  }
  return { header, txs }
}

/**
 * grind searches nonces from the header's own until the proof of work holds, for at most `maxTries`
 * hashes; undefined when none did. Instant on regtest; the miner actor uses its own batched kernel.
 */
export const grind = (block: Block, powLimit: bigint, maxTries = 0x100000000): Block | undefined => {
  let header = block.header
  for (let i = 0; i < maxTries; i++) {
    if (checkProofOfWork(headerHash(header), header.bits, powLimit)) return { header, txs: block.txs }
    if (header.nonce === 0xffffffff) return undefined
    header = { ...header, nonce: header.nonce + 1 }
  }
  return undefined
}

/**
 * signTx fills every input's witness with a BIP340 signature over its sighash. `coins[i]` is the coin
 * input i spends and `secretKeys[i]` the key that owns it; `aux(i)` gives BIP340's auxiliary randomness
 * (the caller decides: random in a wallet, fixed in a test).
 */
export const signTx = (
  unsigned: Tx,
  coins: ReadonlyArray<Coin>,
  secretKeys: ReadonlyArray<Uint8Array>,
  backend: SignatureBackend,
  aux: (index: number) => Uint8Array,
): Tx => {
  const messages = sighashes(unsigned, coins)
  return {
    ...unsigned,
    inputs: unsigned.inputs.map((input, i) => ({
      prevout: input.prevout,
      witness: backend.sign(messages[i]!, secretKeys[i]!, aux(i)),
    })),
  }
}
