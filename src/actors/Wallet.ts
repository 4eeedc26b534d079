import {
  Context,
  Data,
  Deferred,
  Effect,
  Either,
  Layer,
  Option,
  PubSub,
  Queue,
  Schema,
  Stream,
  SubscriptionRef,
} from "effect"
import { decodeAddress, encodeAddress } from "../consensus/address.js"
import { signTx } from "../consensus/assemble.js"
import { COINBASE_MATURITY, MAX_MONEY } from "../consensus/checkTx.js"
import { txidOf } from "../consensus/hash.js"
import type { NetworkParams } from "../consensus/params.js"
import { keyOf } from "../consensus/utxo.js"
import { ChainStore, type StorageError } from "../layers/ChainStore.js"
import { Entropy } from "../layers/Entropy.js"
import { Keystore } from "../layers/Keystore.js"
import { Signatures } from "../layers/Signatures.js"
import type { Coin } from "../schema/coin.js"
import { fromHex, toHex } from "../schema/hex.js"
import type { Amount, BlockHash, Height, PublicKey, TxId } from "../schema/primitives.js"
import { encodeTx, type Tx, type TxIn, type TxOut, txSize } from "../schema/tx.js"
import * as Actor from "./Actor.js"
import { Chain, type ChainEvent } from "./Chain.js"
import { KeyWindow } from "./keyWindow.js"
import { Mempool, type MempoolEvent } from "./Mempool.js"

/**
 * The Wallet actor: it tracks the coins paying the keystore's keys, answers balance and listunspent,
 * and builds, signs and submits payments. Secret keys are used only here, on the actor's fiber, and
 * wiped after signing; nothing it answers carries a secret key or the seed.
 */

// ---------------------------------------------------------------------------------------------------
// Errors

/**
 * WalletErrorCode: bitcoind's RPC codes, so the RPC layer passes `code` through unchanged.
 * -3 invalid amount (RPC_TYPE_ERROR), -4 wallet error, -5 invalid address, -6 insufficient funds,
 * -8 invalid parameter (a fee rate), -26 rejected by the mempool (RPC_VERIFY_REJECTED).
 */
export const WalletErrorCode = {
  InvalidAmount: -3,
  Wallet: -4,
  InvalidAddress: -5,
  InsufficientFunds: -6,
  InvalidParameter: -8,
  Rejected: -26,
} as const

/**
 * WalletError is every failure a wallet request reports: `code` is the RPC code (WalletErrorCode),
 * `reason` a short slug (for -26 the mempool's Core reject reason, e.g. `min-fee-not-met`), and
 * `message` a sentence meant for the operator.
 */
export class WalletError extends Schema.TaggedError<WalletError>()("WalletError", {
  code: Schema.Literal(-3, -4, -5, -6, -8, -26),
  reason: Schema.String,
  message: Schema.String,
}) {}

const walletError = (code: WalletError["code"], reason: string, message: string) =>
  new WalletError({ code, reason, message })

// ---------------------------------------------------------------------------------------------------
// Config and service

/** WalletConfig: the network (address prefix) and the wallet's policy; every policy field has a default. */
export interface WalletConfig {
  readonly network: NetworkParams
  /** keys watched beyond the last one handed out (BIP44's gap limit); default 20 */
  readonly lookahead?: number
  /** fee rate of `send` when the caller gives none, in units per byte; default 2 */
  readonly feeRate?: number
  /** change below this many units is left to the fee rather than creating a tiny output; default 1000 */
  readonly dustThreshold?: bigint
  /** a payment whose fee would exceed this is refused (-4), as bitcoind's -maxtxfee; default 0.1 coin */
  readonly maxFee?: bigint
}

/** defaultLookahead is BIP44's gap limit. */
export const defaultLookahead = 20
/** defaultFeeRate: 2 units per byte, twice the default minimum relay fee rate. */
export const defaultFeeRate = 2
/** defaultDustThreshold: change under 1000 units goes to the fee. */
export const defaultDustThreshold = 1000n
/** defaultMaxFee: 0.1 coin, bitcoind's -maxtxfee. */
export const defaultMaxFee = 10_000_000n

