import { Effect, Option, Schema } from "effect"
import { Chain } from "../actors/Chain.js"
import { LightClient } from "../actors/LightClient.js"
import { medianTimePast } from "../consensus/pow.js"
import { toHex } from "../schema/hex.js"
import type { BlockHash } from "../schema/primitives.js"
import { type ChainView, chainMethods, difficulty, type RpcContext, tipMethods } from "./methods.js"
import { verifytxoutproofMethod } from "./proofMethods.js"
import { method, methodNotFound } from "./Server.js"

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

  /** the light node's chain: the LightClient's scanned chain (every block checked against the filters) */
  const scannedView: ChainView<never> = {
    tip: Effect.map(
      Effect.flatMap(client, (l) => l.status),
      (st) => ({ hash: st.hash, height: st.height }),
    ),
    hashAt: (height) => Effect.flatMap(client, (l) => l.hashAt(height)),
  }

  const light = [
    method(
      "getblockchaininfo",
      Schema.Tuple(),
      () =>
        Effect.gen(function* () {
          const { status, entry, mtp } = yield* tipInfo
          const chain = yield* Chain
          const headers = (yield* chain.bestHeader).height
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
            // the same field as a full node's (a light node never loads a snapshot: empty unless the Chain says)
            warnings: (yield* chain.syncStatus).warnings,
          }
        }),
      "chain state from headers: the scanned tip (filters checked), the best header",
    ),
    ...tipMethods(scannedView),
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
