import {
  type Cause,
  Context,
  Data,
  Deferred,
  Effect,
  Either,
  Exit,
  Layer,
  Metric,
  Option,
  PubSub,
  Queue,
  Schema,
  type Scope,
} from "effect"
import {
  checkTransaction,
  checkTxInputs,
  isCoinbase,
  isFinalTx,
  sigFailure,
  txSignatureChecks,
} from "../consensus/checkTx.js"
import type { RuleError } from "../consensus/errors.js"
import { txidOf } from "../consensus/hash.js"
import { keyOf, outpointKey } from "../consensus/utxo.js"
import { ChainStore } from "../layers/ChainStore.js"
import { SigVerifier } from "../layers/SigVerifier.js"
import type { Block } from "../schema/block.js"
import type { Coin } from "../schema/coin.js"
import type { DecodeError } from "../schema/DecodeError.js"
import { toHex } from "../schema/hex.js"
import type { Height, TxId } from "../schema/primitives.js"
import { decodeTx, encodeTx, MIN_TX_BYTES, type Tx, type TxOut } from "../schema/tx.js"
import * as Actor from "./Actor.js"
import { Chain, type ChainEvent } from "./Chain.js"

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

/** mempoolTransactions and mempoolBytes are the pool's size, exported at /metrics. */
export const mempoolTransactions = Metric.gauge("mempool_transactions", {
  description: "transactions in the mempool",
})
export const mempoolBytes = Metric.gauge("mempool_bytes", { description: "serialized bytes in the mempool" })

/** Mempool is the service tag of the Mempool actor. */
export class Mempool extends Context.Tag("fibercoin/Mempool")<Mempool, MempoolService>() {}

// ---------------------------------------------------------------------------------------------------
// The Mempool actor. Everything below `make` runs on the actor's fiber; the state is nobody else's.

/**
 * maxAncestorCount and maxDescendantCount bound a transaction's unconfirmed family, itself included
 * (Core's -limitancestorcount / -limitdescendantcount, 25): every package walk (eviction, template,
 * these checks) is then bounded, so a long chain of unconfirmed spends cannot make each acceptance
 * quadratic. Beyond them: `too-long-mempool-chain`.
 */
const maxAncestorCount = 25
const maxDescendantCount = 25

/** entryOverheadBytes, inputOverheadBytes, outputOverheadBytes: `usage` estimates beyond the raw bytes. */
const entryOverheadBytes = 512
const inputOverheadBytes = 160
const outputOverheadBytes = 96

/** mailboxCapacity: requests queued before `accept` callers wait. */
const mailboxCapacity = 1024

/** PoolTx is one pool entry with its links; `entry` is replaced (never mutated) when its parents change. */
interface PoolTx {
  entry: MempoolEntry
  readonly hex: string
  /** insertion order: a parent always has a smaller seq than its children */
  readonly seq: number
  readonly inputKeys: ReadonlyArray<string>
  readonly parents: Set<string>
  readonly children: Set<string>
  readonly usage: number
}

/** Orphan is a transaction waiting for parents (`missing`, txid hex) that neither pool nor UTXO set has. */
interface Orphan {
  readonly hex: string
  readonly tx: Tx
  readonly bytes: Uint8Array
  readonly missing: ReadonlySet<string>
}

/** PendingTx is a transaction of a disconnected block, waiting for the reorg to finish. */
interface PendingTx {
  readonly hex: string
  readonly tx: Tx
  readonly bytes: Uint8Array
}

interface State {
  /** by txid hex, in insertion order (so parents before children) */
  readonly pool: Map<string, PoolTx>
  /** outpoint key → txid hex of the pool transaction spending it */
  readonly spends: Map<string, string>
  bytes: number
  usage: number
  seq: number
  /** by txid hex, oldest first */
  readonly orphans: Map<string, Orphan>
  orphanBytes: number
  /** transactions of blocks disconnected since the last TipChanged, one array per block, newest first */
  disconnected: Array<ReadonlyArray<PendingTx>>
}

