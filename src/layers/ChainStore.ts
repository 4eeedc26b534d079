import { Context, Effect, Layer, Option, Schema } from "effect"
import type { UtxoDelta, UtxoView } from "../consensus/utxo.js"
import type { ChainTip, IndexEntry } from "../schema/chain.js"
import type { Coin } from "../schema/coin.js"
import { toHex } from "../schema/hex.js"
import type { BlockHash } from "../schema/primitives.js"

/** StorageError is a failure of the storage engine itself (I/O, a full disk, a corrupt record). */
export class StorageError extends Schema.TaggedError<StorageError>()("StorageError", {
  operation: Schema.String,
  detail: Schema.String,
}) {
  override get message(): string {
    return `storage ${this.operation} failed: ${this.detail}`
  }
}

/** DataDirLocked: another live fibercoin process holds the data directory. */
export class DataDirLocked extends Schema.TaggedError<DataDirLocked>()("DataDirLocked", {
  path: Schema.String,
  pid: Schema.Number,
}) {
  override get message(): string {
    return `data directory ${this.path} is locked by another fibercoin process (pid ${this.pid})`
  }
}

/**
 * ChainUpdate is one block connect or disconnect: the UTXO changes, the new tip (with the UTXO
 * commitment at it), the undo record written (connect) or dropped (disconnect), and index entries whose
 * status changed. `commit` applies all of it in ONE atomic transaction, so a crash at any instant
 * leaves either the state before or the state after, never a tip and a UTXO set that disagree.
 */
export interface ChainUpdate {
  readonly tip: ChainTip
  readonly delta: UtxoDelta
  readonly putUndo?: readonly [hash: BlockHash, undo: Uint8Array]
  readonly deleteUndo?: BlockHash
  readonly index?: ReadonlyArray<IndexEntry>
}

/** KeyedTable is a small persistent string-keyed table for later concerns (peers, bans, wallet). */
export interface KeyedTable {
  readonly get: (key: string) => Effect.Effect<Option.Option<Uint8Array>, StorageError>
  readonly put: (key: string, value: Uint8Array) => Effect.Effect<void, StorageError>
  readonly remove: (key: string) => Effect.Effect<void, StorageError>
  /** write puts (value) and removes (undefined) many rows in one transaction: all or none */
  readonly write: (
    rows: ReadonlyArray<readonly [string, Uint8Array | undefined]>,
  ) => Effect.Effect<void, StorageError>
  readonly entries: Effect.Effect<ReadonlyArray<readonly [string, Uint8Array]>, StorageError>
}

/**
 * ChainStore persists the chain state: the block index (every header known), raw blocks, undo data,
 * the UTXO set and the tip pointer, plus small keyed tables. Only the Chain actor's fiber writes the
 * chain state; `coins` may be read by any fiber and always shows the last committed tip. Bytes go in
 * and come out as copies (no caller can change the store through them); the order of `loadIndex`,
 * `forEachCoin` and `entries` is unspecified. Limits (LMDB's; callers stay within them): a table name has no
 * NUL and name plus key fit 1978 UTF-8 bytes; a tip's commitment is at most 4096 bytes.
 */
export interface ChainStoreService {
  /**
   * coins is the UTXO set at the committed tip, read synchronously because consensus validation reads
   * it in a tight loop (through a bounded cache in the LMDB layer). A storage failure while reading is
   * a defect (the node cannot go on without its UTXO set) and is thrown.
   */
  readonly coins: UtxoView
  /** tip is the committed tip, or none for a fresh store. */
  readonly tip: Effect.Effect<Option.Option<ChainTip>, StorageError>
  /** loadIndex reads every index entry (at start, to rebuild the header tree in memory). */
  readonly loadIndex: Effect.Effect<ReadonlyArray<IndexEntry>, StorageError>
  /** putIndex adds or replaces index entries (new headers, status changes outside a commit). */
  readonly putIndex: (entries: ReadonlyArray<IndexEntry>) => Effect.Effect<void, StorageError>
  /** putBlock stores a block's canonical bytes under its hash. */
  readonly putBlock: (hash: BlockHash, bytes: Uint8Array) => Effect.Effect<void, StorageError>
  readonly getBlock: (hash: BlockHash) => Effect.Effect<Option.Option<Uint8Array>, StorageError>
  readonly getUndo: (hash: BlockHash) => Effect.Effect<Option.Option<Uint8Array>, StorageError>
  /** commit applies one ChainUpdate atomically. */
  readonly commit: (update: ChainUpdate) => Effect.Effect<void, StorageError>
  /** forEachCoin visits every unspent output (a full scan: reindex checks, snapshots). */
  readonly forEachCoin: (visit: (key: string, coin: Coin) => void) => Effect.Effect<void, StorageError>
  /**
   * putCoins adds coins to the UTXO set in one transaction without moving the tip: a snapshot load
   * writes its chunks this way, then commits the tip (the Chain actor only; it wipes them again with
   * resetChainState when the load fails).
   */
  readonly putCoins: (
    coins: ReadonlyArray<readonly [key: string, coin: Coin]>,
  ) => Effect.Effect<void, StorageError>
  /** resetChainState drops the UTXO set, the undo records and the tip, keeping blocks and index (reindex). */
  readonly resetChainState: Effect.Effect<void, StorageError>
  /** table opens a named keyed table. */
  readonly table: (name: string) => KeyedTable
}

