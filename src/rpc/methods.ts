import { Clock, Deferred, Effect, Either, Option, Schema } from "effect"
import { Chain } from "../actors/Chain.js"
import { Mempool } from "../actors/Mempool.js"
import { Miner } from "../actors/Miner.js"
import { Wallet, type WalletError } from "../actors/Wallet.js"
import { decodeAddress, encodeAddress } from "../consensus/address.js"
import { decodeBlockWithTxids } from "../consensus/checkBlock.js"
import { txidOf } from "../consensus/hash.js"
import type { NetworkParams } from "../consensus/params.js"
import { compactToTarget } from "../consensus/pow.js"
import { outpointKey } from "../consensus/utxo.js"
import { ChainStore } from "../layers/ChainStore.js"
import type { Block } from "../schema/block.js"
import { fromHex, toHex } from "../schema/hex.js"
import type { BlockHash, TxId } from "../schema/primitives.js"
import { TxIdHex } from "../schema/primitives.js"
import { decodeTx, type Tx, txSize } from "../schema/tx.js"
import { method, RpcError } from "./Server.js"

/** RpcContext is what the node hands the methods besides its services. */
export interface RpcContext {
  readonly params: NetworkParams
  /** milliseconds at start, for `uptime` */
  readonly startedAt: number
  /** completing it shuts the node down cleanly (`stop`) */
  readonly shutdown: Deferred.Deferred<void>
}

const hex = Schema.String.pipe(
  Schema.pattern(/^[0-9a-fA-F]*$/),
  Schema.filter((s) => s.length % 2 === 0),
)
const hash = Schema.String.pipe(Schema.pattern(/^[0-9a-fA-F]{64}$/))
const Int = Schema.Number.pipe(Schema.int())
const NonNegativeInt = Int.pipe(Schema.nonNegative())

const notFound = (what: string) => new RpcError({ code: -5, message: what })
const invalidParameter = (message: string) => new RpcError({ code: -8, message })

/** difficulty is the pow limit's target over the block's target (1 at the limit). */
export const difficulty = (params: NetworkParams, bits: number): number => {
  const target = compactToTarget(bits).target
  return target === 0n ? 0 : Number((params.powLimit * 1_000_000n) / target) / 1_000_000
}

const txJson = (params: NetworkParams, tx: Tx, txid: TxId) => ({
  txid: toHex(txid),
  size: txSize(tx),
  version: tx.version,
  locktime: tx.lockTime,
  vin: tx.inputs.map((i) => ({ txid: toHex(i.prevout.txid), vout: i.prevout.index })),
  vout: tx.outputs.map((o, n) => ({ value: o.value, address: encodeAddress(params.hrp, o.pubkey), n })),
})

/** mempoolError maps a refused transaction to bitcoind's codes: -22 undecodable, -25 missing inputs, -26 rejected. */
const mempoolError = (e: { readonly _tag: string; readonly message: string; readonly reason?: string }) => {
  if (e._tag === "DecodeError") return new RpcError({ code: -22, message: `TX decode failed: ${e.message}` })
  if (e.reason === "missing-inputs" || e.reason === "bad-txns-inputs-missingorspent") {
    return new RpcError({ code: -25, message: e.message })
  }
  return new RpcError({ code: -26, message: e.message })
}

const walletError = (e: WalletError) => new RpcError({ code: e.code, message: e.message })

/** headerJson is a header as getblockheader/getblock show it; `confirmations` -1 off the view's chain. */
export const headerJson = (
  entry: { hash: BlockHash; height: number; header: Block["header"]; active: boolean },
  tipHeight: number,
) => ({
  hash: toHex(entry.hash),
  height: entry.height,
  confirmations: entry.active ? tipHeight - entry.height + 1 : -1,
  previousblockhash: toHex(entry.header.prev),
  merkleroot: toHex(entry.header.merkleRoot),
  time: entry.header.time,
  bits: entry.header.bits.toString(16).padStart(8, "0"),
  nonce: entry.header.nonce,
})

const parseHash = (s: string) => fromHex(s.toLowerCase()) as BlockHash

/**
 * ChainView is the chain the tip methods report: a full node's active chain (`activeChainView`), or
 * a light node's scanned chain. Headers themselves come from the Chain's index either way.
 */
export interface ChainView<R> {
  readonly tip: Effect.Effect<{ readonly hash: BlockHash; readonly height: number }, never, R>
  readonly hashAt: (height: number) => Effect.Effect<Option.Option<BlockHash>, never, R>
}

/** activeChainView: the Chain actor's active chain. */
export const activeChainView: ChainView<Chain> = {
  tip: Effect.flatMap(Chain, (c) => c.tip),
  hashAt: (height) => Effect.flatMap(Chain, (c) => c.hashAt(height)),
}