const emptyState = (): State => ({
  pool: new Map(),
  spends: new Map(),
  bytes: 0,
  usage: 0,
  seq: 0,
  orphans: new Map(),
  orphanBytes: 0,
  disconnected: [],
})

type Command =
  | {
      readonly _tag: "Accept"
      readonly bytes: Uint8Array
      readonly allowOrphan: boolean
      readonly reply: Deferred.Deferred<AcceptResult, DecodeError | RuleError | MempoolReject>
    }
  | {
      readonly _tag: "Get"
      readonly txid: TxId
      readonly reply: Deferred.Deferred<Option.Option<MempoolEntry>>
    }
  | { readonly _tag: "Txids"; readonly reply: Deferred.Deferred<ReadonlyArray<TxId>> }
  | { readonly _tag: "Info"; readonly reply: Deferred.Deferred<MempoolInfo> }
  | { readonly _tag: "SpentBy"; readonly key: string; readonly reply: Deferred.Deferred<Option.Option<TxId>> }
  | {
      readonly _tag: "Outputs"
      readonly reply: Deferred.Deferred<ReadonlyArray<readonly [key: string, output: TxOut, txid: TxId]>>
    }
  | {
      readonly _tag: "Template"
      readonly maxBytes: number
      readonly reply: Deferred.Deferred<ReadonlyArray<MempoolEntry>>
    }
  /** chain events are waiting in the subscription */
  | { readonly _tag: "Sync" }

/**
 * SignaturesUnavailable: the verifier died under a check (a worker thread lost). Nothing is known about
 * the signatures, so the transaction is neither accepted nor "invalid": its caller gets the defect and
 * the pool is kept (the actor does not restart over one lost batch).
 */
class SignaturesUnavailable extends Data.TaggedError("SignaturesUnavailable")<{
  readonly cause: Cause.Cause<never>
}> {}

type AdmitError = DecodeError | RuleError | MempoolReject | SignaturesUnavailable

type Admitted =
  | { readonly _tag: "Accepted"; readonly p: PoolTx }
  | { readonly _tag: "Orphan"; readonly txid: TxId }

interface AdmitOptions {
  readonly allowOrphan: boolean
  /** the signatures were verified when it entered the pool before (a reorg re-check): skip them */
  readonly signaturesVerified: boolean
}

const reject = (reason: string, detail = ""): Effect.Effect<never, MempoolReject> =>
  Effect.fail(new MempoolReject({ reason, detail }))

/** feeRateBelow: a.fee / a.size < b.fee / b.size, exactly. */
const feeRateBelow = (aFee: bigint, aSize: number, bFee: bigint, bSize: number): boolean =>
  aFee * BigInt(bSize) < bFee * BigInt(aSize)

const usageOf = (tx: Tx, size: number): number =>
  entryOverheadBytes +
  2 * size +
  tx.inputs.length * inputOverheadBytes +
  tx.outputs.length * outputOverheadBytes

/** ancestorsOf lists the in-pool ancestors (txid hex) reachable from `parents`, those included. */
const ancestorsOf = (state: State, parents: Iterable<string>): Set<string> => {
  const seen = new Set<string>()
  const stack = [...parents]
  while (stack.length > 0) {
    const hex = stack.pop()!
    if (seen.has(hex)) continue
    seen.add(hex)
    const p = state.pool.get(hex)
    if (p !== undefined) stack.push(...p.parents)
  }
  return seen
}

/** descendantsOf lists `hex` and its in-pool descendants, parents before children. */
const descendantsOf = (state: State, hex: string): Array<PoolTx> => {
  const seen = new Map<string, PoolTx>()
  const stack = [hex]
  while (stack.length > 0) {
    const h = stack.pop()!
    const p = state.pool.get(h)
    if (p === undefined || seen.has(h)) continue
    seen.set(h, p)
    stack.push(...p.children)
  }
  return [...seen.values()].sort((a, b) => a.seq - b.seq)
}

