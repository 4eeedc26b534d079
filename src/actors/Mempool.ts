import { Context, Data, type Effect, type Option, type PubSub, Schema } from "effect"
import type { RuleError } from "../consensus/errors.js"
import type { DecodeError } from "../schema/DecodeError.js"
import type { TxId } from "../schema/primitives.js"
import type { Tx, TxOut } from "../schema/tx.js"

/**
 * MempoolPolicy is what the node is willing to relay and keep (policy, not consensus: from config).
 */
export interface MempoolPolicy {
  /** limits.maxMempoolBytes: beyond it, the lowest fee-rate packages are evicted */
  readonly maxBytes: number
  /** minimum fee rate to enter, in units per byte */
  readonly minFeeRate: number
  /** orphan transactions (parents unknown) kept at most, by count and by bytes */
  readonly maxOrphans: number
  readonly maxOrphanBytes: number
}

/** defaultMempoolPolicy: Core-like defaults scaled to units (1 unit/byte minimum relay fee). */
export const defaultMempoolPolicy: MempoolPolicy = {
  maxBytes: 300_000_000,
  minFeeRate: 1,
  maxOrphans: 100,
  maxOrphanBytes: 5_000_000,
}

/**
 * MempoolReject is a policy refusal (not a consensus failure): `reason` as Core's
 * (`txn-mempool-conflict`, `txn-already-in-mempool`, `txn-already-known`, `min-fee-not-met`,
 * `mempool-full`, `non-final`, `coinbase`, `missing-inputs`).
 */
export class MempoolReject extends Schema.TaggedError<MempoolReject>()("MempoolReject", {
  reason: Schema.String,
  detail: Schema.String,
}) {
  override get message(): string {
    return this.detail === "" ? this.reason : `${this.reason} (${this.detail})`
  }
}

/** MempoolEntry is one transaction in the pool. */
export interface MempoolEntry {
  readonly txid: TxId
  readonly tx: Tx
  readonly bytes: Uint8Array
  readonly fee: bigint
  readonly size: number
  /** txids of in-pool parents */
  readonly parents: ReadonlyArray<TxId>
}

/** AcceptResult: accepted into the pool, or kept as an orphan until its parents arrive. */
export type AcceptResult =
  | { readonly _tag: "Accepted"; readonly txid: TxId; readonly fee: bigint; readonly size: number }
  | { readonly _tag: "Orphan"; readonly txid: TxId }

/** MempoolEvent is what the Mempool actor publishes (wallet, relay, miner). */
export type MempoolEvent = Data.TaggedEnum<{
  TxAccepted: { readonly entry: MempoolEntry }
  /** why: "block" (confirmed), "conflict" (a block spent its input), "evicted" (size limit), "reorg" (failed re-admission) */
  TxRemoved: {
    readonly txid: TxId
    readonly tx: Tx
    readonly why: "block" | "conflict" | "evicted" | "reorg"
  }
}>
export const MempoolEvent = Data.taggedEnum<MempoolEvent>()

/** MempoolInfo is getmempoolinfo's answer. */
export interface MempoolInfo {
  readonly size: number
  readonly bytes: number
  /** estimated memory in use */
  readonly usage: number
  readonly maxmempool: number
  /** units per byte */
  readonly mempoolminfee: number
}

/**
 * MempoolService is the Mempool actor's interface (any fiber may call it). The pool holds valid
 * transactions against the active tip plus their in-pool parents.
 */
export interface MempoolService {
  /**
   * accept validates a transaction (decode, context-free and contextual rules, signatures, policy)
   * against the tip's UTXO set plus in-pool parents. `allowOrphan` keeps one whose parents are
   * unknown (P2P); without it that is `missing-inputs` (RPC).
   */
  readonly accept: (
    bytes: Uint8Array,
    options?: { readonly allowOrphan?: boolean },
  ) => Effect.Effect<AcceptResult, DecodeError | RuleError | MempoolReject>
  readonly get: (txid: TxId) => Effect.Effect<Option.Option<MempoolEntry>>
  /** txids in the pool (getrawmempool) */
  readonly txids: Effect.Effect<ReadonlyArray<TxId>>
  readonly info: Effect.Effect<MempoolInfo>
  /** spentBy answers which pool transaction spends an outpoint key (`<txid hex>:<n>`), if any */
  readonly spentBy: (outpointKey: string) => Effect.Effect<Option.Option<TxId>>
  /** unconfirmed outputs created by pool transactions, for the wallet: [outpoint key, output] */
  readonly outputs: Effect.Effect<ReadonlyArray<readonly [key: string, output: TxOut, txid: TxId]>>
  /**
   * template lists pool transactions for a block of at most `maxBytes` of transactions, highest
   * ancestor-package fee rate first, every parent before its children.
   */
  readonly template: (maxBytes: number) => Effect.Effect<ReadonlyArray<MempoolEntry>>
  readonly events: PubSub.PubSub<MempoolEvent>
}

/** Mempool is the service tag of the Mempool actor. */
export class Mempool extends Context.Tag("fibercoin/Mempool")<Mempool, MempoolService>() {}