/**
 * WALLET_COINBASE_DEPTH: the wallet counts a coinbase as spendable at 101 confirmations (tip ≥ h + 100),
 * one block later than consensus allows (a coinbase at height h may be spent in block h + 100, i.e. once
 * tip ≥ h + 99). This is bitcoind's wallet rule (GetBlocksToMaturity: COINBASE_MATURITY + 1 − depth), so
 * regtest's familiar `generatetoaddress 101` makes exactly one coinbase (50 coins) spendable here too.
 */
export const WALLET_COINBASE_DEPTH = COINBASE_MATURITY + 1

/** UnspentOutput is one row of listunspent: amounts in units, 0 confirmations for a mempool output. */
export interface UnspentOutput {
  readonly txid: string
  readonly vout: number
  readonly address: string
  readonly amount: bigint
  readonly confirmations: number
}

/**
 * WalletService is the Wallet actor's interface; any fiber may call it. Every query first waits until
 * the wallet has seen the chain up to the tip current at the call (bitcoind's
 * SyncWithValidationInterfaceQueue), so `getbalance` right after `generatetoaddress` counts the new blocks.
 */
export interface WalletService {
  /**
   * newAddress reserves the next key (persisted before answering) and returns its bech32m address. If
   * the keystore cannot record the reservation (a full disk), the caller gets a defect and the actor
   * restarts: a wallet that cannot remember the addresses it gave out must not give them out.
   */
  readonly newAddress: Effect.Effect<string>
  /**
   * balance sums our unspent coins with at least `minconf` confirmations (default 1), coinbases only
   * once spendable (WALLET_COINBASE_DEPTH), excluding coins a mempool transaction spends. With
   * minconf 0 it also counts mempool outputs paying us (our change, and payments from others).
   */
  readonly balance: (minconf?: number) => Effect.Effect<bigint>
  /** listUnspent lists the coins balance(minconf) counts, most confirmations first. */
  readonly listUnspent: (minconf?: number) => Effect.Effect<ReadonlyArray<UnspentOutput>>
  /**
   * send pays `amount` units to `address`: largest confirmed coins first (then our own unconfirmed
   * change), fee = feeRate × the transaction's exact size, change to a new address unless below the dust
   * threshold; signs, submits to the mempool, and returns the txid once the mempool accepted it.
   */
  readonly send: (
    address: string,
    amount: bigint,
    options?: { readonly feeRate?: number | undefined },
  ) => Effect.Effect<TxId, WalletError>
}

/** Wallet is the service tag of the Wallet actor. */
export class Wallet extends Context.Tag("fibercoin/Wallet")<Wallet, WalletService>() {}

/**
 * WalletSourceService is the chain as the wallet follows it: a tip, the block events (every block
 * connected or disconnected, in order; a light node passes the blocks its filters matched whole and
 * the others without transactions), and the unspent outputs it can look up. A full node's source is
 * the Chain actor and the UTXO set (`sourceFromChain`); a light node's is its LightClient.
 */
export interface WalletSourceService {
  readonly tip: Effect.Effect<{ readonly hash: BlockHash; readonly height: number }>
  readonly events: PubSub.PubSub<ChainEvent>
  /**
   * coin reads an unspent output by outpoint key (restoring the coins a disconnected block spent: the
   * source has put them back before it publishes the disconnect); undefined when unknown or spent
   */
  readonly coin: (key: string) => Coin | undefined
  /** forEachCoin visits every unspent output the source knows (the wallet's one scan at start) */
  readonly forEachCoin: (visit: (key: string, coin: Coin) => void) => Effect.Effect<void, StorageError>
}

export class WalletSource extends Context.Tag("fibercoin/WalletSource")<
  WalletSource,
  WalletSourceService
>() {}

/** sourceFromChain is a full node's wallet source: the Chain's tip and events, the committed UTXO set. */
export const sourceFromChain: Layer.Layer<WalletSource, never, Chain | ChainStore> = Layer.effect(
  WalletSource,
  Effect.gen(function* () {
    const chain = yield* Chain
    const store = yield* ChainStore
    return {
      tip: chain.tip,
      events: chain.events,
      coin: (key) => store.coins.get(key),
      forEachCoin: store.forEachCoin,
    }
  }),
)