/** tipMethods: getblockcount, getbestblockhash, getblockhash, getblockheader over a ChainView. */
export const tipMethods = <R>(view: ChainView<R>) => [
  method("getblockcount", Schema.Tuple(), () => Effect.map(view.tip, (t) => t.height), "height of the tip"),
  method(
    "getbestblockhash",
    Schema.Tuple(),
    () => Effect.map(view.tip, (t) => toHex(t.hash)),
    "hash of the tip",
  ),
  method(
    "getblockhash",
    Schema.Tuple(NonNegativeInt),
    ([height]) =>
      Effect.gen(function* () {
        const h = yield* view.hashAt(height)
        if (Option.isNone(h)) return yield* invalidParameter("Block height out of range")
        return toHex(h.value)
      }),
    "hash of the chain's block at a height",
    ["height"],
  ),
  method(
    "getblockheader",
    Schema.Tuple(hash),
    ([h]) =>
      Effect.gen(function* () {
        const entry = yield* (yield* Chain).entry(parseHash(h))
        if (Option.isNone(entry)) return yield* notFound("Block not found")
        const e = entry.value
        const at = yield* view.hashAt(e.height)
        const active = Option.exists(at, (x) => toHex(x) === toHex(e.hash))
        return {
          ...headerJson({ ...e, active }, (yield* view.tip).height),
          chainwork: e.chainwork.toString(16).padStart(64, "0"),
        }
      }),
    "a block header",
    ["blockhash"],
  ),
]

/** chainMethods: blockchain, mempool, mining and control methods (CONTRACT.md). */
export const chainMethods = (ctx: RpcContext) => {
  const params = ctx.params
  const blockAt = (h: BlockHash) =>
    Effect.gen(function* () {
      const chain = yield* Chain
      const entry = yield* chain.entry(h)
      if (Option.isNone(entry) || entry.value.status === "header") return yield* notFound("Block not found")
      const bytes = yield* chain.block(h).pipe(Effect.orDie)
      if (Option.isNone(bytes)) return yield* notFound("Block not available")
      const { block, txids } = Either.getOrThrow(decodeBlockWithTxids(bytes.value))
      return { entry: entry.value, block, txids, bytes: bytes.value }
    })
  return [
    method(
      "getblockchaininfo",
      Schema.Tuple(),
      () =>
        Effect.gen(function* () {
          const chain = yield* Chain
          const tip = yield* chain.tip
          const sync = yield* chain.syncStatus
          return {
            chain: params.name === "mainnet" ? "main" : params.name === "testnet" ? "test" : "regtest",
            blocks: tip.height,
            headers: sync.headers,
            bestblockhash: toHex(tip.hash),
            chainwork: tip.chainwork.toString(16).padStart(64, "0"),
            difficulty: difficulty(params, tip.header.bits),
            mediantime: tip.medianTimePast,
            initialblockdownload: sync.initialBlockDownload,
            verificationprogress: sync.verificationProgress,
            warnings: sync.warnings,
          }
        }),
      "chain state: tip, work, sync progress",
    ),
    ...tipMethods(activeChainView),
    method(
      "getblock",
      Schema.Tuple(hash, Schema.optionalElement(Schema.Literal(0, 1, 2))),
      ([h, verbosity]) =>
        Effect.gen(function* () {
          const { entry, block, txids, bytes } = yield* blockAt(parseHash(h))
          if (verbosity === 0) return toHex(bytes)
          const tip = yield* (yield* Chain).tip
          return {
            ...headerJson(entry, tip.height),
            size: bytes.length,
            tx: verbosity === 2 ? block.txs.map((tx, i) => txJson(params, tx, txids[i]!)) : txids.map(toHex),
          }
        }),
      "a block: 0 hex, 1 (default) with txids, 2 with transactions",
      ["blockhash", "verbosity"],
    ),
    method(
      "decoderawtransaction",
      Schema.Tuple(hex),
      ([txHex]) =>
        Effect.gen(function* () {
          const bytes = fromHex(txHex)!
          const decoded = decodeTx(bytes)
          if (Either.isLeft(decoded))
            return yield* new RpcError({ code: -22, message: `TX decode failed: ${decoded.left.message}` })
          // canonical encoding: the input bytes are exactly encodeTx(decoded), so hash them as given
          return txJson(params, decoded.right, txidOf(bytes))
        }),
      "decode a transaction's hex",
      ["hexstring"],
    ),
    method(
      "sendrawtransaction",
      Schema.Tuple(hex),
      ([txHex]) =>
        Effect.gen(function* () {
          const r = yield* (yield* Mempool).accept(fromHex(txHex)!).pipe(Effect.mapError(mempoolError))
          return toHex(r.txid)
        }),
      "submit a signed transaction to the mempool",
      ["hexstring"],
    ),
    method(
      "getrawtransaction",
      Schema.Tuple(Schema.compose(hash, TxIdHex), Schema.optionalElement(Schema.Boolean)),
      ([txid, verbose]) =>
        Effect.gen(function* () {
          const entry = yield* (yield* Mempool).get(txid)
          if (Option.isNone(entry)) {
            return yield* notFound("No such mempool transaction (there is no transaction index yet)")
          }
          return verbose === true
            ? { ...txJson(params, entry.value.tx, entry.value.txid), hex: toHex(entry.value.bytes) }
            : toHex(entry.value.bytes)
        }),
      "a mempool transaction, hex or decoded",
      ["txid", "verbose"],
    ),
    method(
      "gettxout",
      Schema.Tuple(Schema.compose(hash, TxIdHex), NonNegativeInt),
      ([txid, n]) =>
        Effect.gen(function* () {
          const store = yield* ChainStore
          const coin = store.coins.get(outpointKey(txid, n))
          if (coin === undefined) return null
          const tip = yield* (yield* Chain).tip
          return {
            bestblock: toHex(tip.hash),
            confirmations: tip.height - coin.height + 1,
            value: coin.value,
            address: encodeAddress(params.hrp, coin.pubkey),
            coinbase: coin.coinbase,
          }
        }),
      "an unspent output at the tip, or null",
      ["txid", "n"],
    ),
    method(
      "gettxoutsetinfo",
      Schema.Tuple(),
      () =>
        Effect.gen(function* () {
          const store = yield* ChainStore
          const c = yield* (yield* Chain).utxoCommitment
          let txouts = 0
          let total = 0n
          yield* store
            .forEachCoin((_, coin) => {
              txouts++
              total += coin.value
            })
            .pipe(Effect.orDie)
          return {
            height: c.height,
            bestblock: toHex(c.hash),
            txouts,
            total_amount: total,
            hash_serialized: toHex(c.commitment),
          }
        }),
      "the UTXO set: count, total, MuHash3072 commitment",
    ),
    method(
      "getmempoolinfo",
      Schema.Tuple(),
      () => Effect.flatMap(Mempool, (m) => m.info),
      "mempool size, bytes, limits",
    ),
    method(
      "getrawmempool",
      Schema.Tuple(),
      () =>
        Effect.map(
          Effect.flatMap(Mempool, (m) => m.txids),
          (ids) => ids.map(toHex),
        ),
      "txids in the mempool",
    ),
    method(
      "getmininginfo",
      Schema.Tuple(),
      () =>
        Effect.gen(function* () {
          const tip = yield* (yield* Chain).tip
          const info = yield* (yield* Miner).info
          const pool = yield* (yield* Mempool).info
          return {
            blocks: tip.height,
            difficulty: difficulty(params, tip.header.bits),
            networkhashps: 0,
            hashespersec: Math.round(info.hashespersec),
            pooledtx: pool.size,
            mining: info.mining,
          }
        }),
      "mining state",
    ),
    method(
      "generatetoaddress",
      Schema.Tuple(Int.pipe(Schema.between(1, 10_000)), Schema.String),
      ([n, address]) =>
        Effect.gen(function* () {
          if (!params.mineBlocksOnDemand)
            return yield* new RpcError({ code: -32601, message: "generatetoaddress is for regtest only" })
          const key = decodeAddress(params.hrp, address)
          if (Either.isLeft(key)) return yield* new RpcError({ code: -5, message: key.left.message })
          const hashes = yield* (yield* Miner)
            .generate(n, key.right)
            .pipe(Effect.mapError((e) => new RpcError({ code: -1, message: e.message })))
          return hashes.map(toHex)
        }),
      "mine blocks now to an address (regtest)",
      ["nblocks", "address"],
    ),
    method(
      "uptime",
      Schema.Tuple(),
      () => Effect.map(Clock.currentTimeMillis, (now) => Math.floor((now - ctx.startedAt) / 1000)),
      "seconds since start",
    ),
    method(
      "stop",
      Schema.Tuple(),
      () =>
        Effect.as(
          Deferred.succeed(ctx.shutdown, undefined).pipe(Effect.delay("50 millis"), Effect.forkDaemon),
          "fibercoin stopping",
        ),
      "shut the node down cleanly",
    ),
  ]
}