/** ChainStore is the service tag; layers: `layerMemory` here, `layerLmdb` for a data directory. */
export class ChainStore extends Context.Tag("fibercoin/ChainStore")<ChainStore, ChainStoreService>() {}

/**
 * makeMemoryStore builds an in-memory ChainStore: the same contract as LMDB, nothing persisted. Each
 * call is a fresh, empty store (tests, benchmarks, the simulator's nodes).
 */
export const makeMemoryStore = (): ChainStoreService => {
  const index = new Map<string, IndexEntry>()
  const blocks = new Map<string, Uint8Array>()
  const undos = new Map<string, Uint8Array>()
  const coins = new Map<string, Coin>()
  const tables = new Map<string, Map<string, Uint8Array>>()
  let tip: Option.Option<ChainTip> = Option.none()
  const copy = (b: Uint8Array) => new Uint8Array(b)

  return {
    coins: { get: (key) => coins.get(key) },
    tip: Effect.sync(() => tip),
    loadIndex: Effect.sync(() => [...index.values()]),
    putIndex: (entries) =>
      Effect.sync(() => {
        for (const e of entries) index.set(toHex(e.hash), e)
      }),
    putBlock: (hash, bytes) => Effect.sync(() => void blocks.set(toHex(hash), copy(bytes))),
    getBlock: (hash) => Effect.sync(() => Option.map(Option.fromNullable(blocks.get(toHex(hash))), copy)),
    getUndo: (hash) => Effect.sync(() => Option.map(Option.fromNullable(undos.get(toHex(hash))), copy)),
    commit: (update) =>
      Effect.sync(() => {
        for (const key of update.delta.spent) coins.delete(key)
        for (const [key, coin] of update.delta.created) coins.set(key, coin)
        if (update.putUndo !== undefined) undos.set(toHex(update.putUndo[0]), copy(update.putUndo[1]))
        if (update.deleteUndo !== undefined) undos.delete(toHex(update.deleteUndo))
        for (const e of update.index ?? []) index.set(toHex(e.hash), e)
        tip = Option.some(update.tip)
      }),
    putCoins: (entries) =>
      Effect.sync(() => {
        for (const [key, coin] of entries) coins.set(key, coin)
      }),
    forEachCoin: (visit) =>
      Effect.sync(() => {
        for (const [key, coin] of coins) visit(key, coin)
      }),
    resetChainState: Effect.sync(() => {
      coins.clear()
      undos.clear()
      tip = Option.none()
    }),
    table: (name) => {
      let t = tables.get(name)
      if (t === undefined) {
        t = new Map()
        tables.set(name, t)
      }
      const rows = t
      return {
        get: (key) => Effect.sync(() => Option.map(Option.fromNullable(rows.get(key)), copy)),
        put: (key, value) => Effect.sync(() => void rows.set(key, copy(value))),
        remove: (key) => Effect.sync(() => void rows.delete(key)),
        write: (changes) =>
          Effect.sync(() => {
            for (const [key, value] of changes) {
              if (value === undefined) rows.delete(key)
              else rows.set(key, copy(value))
            }
          }),
        entries: Effect.sync(() => [...rows].map(([key, value]) => [key, copy(value)] as const)),
      }
    },
  }
}

/** layerMemory provides a fresh in-memory ChainStore. */
export const layerMemory: Layer.Layer<ChainStore> = Layer.sync(ChainStore, makeMemoryStore)