/** insert adds a validated transaction and links it to its in-pool parents. */
const insert = (
  state: State,
  c: {
    readonly hex: string
    readonly txid: TxId
    readonly tx: Tx
    readonly bytes: Uint8Array
    readonly fee: bigint
    readonly parents: ReadonlySet<string>
  },
): PoolTx => {
  const size = c.bytes.length
  const p: PoolTx = {
    entry: {
      txid: c.txid,
      tx: c.tx,
      bytes: c.bytes,
      fee: c.fee,
      size,
      parents: [...c.parents].map((h) => state.pool.get(h)!.entry.txid),
    },
    hex: c.hex,
    seq: state.seq++,
    inputKeys: c.tx.inputs.map((input) => keyOf(input.prevout)),
    parents: new Set(c.parents),
    children: new Set(),
    usage: usageOf(c.tx, size),
  }
  state.pool.set(p.hex, p)
  for (const key of p.inputKeys) state.spends.set(key, p.hex)
  for (const parent of p.parents) state.pool.get(parent)!.children.add(p.hex)
  state.bytes += size
  state.usage += p.usage
  return p
}

/** unlink removes one transaction; its children stay, with one in-pool parent fewer. */
const unlink = (state: State, p: PoolTx): void => {
  state.pool.delete(p.hex)
  for (const key of p.inputKeys) if (state.spends.get(key) === p.hex) state.spends.delete(key)
  for (const parent of p.parents) state.pool.get(parent)?.children.delete(p.hex)
  for (const child of p.children) {
    const c = state.pool.get(child)
    if (c === undefined) continue
    c.parents.delete(p.hex)
    c.entry = { ...c.entry, parents: c.entry.parents.filter((t) => toHex(t) !== p.hex) }
  }
  state.bytes -= p.entry.size
  state.usage -= p.usage
}

const removeOrphan = (state: State, o: Orphan): void => {
  if (state.orphans.delete(o.hex)) state.orphanBytes -= o.bytes.length
}

/** keepOrphan stores an orphan, evicting the oldest beyond the count and byte bounds. */
const keepOrphan = (state: State, policy: MempoolPolicy, o: Orphan): void => {
  if (o.bytes.length > policy.maxOrphanBytes || policy.maxOrphans <= 0) return
  state.orphans.set(o.hex, o)
  state.orphanBytes += o.bytes.length
  for (const old of state.orphans.values()) {
    if (state.orphans.size <= policy.maxOrphans && state.orphanBytes <= policy.maxOrphanBytes) break
    removeOrphan(state, old)
  }
}

/**
 * planEviction answers which transactions must go for the pool to fit `maxBytes`, in removal order:
 * repeatedly the package (a transaction and all its in-pool descendants) with the lowest fee rate, the
 * newest on ties (first seen stays). Nothing is removed: the caller decides (the transaction being
 * accepted may itself be in the plan, and then nothing goes). A package never contains an already
 * planned transaction, since every planned set is closed under descendants.
 */
const planEviction = (state: State, maxBytes: number): Array<PoolTx> => {
  const plan: Array<PoolTx> = []
  const planned = new Set<string>()
  let bytes = state.bytes
  while (bytes > maxBytes) {
    let worst: { pkg: Array<PoolTx>; fee: bigint; size: number; seq: number } | undefined
    for (const p of state.pool.values()) {
      if (planned.has(p.hex)) continue
      const pkg = descendantsOf(state, p.hex)
      let fee = 0n
      let size = 0
      for (const d of pkg) {
        fee += d.entry.fee
        size += d.entry.size
      }
      if (
        worst === undefined ||
        feeRateBelow(fee, size, worst.fee, worst.size) ||
        (!feeRateBelow(worst.fee, worst.size, fee, size) && p.seq > worst.seq)
      ) {
        worst = { pkg, fee, size, seq: p.seq }
      }
    }
    if (worst === undefined) break
    for (const d of worst.pkg) {
      planned.add(d.hex)
      plan.push(d)
      bytes -= d.entry.size
    }
  }
  return plan
}