// ---------------------------------------------------------------------------------------------------
// State, owned by the actor fiber only

/** OwnCoin is an output paying one of our keys. */
interface OwnCoin {
  readonly txid: TxId
  readonly vout: number
  readonly value: Amount
  readonly pubkey: PublicKey
  readonly keyIndex: number
  /** the block height that created it; undefined while it is only in the mempool */
  readonly height: number | undefined
  readonly coinbase: boolean
  /** an unconfirmed output of a transaction spending our coins (our own change): safe to spend on */
  readonly trusted: boolean
}

/** poolCoin is an output of a mempool transaction that pays one of our keys. */
const poolCoin = (txid: TxId, vout: number, output: TxOut, keyIndex: number, trusted: boolean): OwnCoin => ({
  txid,
  vout,
  value: output.value,
  pubkey: output.pubkey,
  keyIndex,
  height: undefined,
  coinbase: false,
  trusted,
})

interface State {
  /** the keys we watch (the keystore's handed-out ones plus the lookahead) */
  readonly window: KeyWindow
  /** the height of the last chain event applied */
  tipHeight: number
  /** coins in the UTXO set at the chain state we have applied, by outpoint key */
  readonly confirmed: Map<string, OwnCoin>
  /** outputs of mempool transactions paying us; a key also in `confirmed` is shadowed by it */
  readonly unconfirmed: Map<string, OwnCoin>
  /** our coins (confirmed or not) that a mempool transaction spends → that transaction's txid (hex) */
  readonly spentByPool: Map<string, string>
}

type Command = Data.TaggedEnum<{
  ChainEvent: { readonly event: ChainEvent }
  PoolEvent: { readonly event: MempoolEvent }
  NewAddress: { readonly reply: Deferred.Deferred<string> }
  Balance: { readonly minconf: number; readonly reply: Deferred.Deferred<bigint> }
  ListUnspent: { readonly minconf: number; readonly reply: Deferred.Deferred<ReadonlyArray<UnspentOutput>> }
  Send: {
    readonly address: string
    readonly amount: bigint
    readonly feeRate: number | undefined
    readonly reply: Deferred.Deferred<TxId, WalletError>
  }
}>
const Command = Data.taggedEnum<Command>()

/** A placeholder input and output of the exact encoded sizes (a BIP340 signature is always 64 bytes). */
const sizingInput: TxIn = {
  prevout: { txid: new Uint8Array(32) as TxId, index: 0 },
  witness: new Uint8Array(64),
}
const sizingOutput: TxOut = { value: 0n as Amount, pubkey: new Uint8Array(32) as PublicKey }

/** sizeOf is the exact serialized size of a signed transaction with `inputs` inputs and `outputs` outputs. */
const sizeOf = (inputs: number, outputs: number): number =>
  txSize({
    version: 1,
    inputs: Array.from({ length: inputs }, () => sizingInput),
    outputs: Array.from({ length: outputs }, () => sizingOutput),
    lockTime: 0,
  })

const feeFor = (feeRate: number, size: number): bigint => BigInt(Math.ceil(feeRate * size))

/** Plan is the outcome of coin selection: the coins to spend, the fee and the change (0n: none). */
interface Plan {
  readonly coins: ReadonlyArray<readonly [key: string, coin: OwnCoin]>
  readonly fee: bigint
  readonly change: bigint
}

/**
 * selectCoins takes candidates in the given order (largest first) until they pay `amount` plus the fee
 * of the transaction they make. The size is exact for each count of inputs (every input is 101 bytes,
 * every output 40), so the fee never needs a second pass: with n inputs it is feeRate × size(n, 2) when
 * the change (total − amount − that fee) reaches the dust threshold, otherwise there is no change output
 * and whatever is left over (≥ feeRate × size(n, 1)) is the fee. Largest-first keeps transactions small;
 * it does nothing for privacy, which is acceptable for this wallet.
 */
