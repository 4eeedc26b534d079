import { Effect, Either, Layer, Option, PubSub, Queue, Ref } from "effect"
import { checkTransaction } from "../consensus/checkTx.js"
import { txidOf } from "../consensus/hash.js"
import { keyOf } from "../consensus/utxo.js"
import { toHex } from "../schema/hex.js"
import type { TxId } from "../schema/primitives.js"
import { decodeTx, type TxOut } from "../schema/tx.js"
import {
  Mempool,
  type MempoolEntry,
  MempoolEvent,
  type MempoolInfo,
  MempoolReject,
  type MempoolService,
} from "./Mempool.js"
import { WalletSource } from "./Wallet.js"

/**
 * The light node's pool (issue 9). A light node has no UTXO set, so it cannot check a transaction's
 * inputs: it keeps only the transactions made here (the wallet's payments, `sendrawtransaction`),
 * after the checks that need no UTXO set, so the Relay announces them and serves them to peers, who
 * validate them. Transactions from peers are refused (`light-node`), without a score: asking is no
 * offence. An entry leaves when a block the light client saw confirms it, or spends one of its
 * inputs (a conflict). Fees are unknown here (0).
 */

/** MAX_OWN_TRANSACTIONS bounds the pool: a wallet that sends this many unconfirmed payments waits. */
export const MAX_OWN_TRANSACTIONS = 1_000

interface State {
  readonly entries: Map<string, MempoolEntry>
  /** outpoint key → txid hex of the entry spending it */
  readonly spends: Map<string, string>
}

const lightRefusal = new MempoolReject({
  reason: "light-node",
  detail: "a light node keeps only its own transactions (it has no UTXO set to check others)",
})

/** make builds the light pool over the wallet source's block events (confirmations and conflicts). */
export const make = Effect.gen(function* () {
  const source = yield* WalletSource
  const events = yield* PubSub.unbounded<MempoolEvent>()
  const state = yield* Ref.make<State>({ entries: new Map(), spends: new Map() })

  const remove = (entry: MempoolEntry, why: "block" | "conflict") =>
    Effect.gen(function* () {
      yield* Ref.update(state, (s) => {
        s.entries.delete(toHex(entry.txid))
        for (const input of entry.tx.inputs) s.spends.delete(keyOf(input.prevout))
        return s
      })
      yield* PubSub.publish(events, MempoolEvent.TxRemoved({ txid: entry.txid, tx: entry.tx, why }))
    })

  // a block the light client saw: what it confirms leaves; what spends our inputs otherwise conflicts
  const blocks = yield* PubSub.subscribe(source.events)
  yield* Effect.forkScoped(
    Effect.forever(
      Effect.gen(function* () {
        const event = yield* Queue.take(blocks)
        if (event._tag !== "BlockConnected") return
        const s = yield* Ref.get(state)
        for (const [t, tx] of event.block.txs.entries()) {
          const confirmed = s.entries.get(toHex(event.txids[t]!))
          if (confirmed !== undefined) {
            yield* remove(confirmed, "block")
            continue
          }
          for (const input of tx.inputs) {
            const spender = s.spends.get(keyOf(input.prevout))
            const entry = spender === undefined ? undefined : s.entries.get(spender)
            if (entry !== undefined) yield* remove(entry, "conflict")
          }
        }
      }),
    ),
  )

  const accept: MempoolService["accept"] = (bytes, options) =>
    Effect.gen(function* () {
      if (options?.allowOrphan === true) return yield* lightRefusal
      const tx = yield* decodeTx(bytes)
      const checked = checkTransaction(tx)
      if (Either.isLeft(checked)) return yield* checked.left
      const txid = txidOf(bytes)
      const hex = toHex(txid)
      const s = yield* Ref.get(state)
      if (s.entries.has(hex))
        return yield* new MempoolReject({ reason: "txn-already-in-mempool", detail: "" })
      for (const input of tx.inputs) {
        if (s.spends.has(keyOf(input.prevout)))
          return yield* new MempoolReject({ reason: "txn-mempool-conflict", detail: "" })
      }
      if (s.entries.size >= MAX_OWN_TRANSACTIONS)
        return yield* new MempoolReject({
          reason: "mempool-full",
          detail: `${MAX_OWN_TRANSACTIONS} own transactions wait for a block`,
        })
      const parents = tx.inputs.map((i) => toHex(i.prevout.txid)).filter((p) => s.entries.has(p))
      const entry: MempoolEntry = {
        txid,
        tx,
        bytes: new Uint8Array(bytes),
        fee: 0n,
        size: bytes.length,
        parents: parents.map((p) => s.entries.get(p)!.txid),
      }
      s.entries.set(hex, entry)
      for (const input of tx.inputs) s.spends.set(keyOf(input.prevout), hex)
      yield* PubSub.publish(events, MempoolEvent.TxAccepted({ entry }))
      return { _tag: "Accepted" as const, txid, fee: 0n, size: bytes.length }
    })

  const service: MempoolService = {
    accept,
    get: (txid) => Effect.map(Ref.get(state), (s) => Option.fromNullable(s.entries.get(toHex(txid)))),
    txids: Effect.map(Ref.get(state), (s) => [...s.entries.values()].map((e) => e.txid)),
    info: Effect.map(Ref.get(state), (s): MempoolInfo => {
      const bytes = [...s.entries.values()].reduce((n, e) => n + e.size, 0)
      return { size: s.entries.size, bytes, usage: bytes, maxmempool: 0, mempoolminfee: 0 }
    }),
    spentBy: (key) =>
      Effect.map(Ref.get(state), (s) =>
        Option.map(Option.fromNullable(s.spends.get(key)), (hex) => s.entries.get(hex)!.txid as TxId),
      ),
    outputs: Effect.map(Ref.get(state), (s) =>
      [...s.entries.values()].flatMap((e) =>
        e.tx.outputs.map((o, n) => [`${toHex(e.txid)}:${n}`, o, e.txid] as readonly [string, TxOut, TxId]),
      ),
    ),
    // a light node does not mine
    template: () => Effect.succeed([]),
    events,
  }
  return service
})

/** layer provides the light pool as the node's Mempool; it follows the WalletSource's blocks. */
export const layer: Layer.Layer<Mempool, never, WalletSource> = Layer.scoped(Mempool, make)