/** HeapItem is a template candidate with the ancestor-package score it had when pushed. */
interface HeapItem {
  readonly p: PoolTx
  readonly fee: bigint
  readonly size: number
}

/** better: higher package fee rate first, then the older transaction. */
const better = (a: HeapItem, b: HeapItem): boolean =>
  feeRateBelow(b.fee, b.size, a.fee, a.size) ||
  (!feeRateBelow(a.fee, a.size, b.fee, b.size) && a.p.seq < b.p.seq)

/** makeHeap is a binary max-heap ordered by `better`. */
const makeHeap = () => {
  const items: Array<HeapItem> = []
  const swap = (i: number, j: number) => {
    const t = items[i]!
    items[i] = items[j]!
    items[j] = t
  }
  return {
    push: (item: HeapItem): void => {
      items.push(item)
      let i = items.length - 1
      while (i > 0) {
        const up = (i - 1) >> 1
        if (!better(items[i]!, items[up]!)) break
        swap(i, up)
        i = up
      }
    },
    pop: (): HeapItem | undefined => {
      const top = items[0]
      const last = items.pop()
      if (items.length === 0 || last === undefined) return top
      items[0] = last
      let i = 0
      while (true) {
        const l = 2 * i + 1
        const r = l + 1
        let best = i
        if (l < items.length && better(items[l]!, items[best]!)) best = l
        if (r < items.length && better(items[r]!, items[best]!)) best = r
        if (best === i) break
        swap(i, best)
        i = best
      }
      return top
    },
  }
}

/**
 * buildTemplate picks transactions for a block of at most `maxBytes`: repeatedly the entry whose
 * ancestor package (itself and its ancestors not yet picked) has the highest fee rate, ancestors first.
 * Scores are updated as ancestors get picked (stale heap items are skipped); a package that does not
 * fit is passed over for smaller ones.
 */
const buildTemplate = (state: State, maxBytes: number): Array<MempoolEntry> => {
  const score = new Map<string, { fee: bigint; size: number }>()
  const heap = makeHeap()
  for (const p of state.pool.values()) {
    let fee = p.entry.fee
    let size = p.entry.size
    for (const a of ancestorsOf(state, p.parents)) {
      const q = state.pool.get(a)!
      fee += q.entry.fee
      size += q.entry.size
    }
    score.set(p.hex, { fee, size })
    heap.push({ p, fee, size })
  }
  const picked = new Set<string>()
  const out: Array<MempoolEntry> = []
  let used = 0
  while (maxBytes - used >= MIN_TX_BYTES) {
    const top = heap.pop()
    if (top === undefined) break
    const s = score.get(top.p.hex)!
    if (picked.has(top.p.hex) || s.fee !== top.fee || s.size !== top.size) continue
    if (used + s.size > maxBytes) continue
    const pkg = [...ancestorsOf(state, top.p.parents)]
      .filter((h) => !picked.has(h))
      .map((h) => state.pool.get(h)!)
      .concat(top.p)
      .sort((a, b) => a.seq - b.seq)
    for (const q of pkg) {
      picked.add(q.hex)
      out.push(q.entry)
      used += q.entry.size
      for (const d of descendantsOf(state, q.hex)) {
        if (picked.has(d.hex)) continue
        const ds = score.get(d.hex)!
        ds.fee -= q.entry.fee
        ds.size -= q.entry.size
        heap.push({ p: d, fee: ds.fee, size: ds.size })
      }
    }
  }
  return out
}

/**
 * make builds the Mempool actor over the Chain actor (its tip and events), the ChainStore's UTXO set
 * and the SigVerifier. The pool starts empty (it is not persisted) and follows the chain: a connected
 * block takes its transactions and their conflicts out, a reorg puts the disconnected transactions back.
 *
 * Chain events are drained from the subscription at the start of every command, on the actor's fiber,
 * so a caller that saw `chain.submitBlock` return is answered from a pool that already reflects the
 * block (a miner asking for a template after its block never gets the block's transactions again);
 * a second subscription only wakes the actor when it is idle.
 */