const selectCoins = (
  candidates: ReadonlyArray<readonly [string, OwnCoin]>,
  amount: bigint,
  feeRate: number,
  dust: bigint,
): Plan | undefined => {
  let total = 0n
  const chosen: Array<readonly [string, OwnCoin]> = []
  for (const candidate of candidates) {
    chosen.push(candidate)
    total += candidate[1].value
    const feeWithoutChange = feeFor(feeRate, sizeOf(chosen.length, 1))
    if (total < amount + feeWithoutChange) continue
    const feeWithChange = feeFor(feeRate, sizeOf(chosen.length, 2))
    const change = total - amount - feeWithChange
    if (change >= dust) return { coins: chosen, fee: feeWithChange, change }
    return { coins: chosen, fee: total - amount, change: 0n }
  }
  return undefined
}

const byValueDesc = (a: readonly [string, OwnCoin], b: readonly [string, OwnCoin]): number =>
  a[1].value === b[1].value ? (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0) : a[1].value > b[1].value ? -1 : 1

/** clampMinconf reads a caller's minconf: a non-negative integer (negative and NaN count as 0). */
const clampMinconf = (minconf: number): number =>
  Number.isFinite(minconf) && minconf > 0 ? Math.floor(minconf) : 0

// ---------------------------------------------------------------------------------------------------

/**
 * make starts the Wallet actor in the current scope. It subscribes to the Chain's and the Mempool's
 * events first, then (in `initial`) derives our keys (the keystore's count plus the lookahead), scans
 * the whole UTXO set once for coins paying them (`forEachCoin`: fine at regtest scale, a wallet index
 * would replace it for a big chain), and reads the mempool's outputs and spends of our coins; events
 * that arrived meanwhile are then applied on top, which is harmless because applying an event twice
 * changes nothing. From then on, forwarder fibers put each event into the actor's mailbox, so all
 * state changes happen on the actor's fiber.
 *
 * The forwarders wait when the mailbox is full; they never slow the Chain or Mempool down as long as
 * those publish on unbounded PubSubs (both do), which also rules out a deadlock when `send` waits for
 * the mempool while the mempool publishes.
 */
