import { Either } from "effect"
import type { Coin } from "../schema/coin.js"
import { MAX_TX_BYTES, type Tx, txSize } from "../schema/tx.js"
import { type RuleError, txError } from "./errors.js"
import { COIN } from "./pow.js"
import { sighashes } from "./sighash.js"
import type { SignatureCheck } from "./signature.js"
import { keyOf } from "./utxo.js"

/** MAX_MONEY: no amount, output sum or fee may exceed 21 million coins (Core's MoneyRange). */
export const MAX_MONEY = 21_000_000n * COIN
/** COINBASE_MATURITY: a coinbase output is spendable 100 blocks after the block that created it. */
export const COINBASE_MATURITY = 100
/** LOCKTIME_THRESHOLD: a lockTime below it is a height, at or above it a unix time (compared to MTP). */
export const LOCKTIME_THRESHOLD = 500_000_000
/** SIGNATURE_BYTES: a spending input's witness is exactly one BIP340 signature. */
export const SIGNATURE_BYTES = 64
/** Coinbase data is 4..100 bytes: the height (u32) and up to 96 bytes of extra nonce or message. */
export const MIN_COINBASE_DATA = 4
export const MAX_COINBASE_DATA = 100
/** NULL_INDEX marks the null prevout of a coinbase input (with an all-zero txid). */
export const NULL_INDEX = 0xffffffff

const isNullTxid = (txid: Uint8Array): boolean => {
  for (let i = 0; i < 32; i++) if (txid[i] !== 0) return false
  return true
}

/** isCoinbase: exactly one input, spending the null outpoint. */
export const isCoinbase = (tx: Tx): boolean =>
  tx.inputs.length === 1 &&
  tx.inputs[0]!.prevout.index === NULL_INDEX &&
  isNullTxid(tx.inputs[0]!.prevout.txid)

/** coinbaseHeight reads the height a coinbase commits to (its data's first 4 bytes, little-endian). */
export const coinbaseHeight = (tx: Tx): number | undefined => {
  const data = tx.inputs[0]?.witness
  if (data === undefined || data.length < 4) return undefined
  return (data[0]! | (data[1]! << 8) | (data[2]! << 16) | (data[3]! << 24)) >>> 0
}

/**
 * checkTransaction applies the context-free rules (Core's CheckTransaction): inputs and outputs
 * present, size cap, every amount and the output total within MAX_MONEY, no input spent twice, a
 * coinbase's data 4..100 bytes, and a spending input with a non-null prevout and a 64-byte signature.
 */
export const checkTransaction = (tx: Tx): Either.Either<void, RuleError> => {
  if (tx.inputs.length === 0) return Either.left(txError("bad-txns-vin-empty"))
  if (tx.outputs.length === 0) return Either.left(txError("bad-txns-vout-empty"))
  if (txSize(tx) > MAX_TX_BYTES) return Either.left(txError("bad-txns-oversize"))
  let total = 0n
  for (const output of tx.outputs) {
    if (output.value < 0n) return Either.left(txError("bad-txns-vout-negative"))
    if (output.value > MAX_MONEY) return Either.left(txError("bad-txns-vout-toolarge"))
    total += output.value
    if (total > MAX_MONEY) return Either.left(txError("bad-txns-txouttotal-toolarge"))
  }
  if (tx.inputs.length > 1) {
    const seen = new Set<string>()
    for (const input of tx.inputs) {
      const key = keyOf(input.prevout)
      if (seen.has(key)) return Either.left(txError("bad-txns-inputs-duplicate"))
      seen.add(key)
    }
  }
  if (isCoinbase(tx)) {
    const n = tx.inputs[0]!.witness.length
    if (n < MIN_COINBASE_DATA || n > MAX_COINBASE_DATA) return Either.left(txError("bad-cb-length"))
  } else {
    for (const input of tx.inputs) {
      if (input.prevout.index === NULL_INDEX && isNullTxid(input.prevout.txid)) {
        return Either.left(txError("bad-txns-prevout-null"))
      }
      if (input.witness.length !== SIGNATURE_BYTES) {
        return Either.left(
          txError("bad-txns-sig-size", `witness of ${input.witness.length} bytes, expected 64`),
        )
      }
    }
  }
  return Either.void
}

/**
 * isFinalTx (Core's IsFinalTx): lockTime 0 is final; below LOCKTIME_THRESHOLD it is a height that
 * must be below the block's height; otherwise a time that must be below the block's median-time-past
 * (BIP113).
 */
export const isFinalTx = (tx: Tx, height: number, medianTimePast: number): boolean => {
  if (tx.lockTime === 0) return true
  return tx.lockTime < (tx.lockTime < LOCKTIME_THRESHOLD ? height : medianTimePast)
}

/**
 * checkTxInputs applies the contextual rules for a non-coinbase transaction whose inputs resolved to
 * `coins` (undefined: missing or spent) at `spendHeight` (Core's Consensus::CheckTxInputs): inputs exist,
 * coinbase outputs are mature, amounts are in range, inputs cover outputs. Returns the fee.
 */
export const checkTxInputs = (
  tx: Tx,
  coins: ReadonlyArray<Coin | undefined>,
  spendHeight: number,
): Either.Either<bigint, RuleError> => {
  let valueIn = 0n
  for (const coin of coins) {
    if (coin === undefined) return Either.left(txError("bad-txns-inputs-missingorspent", "", 0))
    if (coin.coinbase && spendHeight - coin.height < COINBASE_MATURITY) {
      return Either.left(
        txError(
          "bad-txns-premature-spend-of-coinbase",
          `tried to spend coinbase at depth ${spendHeight - coin.height}`,
          0,
        ),
      )
    }
    valueIn += coin.value
    if (coin.value > MAX_MONEY || valueIn > MAX_MONEY)
      return Either.left(txError("bad-txns-inputvalues-outofrange"))
  }
  let valueOut = 0n
  for (const output of tx.outputs) valueOut += output.value
  if (valueIn < valueOut) {
    return Either.left(txError("bad-txns-in-belowout", `value in (${valueIn}) < value out (${valueOut})`))
  }
  // The fee needs no range check of its own: valueIn ≤ MAX_MONEY and valueOut ≥ 0 (Core's
  // bad-txns-fee-outofrange cannot trigger under these two checks).
  return Either.right(valueIn - valueOut)
}

/** txSignatureChecks lists the BIP340 checks a transaction's inputs require, given the coins they spend. */
export const txSignatureChecks = (tx: Tx, coins: ReadonlyArray<Coin>): Array<SignatureCheck> =>
  sighashes(tx, coins).map((msg, i) => ({ msg, sig: tx.inputs[i]!.witness, pubkey: coins[i]!.pubkey }))

/** SIG_FAILURE_REASON is the reason of a signature that does not verify (Core's script failure reason). */
export const SIG_FAILURE_REASON = "mandatory-script-verify-flag-failed"

/** sigFailure is the rule failure of a signature that does not verify. */
export const sigFailure = (detail: string): RuleError =>
  txError(SIG_FAILURE_REASON, `invalid Schnorr signature: ${detail}`)