export const make = (
  policy: MempoolPolicy,
): Effect.Effect<MempoolService, never, Chain | ChainStore | SigVerifier | Scope.Scope> =>
  Effect.gen(function* () {
    const chain = yield* Chain
    const store = yield* ChainStore
    const verifier = yield* SigVerifier
    const events = yield* PubSub.unbounded<MempoolEvent>()
    // Both subscriptions exist before the actor answers anything, so no block is missed.
    const chainEvents = yield* PubSub.subscribe(chain.events)
    const wake = yield* PubSub.subscribe(chain.events)

    const publish = (event: MempoolEvent) => PubSub.publish(events, event)
    const removed = (p: PoolTx, why: "block" | "conflict" | "evicted" | "reorg") =>
      publish(MempoolEvent.TxRemoved({ txid: p.entry.txid, tx: p.entry.tx, why }))
    /** drop removes one transaction (its children stay) and announces why. */
    const drop = (state: State, p: PoolTx, why: "block" | "conflict" | "evicted" | "reorg") =>
      Effect.suspend(() => {
        unlink(state, p)
        return removed(p, why)
      })

    /**
     * admit runs every check, in Core's order, and on success inserts the transaction (or keeps it as
     * an orphan). It changes nothing when it fails. It neither publishes nor trims: its callers do.
     */
    const admit = (
      state: State,
      tx: Tx,
      bytes: Uint8Array,
      options: AdmitOptions,
    ): Effect.Effect<Admitted, AdmitError> =>
      Effect.gen(function* () {
        yield* checkTransaction(tx)
        if (isCoinbase(tx)) return yield* reject("coinbase", "a coinbase is valid only in a block")
        const txid = txidOf(bytes)
        const hex = toHex(txid)
        if (state.pool.has(hex)) return yield* reject("txn-already-in-mempool")
        for (let n = 0; n < tx.outputs.length; n++) {
          if (store.coins.get(outpointKey(txid, n)) !== undefined) return yield* reject("txn-already-known")
        }
        for (const input of tx.inputs) {
          const spender = state.spends.get(keyOf(input.prevout))
          if (spender !== undefined) {
            return yield* reject("txn-mempool-conflict", `${keyOf(input.prevout)} is spent by ${spender}`)
          }
        }
        const tip = yield* chain.tip
        const spendHeight = tip.height + 1
        const coins: Array<Coin | undefined> = []
        const parents = new Set<string>()
        const missing = new Set<string>()
        for (const input of tx.inputs) {
          const parentHex = toHex(input.prevout.txid)
          const parent = state.pool.get(parentHex)
          if (parent !== undefined) {
            const out = parent.entry.tx.outputs[input.prevout.index]
            parents.add(parentHex)
            coins.push(
              out === undefined
                ? undefined
                : { value: out.value, pubkey: out.pubkey, height: spendHeight as Height, coinbase: false },
            )
          } else {
            const coin = store.coins.get(keyOf(input.prevout))
            if (coin === undefined) missing.add(parentHex)
            coins.push(coin)
          }
        }
        if (missing.size > 0) {
          if (!options.allowOrphan) {
            return yield* reject("missing-inputs", `unknown parents ${[...missing].join(", ")}`)
          }
          if (!state.orphans.has(hex)) keepOrphan(state, policy, { hex, tx, bytes, missing })
          return { _tag: "Orphan", txid } as const
        }
        const fee = yield* checkTxInputs(tx, coins, spendHeight)
        if (!isFinalTx(tx, spendHeight, tip.medianTimePast)) {
          return yield* reject("non-final", `lockTime ${tx.lockTime} at height ${spendHeight}`)
        }
        const size = bytes.length
        if (Number(fee) < policy.minFeeRate * size) {
          return yield* reject("min-fee-not-met", `fee ${fee} < ${Math.ceil(policy.minFeeRate * size)}`)
        }
        const ancestors = ancestorsOf(state, parents)
        if (ancestors.size + 1 > maxAncestorCount) {
          return yield* reject(
            "too-long-mempool-chain",
            `more than ${maxAncestorCount - 1} unconfirmed ancestors`,
          )
        }
        for (const a of ancestors) {
          if (descendantsOf(state, a).length + 1 > maxDescendantCount) {
            return yield* reject(
              "too-long-mempool-chain",
              `${a} would exceed ${maxDescendantCount} descendants`,
            )
          }
        }
        if (!options.signaturesVerified && !verifier.txVerified(txid)) {
          const spent = coins.filter((c): c is Coin => c !== undefined)
          const checked = yield* Effect.exit(verifier.verifyAll(txSignatureChecks(tx, spent)))
          if (Exit.isFailure(checked)) return yield* new SignaturesUnavailable({ cause: checked.cause })
          if (checked.value >= 0) return yield* sigFailure(`input ${checked.value}`)
        }
        verifier.markTxVerified([txid])
        return { _tag: "Accepted", p: insert(state, { hex, txid, tx, bytes, fee, parents }) } as const
      })

    /** evict removes planned transactions, announcing each. */
    const evict = (state: State, plan: ReadonlyArray<PoolTx>) =>
      Effect.forEach(plan, (p) => drop(state, p, "evicted"), { discard: true })

    /**
     * acceptOne admits one transaction and makes room for it: lower fee-rate packages are evicted, or,
     * when the newcomer would be among them, it is refused with `mempool-full` and nothing changes.
     */
    const acceptOne = (
      state: State,
      tx: Tx,
      bytes: Uint8Array,
      allowOrphan: boolean,
    ): Effect.Effect<AcceptResult, AdmitError> =>
      Effect.gen(function* () {
        const r = yield* admit(state, tx, bytes, { allowOrphan, signaturesVerified: false })
        if (r._tag === "Orphan") return r
        const plan = planEviction(state, policy.maxBytes)
        if (plan.includes(r.p)) {
          unlink(state, r.p)
          return yield* reject("mempool-full", `fee rate too low for a pool of ${policy.maxBytes} bytes`)
        }
        yield* publish(MempoolEvent.TxAccepted({ entry: r.p.entry }))
        yield* evict(state, plan)
        return { _tag: "Accepted", txid: r.p.entry.txid, fee: r.p.entry.fee, size: r.p.entry.size } as const
      })

    /** resolveOrphans retries orphans waiting for any of `parents` (txid hex), and theirs in turn. */
    const resolveOrphans = (state: State, parents: Iterable<string>) =>
      Effect.gen(function* () {
        const work = [...parents]
        while (work.length > 0) {
          const parent = work.pop()!
          for (const o of [...state.orphans.values()]) {
            if (!o.missing.has(parent) || !state.orphans.has(o.hex)) continue
            removeOrphan(state, o)
            const r = yield* Effect.either(acceptOne(state, o.tx, o.bytes, true))
            if (Either.isRight(r) && r.right._tag === "Accepted") work.push(o.hex)
          }
        }
      })

    /** removeWithDescendants removes a transaction and everything in the pool that spends from it. */
    const removeWithDescendants = (state: State, hex: string, why: "conflict" | "reorg") =>
      Effect.forEach(descendantsOf(state, hex), (p) => drop(state, p, why), { discard: true })

    /** handleBlockConnected: the block's transactions are confirmed, and whatever they double-spend is dead. */
    const handleBlockConnected = (state: State, block: Block, txids: ReadonlyArray<TxId>) =>
      Effect.gen(function* () {
        const hexes = txids.map(toHex)
        const inBlock = new Set(hexes)
        for (const hex of hexes) {
          const p = state.pool.get(hex)
          if (p !== undefined) yield* drop(state, p, "block")
        }
        const spent = new Set<string>()
        for (const tx of block.txs) {
          if (isCoinbase(tx)) continue
          for (const input of tx.inputs) spent.add(keyOf(input.prevout))
        }
        for (const key of spent) {
          const spender = state.spends.get(key)
          if (spender !== undefined) yield* removeWithDescendants(state, spender, "conflict")
        }
        state.disconnected = state.disconnected.map((txs) => txs.filter((t) => !inBlock.has(t.hex)))
        for (const o of [...state.orphans.values()]) {
          if (inBlock.has(o.hex) || o.tx.inputs.some((input) => spent.has(keyOf(input.prevout)))) {
            removeOrphan(state, o)
          }
        }
        yield* resolveOrphans(state, hexes)
      })

    /** handleBlockDisconnected keeps the block's transactions until the reorg's TipChanged. */
    const handleBlockDisconnected = (state: State, block: Block) => {
      const txs: Array<PendingTx> = []
      for (const tx of block.txs) {
        if (isCoinbase(tx)) continue
        const bytes = encodeTx(tx)
        txs.push({ hex: toHex(txidOf(bytes)), tx, bytes })
      }
      state.disconnected.push(txs)
    }

    /**
     * handleReorg runs once a reorg has finished (TipChanged after disconnects): the disconnected
     * blocks' transactions, oldest block first, then the pool's own, are validated again against the
     * new tip. A disconnected transaction that fails is dropped silently; a pool transaction that fails
     * (its parent gone, a coinbase it spends now immature or gone, no longer final) is announced with
     * why "reorg". Signatures of pool transactions are not checked again: the coins an outpoint names
     * are fixed by the txid that created it.
     */
    const handleReorg = (state: State) =>
      Effect.gen(function* () {
        const disconnected = state.disconnected.toReversed().flat()
        state.disconnected = []
        const previous = [...state.pool.values()]
        state.pool.clear()
        state.spends.clear()
        state.bytes = 0
        state.usage = 0
        const readmitted: Array<string> = []
        for (const d of disconnected) {
          if (state.pool.has(d.hex)) continue
          const r = yield* Effect.either(
            admit(state, d.tx, d.bytes, { allowOrphan: false, signaturesVerified: false }),
          )
          if (Either.isRight(r) && r.right._tag === "Accepted") {
            readmitted.push(d.hex)
            yield* publish(MempoolEvent.TxAccepted({ entry: r.right.p.entry }))
          }
        }
        for (const p of previous) {
          if (state.pool.has(p.hex)) continue
          const r = yield* Effect.either(
            admit(state, p.entry.tx, p.entry.bytes, { allowOrphan: false, signaturesVerified: true }),
          )
          if (Either.isLeft(r)) yield* removed(p, "reorg")
        }
        yield* evict(state, planEviction(state, policy.maxBytes))
        yield* resolveOrphans(state, readmitted)
      })

    const handleChainEvent = (state: State, event: ChainEvent): Effect.Effect<void> => {
      switch (event._tag) {
        case "BlockConnected":
          return handleBlockConnected(state, event.block, event.txids)
        case "BlockDisconnected":
          return Effect.sync(() => handleBlockDisconnected(state, event.block))
        case "TipChanged":
          return state.disconnected.length > 0 ? handleReorg(state) : Effect.void
      }
    }

    /** syncChain applies every chain event published so far, in order. */
    const syncChain = (state: State) =>
      Effect.gen(function* () {
        for (const event of yield* Queue.takeAll(chainEvents)) yield* handleChainEvent(state, event)
      })

    /**
     * handleAccept refuses a transaction it holds already by its txid, before decoding it or running
     * any rule (Core's AlreadyHaveTx: a duplicate costs one hash, issue 7); one it keeps as an orphan
     * answers Orphan again.
     */
    const handleAccept = (state: State, bytes: Uint8Array, allowOrphan: boolean) =>
      Effect.gen(function* () {
        const copy = new Uint8Array(bytes)
        const txid = txidOf(copy)
        const hex = toHex(txid)
        if (state.pool.has(hex)) return yield* reject("txn-already-in-mempool")
        if (allowOrphan && state.orphans.has(hex)) return { _tag: "Orphan", txid } as const
        const tx = yield* decodeTx(copy)
        const result = yield* acceptOne(state, tx, copy, allowOrphan)
        if (result._tag === "Accepted") yield* resolveOrphans(state, [toHex(result.txid)])
        return result
      }).pipe(Effect.catchTag("SignaturesUnavailable", (e) => Effect.failCause(e.cause)))

    const handleCommand = (state: State, cmd: Command): Effect.Effect<void> => {
      switch (cmd._tag) {
        case "Accept":
          return handleAccept(state, cmd.bytes, cmd.allowOrphan).pipe(
            Effect.exit,
            Effect.flatMap((exit) => Deferred.done(cmd.reply, exit)),
          )
        case "Get":
          return Deferred.succeed(cmd.reply, Option.fromNullable(state.pool.get(toHex(cmd.txid))?.entry))
        case "Txids":
          return Deferred.succeed(
            cmd.reply,
            [...state.pool.values()].map((p) => p.entry.txid),
          )
        case "Info":
          return Deferred.succeed(cmd.reply, {
            size: state.pool.size,
            bytes: state.bytes,
            usage: state.usage,
            maxmempool: policy.maxBytes,
            mempoolminfee: policy.minFeeRate,
          })
        case "SpentBy": {
          const hex = state.spends.get(cmd.key)
          const p = hex === undefined ? undefined : state.pool.get(hex)
          return Deferred.succeed(cmd.reply, Option.fromNullable(p?.entry.txid))
        }
        case "Outputs": {
          const rows: Array<readonly [string, TxOut, TxId]> = []
          for (const p of state.pool.values()) {
            p.entry.tx.outputs.forEach((o, n) => {
              rows.push([outpointKey(p.entry.txid, n), o, p.entry.txid])
            })
          }
          return Deferred.succeed(cmd.reply, rows)
        }
        case "Template":
          return Deferred.succeed(cmd.reply, buildTemplate(state, cmd.maxBytes))
        case "Sync":
          return Effect.void
      }
    }

    /** handle applies the chain events published so far, then answers the command from that state. */
    const handle = (state: State, cmd: Command): Effect.Effect<State> =>
      Effect.gen(function* () {
        yield* syncChain(state)
        yield* handleCommand(state, cmd)
        yield* Metric.set(mempoolTransactions, state.pool.size)
        yield* Metric.set(mempoolBytes, state.bytes)
        return state
      })

    const actor = yield* Actor.make<Command, State, never, never>({
      name: "mempool",
      capacity: mailboxCapacity,
      initial: Effect.sync(emptyState),
      handle,
    })

    // The waker: when chain events arrive while the actor is idle, nudge it to apply them.
    yield* Effect.forkScoped(
      Effect.forever(
        Queue.take(wake).pipe(
          Effect.zipRight(Queue.takeAll(wake)),
          Effect.zipRight(actor.send({ _tag: "Sync" })),
        ),
      ),
    )

    const service: MempoolService = {
      accept: (bytes, options) =>
        Actor.ask(
          actor,
          (reply): Command => ({ _tag: "Accept", bytes, allowOrphan: options?.allowOrphan ?? false, reply }),
        ),
      get: (txid) => Actor.ask(actor, (reply): Command => ({ _tag: "Get", txid, reply })),
      txids: Actor.ask(actor, (reply): Command => ({ _tag: "Txids", reply })),
      info: Actor.ask(actor, (reply): Command => ({ _tag: "Info", reply })),
      spentBy: (key) => Actor.ask(actor, (reply): Command => ({ _tag: "SpentBy", key, reply })),
      outputs: Actor.ask(actor, (reply): Command => ({ _tag: "Outputs", reply })),
      template: (maxBytes) => Actor.ask(actor, (reply): Command => ({ _tag: "Template", maxBytes, reply })),
      events,
    }
    return service
  })

/** layer provides the Mempool actor; it needs the Chain actor, its ChainStore and a SigVerifier. */
export const layer = (policy: MempoolPolicy): Layer.Layer<Mempool, never, Chain | ChainStore | SigVerifier> =>
  Layer.scoped(Mempool, make(policy))