export const make = (config: WalletConfig) =>
  Effect.gen(function* () {
    const keystore = yield* Keystore
    const chain = yield* WalletSource
    const mempool = yield* Mempool
    const backend = yield* Signatures
    const entropy = yield* Entropy
    const params = config.network
    const lookahead = config.lookahead ?? defaultLookahead
    const defaultRate = config.feeRate ?? defaultFeeRate
    const dust = config.dustThreshold ?? defaultDustThreshold
    const maxFee = config.maxFee ?? defaultMaxFee

    const chainEvents = yield* PubSub.subscribe(chain.events)
    const poolEvents = yield* PubSub.subscribe(mempool.events)
    /** processed is the tip hash (hex) of the chain state the actor has applied, for `synced`. */
    const processed = yield* SubscriptionRef.make(toHex((yield* chain.tip).hash))

    // -- keys -------------------------------------------------------------------------------------------

    // -- applying events ---------------------------------------------------------------------------------

    const confirmations = (state: State, coin: OwnCoin): number =>
      coin.height === undefined ? 0 : state.tipHeight - coin.height + 1

    /** counted: unspent by the pool, mature, and confirmed at least `minconf` times. */
    const counted = (state: State, key: string, coin: OwnCoin, minconf: number): boolean => {
      if (state.spentByPool.has(key)) return false
      if (coin.height === undefined) return minconf === 0 && !state.confirmed.has(key)
      const depth = confirmations(state, coin)
      return depth >= minconf && (!coin.coinbase || depth >= WALLET_COINBASE_DEPTH)
    }

    const countedCoins = (state: State, minconf: number): Array<readonly [string, OwnCoin]> => [
      ...[...state.confirmed].filter(([key, coin]) => counted(state, key, coin, minconf)),
      ...[...state.unconfirmed].filter(([key, coin]) => counted(state, key, coin, minconf)),
    ]

    /** applyPoolTx records a mempool transaction: our coins it spends, and its outputs paying us. */
    const applyPoolTx = (state: State, txid: TxId, tx: Tx) => {
      const hex = toHex(txid)
      let trusted = false
      for (const input of tx.inputs) {
        const key = keyOf(input.prevout)
        if (state.confirmed.has(key) || state.unconfirmed.has(key)) {
          state.spentByPool.set(key, hex)
          trusted = true
        }
      }
      tx.outputs.forEach((output, vout) => {
        const keyIndex = state.window.ownerOf(output.pubkey)
        if (keyIndex === undefined) return
        state.unconfirmed.set(`${hex}:${vout}`, poolCoin(txid, vout, output, keyIndex, trusted))
      })
    }

    /** removePoolTx forgets a transaction that left the mempool (mined, conflicted, evicted). */
    const removePoolTx = (state: State, txid: TxId, tx: Tx) => {
      const hex = toHex(txid)
      for (let vout = 0; vout < tx.outputs.length; vout++) state.unconfirmed.delete(`${hex}:${vout}`)
      for (const input of tx.inputs) {
        const key = keyOf(input.prevout)
        if (state.spentByPool.get(key) === hex) state.spentByPool.delete(key)
      }
    }

    /** applyConnected: the block's spends leave our coins, its outputs paying us join them. */
    const applyConnected = (state: State, event: Extract<ChainEvent, { _tag: "BlockConnected" }>) => {
      event.block.txs.forEach((tx, t) => {
        const txid = event.txids[t]!
        const hex = toHex(txid)
        if (t > 0) {
          for (const input of tx.inputs) {
            const key = keyOf(input.prevout)
            state.confirmed.delete(key)
            state.unconfirmed.delete(key)
            state.spentByPool.delete(key)
          }
        }
        tx.outputs.forEach((output, vout) => {
          const key = `${hex}:${vout}`
          state.unconfirmed.delete(key)
          const keyIndex = state.window.ownerOf(output.pubkey)
          if (keyIndex === undefined) return
          state.confirmed.set(key, {
            txid,
            vout,
            value: output.value,
            pubkey: output.pubkey,
            keyIndex,
            height: event.height,
            coinbase: t === 0,
            trusted: true,
          })
        })
      })
      state.tipHeight = event.height
    }

    /**
     * applyDisconnected undoes a block: its outputs paying us go; our coins it spent come back, read
     * from the UTXO set (already restored: the Chain commits before it publishes). If later blocks have
     * spent such a coin again by now, it is absent there and their own events follow, so the wallet
     * converges on the chain's state. The mempool takes the block's transactions back, so it is asked
     * which of them it holds now (their outputs paying us become unconfirmed coins) and which
     * transaction spends each restored coin; its TxAccepted events, which may arrive before or after
     * this one, then change nothing more.
     */
    const applyDisconnected = (state: State, event: Extract<ChainEvent, { _tag: "BlockDisconnected" }>) =>
      Effect.gen(function* () {
        const restored: Array<string> = []
        const payingUs: Array<readonly [TxId, Tx]> = []
        for (let t = event.block.txs.length - 1; t >= 0; t--) {
          const tx = event.block.txs[t]!
          const txid = txidOf(encodeTx(tx))
          const hex = toHex(txid)
          for (let vout = 0; vout < tx.outputs.length; vout++) state.confirmed.delete(`${hex}:${vout}`)
          if (t === 0) continue
          if (tx.outputs.some((o) => state.window.keys.has(toHex(o.pubkey)))) payingUs.push([txid, tx])
          for (const input of tx.inputs) {
            const key = keyOf(input.prevout)
            const coin = chain.coin(key)
            if (coin === undefined) continue
            const keyIndex = state.window.ownerOf(coin.pubkey)
            if (keyIndex === undefined) continue
            state.confirmed.set(key, ownCoin(input.prevout.txid, input.prevout.index, coin, keyIndex))
            restored.push(key)
          }
        }
        state.tipHeight = event.height - 1
        for (const [txid, tx] of payingUs.reverse()) {
          if (Option.isSome(yield* mempool.get(txid))) applyPoolTx(state, txid, tx)
        }
        for (const key of restored) {
          const spender = yield* mempool.spentBy(key)
          if (Option.isSome(spender)) state.spentByPool.set(key, toHex(spender.value))
        }
      })

    const ownCoin = (txid: TxId, vout: number, coin: Coin, keyIndex: number): OwnCoin => ({
      txid,
      vout,
      value: coin.value,
      pubkey: coin.pubkey,
      keyIndex,
      height: coin.height,
      coinbase: coin.coinbase,
      trusted: true,
    })

    // -- requests ------------------------------------------------------------------------------------------

    const newAddress = (state: State) =>
      Effect.gen(function* () {
        // A wallet that cannot record the keys it hands out must not hand them out: a defect.
        const index = yield* keystore.nextIndex.pipe(Effect.orDie)
        state.window.deriveUpTo(index + 1 + lookahead)
        return encodeAddress(params.hrp, keystore.publicKey(index))
      })

    const listUnspent = (state: State, minconf: number): ReadonlyArray<UnspentOutput> =>
      countedCoins(state, minconf)
        .map(
          ([key, coin]) =>
            [
              key,
              {
                txid: toHex(coin.txid),
                vout: coin.vout,
                address: encodeAddress(params.hrp, coin.pubkey),
                amount: coin.value,
                confirmations: confirmations(state, coin),
              },
            ] as const,
        )
        .sort(([ka, a], [kb, b]) =>
          a.confirmations !== b.confirmations
            ? b.confirmations - a.confirmations
            : ka < kb
              ? -1
              : ka > kb
                ? 1
                : 0,
        )
        .map(([, row]) => row)

    /**
     * send builds, signs and submits a payment. State changes only after the mempool accepted it (the
     * spends and our change are recorded at once, so a balance asked right after sees them); a change
     * key reserved for a refused payment stays unused, inside the lookahead window.
     */
    const send = (state: State, address: string, amount: bigint, feeRateOption: number | undefined) =>
      Effect.gen(function* () {
        const destination = decodeAddress(params.hrp, address)
        if (Either.isLeft(destination)) {
          return yield* walletError(
            WalletErrorCode.InvalidAddress,
            "invalid-address",
            destination.left.message,
          )
        }
        if (amount <= 0n) {
          return yield* walletError(
            WalletErrorCode.InvalidAmount,
            "invalid-amount",
            `amount must be positive, got ${amount} units`,
          )
        }
        if (amount > MAX_MONEY) {
          return yield* walletError(
            WalletErrorCode.InvalidAmount,
            "invalid-amount",
            `amount ${amount} units exceeds the ${MAX_MONEY}-unit money supply`,
          )
        }
        const feeRate = feeRateOption ?? defaultRate
        if (!Number.isFinite(feeRate) || feeRate < 0) {
          return yield* walletError(
            WalletErrorCode.InvalidParameter,
            "invalid-fee-rate",
            `fee rate must be a non-negative number of units per byte, got ${feeRate}`,
          )
        }

        const confirmedCoins = [...state.confirmed]
          .filter(([key, coin]) => counted(state, key, coin, 1))
          .sort(byValueDesc)
        const ownChange = [...state.unconfirmed]
          .filter(([key, coin]) => coin.trusted && counted(state, key, coin, 0))
          .sort(byValueDesc)
        const plan = selectCoins([...confirmedCoins, ...ownChange], amount, feeRate, dust)
        if (plan === undefined) {
          const available = [...confirmedCoins, ...ownChange].reduce((sum, [, c]) => sum + c.value, 0n)
          return yield* walletError(
            WalletErrorCode.InsufficientFunds,
            "insufficient-funds",
            `Insufficient funds: paying ${amount} units plus the fee needs more than the ${available} units spendable`,
          )
        }
        if (plan.fee > maxFee) {
          return yield* walletError(
            WalletErrorCode.Wallet,
            "fee-too-high",
            `the fee (${plan.fee} units at ${feeRate} units/byte) exceeds the maximum of ${maxFee} units`,
          )
        }

        const payment: TxOut = { value: amount as Amount, pubkey: destination.right }
        let outputs: ReadonlyArray<TxOut> = [payment]
        if (plan.change > 0n) {
          const index = yield* keystore.nextIndex.pipe(
            Effect.mapError((e) => walletError(WalletErrorCode.Wallet, "keystore", e.message)),
          )
          state.window.deriveUpTo(index + 1 + lookahead)
          const change: TxOut = {
            value: plan.change as Amount,
            pubkey: keystore.publicKey(index) as PublicKey,
          }
          // The change goes first or last at random, so its position does not give it away.
          const first = (yield* entropy.int(2)) === 0
          outputs = first ? [change, payment] : [payment, change]
        }

        const unsigned: Tx = {
          version: 1,
          inputs: plan.coins.map(([, c]) => ({
            prevout: { txid: c.txid, index: c.vout },
            witness: new Uint8Array(64),
          })),
          outputs,
          lockTime: 0,
        }
        const spent: ReadonlyArray<Coin> = plan.coins.map(([, c]) => ({
          value: c.value,
          pubkey: c.pubkey,
          height: (c.height ?? state.tipHeight + 1) as Height,
          coinbase: c.coinbase,
        }))
        // BIP340 auxiliary randomness from Entropy (the OS CSPRNG in a node; Effect's Random is not one)
        const aux = yield* Effect.forEach(plan.coins, () => entropy.bytes(32))
        const signed = yield* Effect.sync(() => {
          const secrets = plan.coins.map(([, c]) => keystore.secretKey(c.keyIndex))
          try {
            return signTx(unsigned, spent, secrets, backend, (i) => aux[i]!)
          } finally {
            for (const secret of secrets) secret.fill(0)
          }
        })
        const bytes = encodeTx(signed)
        const txid = txidOf(bytes)
        const accepted = yield* Effect.either(mempool.accept(bytes))
        if (Either.isLeft(accepted)) {
          const e = accepted.left
          const reason = e._tag === "DecodeError" ? "decode-failed" : e.reason
          return yield* walletError(WalletErrorCode.Rejected, reason, e.message)
        }
        if (accepted.right._tag !== "Accepted") {
          return yield* walletError(
            WalletErrorCode.Wallet,
            "orphan",
            "the mempool kept the payment as an orphan",
          )
        }
        applyPoolTx(state, txid, signed)
        yield* Effect.logInfo(
          `wallet: sent ${amount} units to ${address} in ${toHex(txid)} (fee ${plan.fee} units, ${bytes.length} bytes)`,
        )
        return txid
      })

    // -- the actor ------------------------------------------------------------------------------------------

    const initial = Effect.gen(function* () {
      const state: State = {
        window: new KeyWindow(keystore.publicKey, lookahead),
        tipHeight: 0,
        confirmed: new Map(),
        unconfirmed: new Map(),
        spentByPool: new Map(),
      }
      state.window.deriveUpTo((yield* keystore.count) + lookahead)
      const tip = yield* chain.tip
      state.tipHeight = tip.height
      yield* chain
        .forEachCoin((key, coin) => {
          const keyIndex = state.window.ownerOf(coin.pubkey)
          if (keyIndex === undefined) return
          const [txidHex, vout] = key.split(":")
          state.confirmed.set(key, ownCoin(fromHex(txidHex!)! as TxId, Number(vout), coin, keyIndex))
        })
        .pipe(Effect.orDie)
      for (const [key, output, txid] of yield* mempool.outputs) {
        const keyIndex = state.window.ownerOf(output.pubkey)
        if (keyIndex === undefined) continue
        const entry = yield* mempool.get(txid)
        const trusted = Option.exists(entry, (e) =>
          e.tx.inputs.some((i) => state.confirmed.has(keyOf(i.prevout))),
        )
        state.unconfirmed.set(
          key,
          poolCoin(txid, Number(key.slice(key.indexOf(":") + 1)), output, keyIndex, trusted),
        )
      }
      for (const key of [...state.confirmed.keys(), ...state.unconfirmed.keys()]) {
        const spender = yield* mempool.spentBy(key)
        if (Option.isSome(spender)) state.spentByPool.set(key, toHex(spender.value))
      }
      yield* SubscriptionRef.set(processed, toHex(tip.hash))
      yield* Effect.logInfo(
        `wallet: watching ${state.window.derived} keys; ${state.confirmed.size} confirmed and ${state.unconfirmed.size} unconfirmed coins at height ${tip.height}`,
      )
      return state
    })

    const handle = (state: State, cmd: Command): Effect.Effect<State> =>
      Command.$match(cmd, {
        ChainEvent: ({ event }) => {
          switch (event._tag) {
            case "BlockConnected":
              applyConnected(state, event)
              return SubscriptionRef.set(processed, toHex(event.hash)).pipe(Effect.as(state))
            case "BlockDisconnected":
              return applyDisconnected(state, event).pipe(
                Effect.zipRight(SubscriptionRef.set(processed, toHex(event.block.header.prev))),
                Effect.as(state),
              )
            case "TipChanged":
              return Effect.succeed(state)
          }
        },
        PoolEvent: ({ event }) => {
          if (event._tag === "TxAccepted") applyPoolTx(state, event.entry.txid, event.entry.tx)
          else removePoolTx(state, event.txid, event.tx)
          return Effect.succeed(state)
        },
        NewAddress: ({ reply }) =>
          newAddress(state).pipe(
            Effect.flatMap((address) => Deferred.succeed(reply, address)),
            Effect.as(state),
          ),
        Balance: ({ minconf, reply }) => {
          const total = countedCoins(state, minconf).reduce((sum, [, c]) => sum + c.value, 0n)
          return Deferred.succeed(reply, total).pipe(Effect.as(state))
        },
        ListUnspent: ({ minconf, reply }) =>
          Deferred.succeed(reply, listUnspent(state, minconf)).pipe(Effect.as(state)),
        Send: ({ address, amount, feeRate, reply }) =>
          send(state, address, amount, feeRate).pipe(
            Effect.either,
            Effect.flatMap((result) => Deferred.complete(reply, result)),
            Effect.as(state),
          ),
      })

    const actor = yield* Actor.make<Command, State, never, never>({
      name: "wallet",
      capacity: 1024,
      initial,
      handle,
    })

    yield* Effect.forkScoped(
      Queue.take(chainEvents).pipe(
        Effect.flatMap((event) => actor.send(Command.ChainEvent({ event }))),
        Effect.forever,
      ),
    )
    yield* Effect.forkScoped(
      Queue.take(poolEvents).pipe(
        Effect.flatMap((event) => actor.send(Command.PoolEvent({ event }))),
        Effect.forever,
      ),
    )

    /**
     * synced waits until the actor has applied the chain up to the tip current at the call (or has
     * caught up with a tip that moved on meanwhile): the events of every block connected before the
     * call are in the wallet's state before the query that follows reads it.
     */
    const synced = Effect.gen(function* () {
      const target = toHex((yield* chain.tip).hash)
      yield* processed.changes.pipe(
        Stream.takeUntilEffect((hex) =>
          hex === target ? Effect.succeed(true) : Effect.map(chain.tip, (tip) => toHex(tip.hash) === hex),
        ),
        Stream.runDrain,
      )
    })

    const service: WalletService = {
      newAddress: Actor.ask(actor, (reply: Deferred.Deferred<string>) => Command.NewAddress({ reply })),
      balance: (minconf = 1) =>
        Effect.zipRight(
          synced,
          Actor.ask(actor, (reply: Deferred.Deferred<bigint>) =>
            Command.Balance({ minconf: clampMinconf(minconf), reply }),
          ),
        ),
      listUnspent: (minconf = 1) =>
        Effect.zipRight(
          synced,
          Actor.ask(actor, (reply: Deferred.Deferred<ReadonlyArray<UnspentOutput>>) =>
            Command.ListUnspent({ minconf: clampMinconf(minconf), reply }),
          ),
        ),
      send: (address, amount, options) =>
        Effect.zipRight(
          synced,
          Actor.ask(actor, (reply: Deferred.Deferred<TxId, WalletError>) =>
            Command.Send({ address, amount, feeRate: options?.feeRate, reply }),
          ),
        ),
    }
    return service
  })

/**
 * layer provides a full node's Wallet actor. It needs the Keystore, the Chain and Mempool actors, the
 * ChainStore (the one startup scan and restoring coins on a disconnect) and the Signatures backend
 * (signing).
 */
export const layer = (
  config: WalletConfig,
): Layer.Layer<Wallet, never, Keystore | Chain | Mempool | ChainStore | Signatures> =>
  Layer.scoped(Wallet, make(config)).pipe(Layer.provide(sourceFromChain))

/** layerOver provides the Wallet actor over another WalletSource (a light node's LightClient). */
export const layerOver = (
  config: WalletConfig,
): Layer.Layer<Wallet, never, Keystore | WalletSource | Mempool | Signatures> =>
  Layer.scoped(Wallet, make(config))