/** walletMethods: the wallet's methods; keys never leave it (no method returns a private key). */
export const walletMethods = () => {
  const amount = Int.pipe(Schema.positive())
  return [
    method(
      "getnewaddress",
      Schema.Tuple(),
      () => Effect.flatMap(Wallet, (w) => w.newAddress),
      "a new receiving address",
    ),
    method(
      "getbalance",
      Schema.Tuple(Schema.optionalElement(NonNegativeInt)),
      ([minconf]) => Effect.flatMap(Wallet, (w) => w.balance(minconf ?? 1)),
      "spendable mature balance in units",
      ["minconf"],
    ),
    method(
      "listunspent",
      Schema.Tuple(Schema.optionalElement(NonNegativeInt)),
      ([minconf]) => Effect.flatMap(Wallet, (w) => w.listUnspent(minconf ?? 1)),
      "the wallet's unspent outputs",
      ["minconf"],
    ),
    method(
      "sendtoaddress",
      Schema.Tuple(Schema.String, amount),
      ([address, units]) =>
        Effect.gen(function* () {
          const txid = yield* (yield* Wallet).send(address, BigInt(units)).pipe(Effect.mapError(walletError))
          return toHex(txid)
        }),
      "pay an amount of units to an address; signed inside the node",
      ["address", "amount"],
    ),
  ]
}
