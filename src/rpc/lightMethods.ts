import { Effect, Option, Schema } from "effect"
import { Chain } from "../actors/Chain.js"
import { LightClient } from "../actors/LightClient.js"
import { medianTimePast } from "../consensus/pow.js"
import { fromHex, toHex } from "../schema/hex.js"
import type { BlockHash } from "../schema/primitives.js"
import { chainMethods, difficulty, type RpcContext } from "./methods.js"
import { verifytxoutproofMethod } from "./proofMethods.js"
import { method, methodNotFound, RpcError } from "./Server.js"

/**
 * lightMethods are a light node's chain methods (issue 9, CONTRACT.md: "A light node answers the
 * chain and network methods from its headers and the wallet methods from merkle-proven transactions;
 * methods it cannot answer return -32601 with a message saying why"). Its chain is the LightClient's
 * scanned chain (every block checked against the wallet's filters), its headers the Chain's best
 * header; the mempool methods see the light pool (only transactions made here). The wallet and
 * network methods are the full node's, unchanged.
 */

/** methods that need no UTXO set or block bodies: the full node's work as they are */
const SHARED = new Set([
  "decoderawtransaction",
  "sendrawtransaction",
  "getmempoolinfo",
  "getrawmempool",
  "uptime",
  "stop",
])

/** why: what a light node lacks for each method it cannot answer */
const UNAVAILABLE: ReadonlyArray<readonly [string, string]> = [
  ["getblock", "keeps headers only, no block bodies"],
  ["getrawtransaction", "keeps headers only, no block bodies or transaction index"],
  ["gettxout", "has no UTXO set"],
  ["gettxoutsetinfo", "has no UTXO set"],
  ["gettxoutproof", "keeps headers only, no block bodies to prove from"],
  ["dumptxoutset", "has no UTXO set"],
  ["loadtxoutset", "has no UTXO set (snapshots are for full nodes)"],
  ["getmininginfo", "does not mine"],
  ["generatetoaddress", "does not mine"],
]

/**
 * client is the node's LightClient, looked up when a method runs (so the node's RPC layer needs no
 * LightClient in its type: only a light node registers these methods, and it always has one)
 */
const client = Effect.flatMap(Effect.serviceOption(LightClient), (o) =>
  Option.isSome(o)
    ? Effect.succeed(o.value)
    : Effect.dieMessage("lightChainMethods: no LightClient (not a light node)"),
)

const hash = Schema.String.pipe(Schema.pattern(/^[0-9a-fA-F]{64}$/))
const NonNegativeInt = Schema.Number.pipe(Schema.int(), Schema.nonNegative())

/** lightChainMethods replaces chainMethods on a light node. */
export const lightChainMethods = (ctx: RpcContext) => {
  const params = ctx.params
  const shared = chainMethods(ctx).filter((m) => SHARED.has(m.name))

  /** headerInfo: the scanned tip's header, work and median time past */
  const tipInfo = Effect.gen(function* () {
    const chain = yield* Chain
    const status = yield* (yield* client).status
    const entry = (yield* chain.entry(status.hash)).pipe(Option.getOrThrow)
    const times: Array<number> = []
    let cur = Option.some(entry)
    while (Option.isSome(cur) && times.length < 11) {
      times.push(cur.value.header.time)
      cur = cur.value.height === 0 ? Option.none() : yield* chain.entry(cur.value.header.prev as BlockHash)
    }
    return { status, entry, mtp: medianTimePast(times) }
  })

  const light = [
    method(
      "getblockchaininfo",
      Schema.Tuple(),
      () =>
        Effect.gen(function* () {
          const { status, entry, mtp } = yield* tipInfo
          const headers = (yield* (yield* Chain).bestHeader).height
          return {
            chain: params.name === "mainnet" ? "main" : params.name === "testnet" ? "test" : "regtest",
            blocks: status.height,
            headers,
            bestblockhash: toHex(status.hash),
            chainwork: entry.chainwork.toString(16).padStart(64, "0"),
            difficulty: difficulty(params, entry.header.bits),
            mediantime: mtp,
            initialblockdownload: status.height < headers,
            verificationprogress: headers === 0 ? 1 : status.height / headers,
            pruned: true,
          }
        }),
      "chain state from headers: the scanned tip (filters checked), the best header",
    ),
    method(
      "getblockcount",
      Schema.Tuple(),
      () =>
        Effect.map(
          Effect.flatMap(client, (l) => l.status),
          (s) => s.height,
        ),
      "height of the scanned tip",
    ),
    method(
      "getbestblockhash",
      Schema.Tuple(),
      () =>
        Effect.map(
          Effect.flatMap(client, (l) => l.status),
          (s) => toHex(s.hash),
        ),
      "hash of the scanned tip",
    ),
    method(
      "getblockhash",
      Schema.Tuple(NonNegativeInt),
      ([height]) =>
        Effect.gen(function* () {
          const h = yield* (yield* client).hashAt(height)
          if (Option.isNone(h)) return yield* new RpcError({ code: -8, message: "Block height out of range" })
          return toHex(h.value)
        }),
      "hash of the scanned chain's block at a height",
      ["height"],
    ),
    method(
      "getblockheader",
      Schema.Tuple(hash),
      ([h]) =>
        Effect.gen(function* () {
          const entry = yield* (yield* Chain).entry(fromHex(h.toLowerCase()) as BlockHash)
          if (Option.isNone(entry)) return yield* new RpcError({ code: -5, message: "Block not found" })
          const e = entry.value
          const lightClient = yield* client
          const status = yield* lightClient.status
          const at = yield* lightClient.hashAt(e.height)
          const onChain = Option.exists(at, (x) => toHex(x) === toHex(e.hash))
          return {
            hash: toHex(e.hash),
            height: e.height,
            confirmations: onChain ? status.height - e.height + 1 : -1,
            previousblockhash: toHex(e.header.prev),
            merkleroot: toHex(e.header.merkleRoot),
            time: e.header.time,
            bits: e.header.bits.toString(16).padStart(8, "0"),
            nonce: e.header.nonce,
            chainwork: e.chainwork.toString(16).padStart(64, "0"),
          }
        }),
      "a block header",
      ["blockhash"],
    ),
  ]

  const unavailable = UNAVAILABLE.map(([name, why]) =>
    method(
      name,
      Schema.Array(Schema.Unknown),
      () => Effect.fail(methodNotFound(`${name}: not available on a light node (it ${why})`)),
      `not available on a light node (it ${why})`,
    ),
  )
  /** a proof's block counts when it is on the scanned chain (the light node's view of the active one) */
  const onScannedChain = (blockHash: BlockHash) =>
    Effect.gen(function* () {
      const entry = yield* (yield* Chain).entry(blockHash)
      if (Option.isNone(entry)) return false
      const at = yield* (yield* client).hashAt(entry.value.height)
      return Option.exists(at, (h) => toHex(h) === toHex(blockHash))
    })
  return [...shared, ...light, verifytxoutproofMethod(onScannedChain), ...unavailable]
}
