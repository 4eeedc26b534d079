import { Context, Data, Deferred, Effect, Either, Layer, Option, PubSub, Queue } from "effect"
import { buildFilter, filterHash, filterHeader, ZERO_FILTER_HEADER } from "../consensus/blockFilter.js"
import { ChainStore, type StorageError } from "../layers/ChainStore.js"
import { type Block, decodeBlock } from "../schema/block.js"
import { toHex } from "../schema/hex.js"
import type { BlockHash } from "../schema/primitives.js"
import * as Actor from "./Actor.js"
import { Chain, type ChainEvent } from "./Chain.js"

/**
 * FilterIndex (issue 9): the basic compact block filter (BIP158, `consensus/blockFilter.ts`) and its
 * BIP157 filter header for every block the node connected, so Peers can serve getcfilters,
 * getcfheaders and getcfcheckpt to light nodes. Full and miner nodes run it; light nodes do not.
 *
 * Storage: one ChainStore table, `cfindex`, with per block `f<hash hex>` (the filter bytes) and
 * `h<hash hex>` (filter hash 32 ‖ filter header 32 ‖ the block's parent hash 32, so a range is walked
 * back from its stop block without asking the Chain), and `last` (the last block indexed, where the
 * catch-up starts); one table, so a batch of blocks is one transaction. Rows are never deleted: a block that left the active chain keeps its
 * filter (at most one row per block the node ever connected), and a reorg back needs no rebuild.
 */

/** CFHEADER_ROW_BYTES: filter hash ‖ filter header ‖ parent block hash. */
const CFHEADER_ROW_BYTES = 96

/** FilterEntry is one indexed block's filter hash, filter header and parent. */
export interface FilterEntry {
  readonly filterHash: Uint8Array
  readonly header: Uint8Array
  readonly prev: BlockHash
}

/** FilterRangeBlock is one block of a range: its hash, height and filter entry. */
export interface FilterRangeBlock extends FilterEntry {
  readonly hash: BlockHash
  readonly height: number
}

/**
 * FilterRange is a run of consecutive active-chain blocks `start..stop` with their entries, and the
 * filter header of the block before `start` (32 zero bytes when `start` is 0): what cfheaders carries.
 */
export interface FilterRange {
  readonly previousHeader: Uint8Array
  readonly blocks: ReadonlyArray<FilterRangeBlock>
}

/**
 * FilterRangeError says why a range cannot be answered. `unknown-stop`, `not-active` (the stop block
 * is not on the active chain), `start-after-stop` and `too-long` are the asker's fault (a Peer scores
 * them); `not-indexed` is ours (the index is still catching up): the request is ignored, not scored.
 */
export class FilterRangeError extends Data.TaggedError("FilterRangeError")<{
  readonly reason: "unknown-stop" | "not-active" | "start-after-stop" | "too-long" | "not-indexed"
}> {
  override get message(): string {
    return `filter range: ${this.reason}`
  }
}

/** FilterIndexService is the index as Peers and RPC see it; any fiber may call it. */
export interface FilterIndexService {
  /** filter is a block's basic filter bytes, if indexed (any block the node connected, active or not). */
  readonly filter: (hash: BlockHash) => Effect.Effect<Option.Option<Uint8Array>, StorageError>
  /** header is a block's filter header (BIP157), if indexed. */
  readonly header: (hash: BlockHash) => Effect.Effect<Option.Option<Uint8Array>, StorageError>
  /** entry is a block's filter hash, filter header and parent hash, if indexed. */
  readonly entry: (hash: BlockHash) => Effect.Effect<Option.Option<FilterEntry>, StorageError>
  /**
   * headersRange is the active chain's blocks from `startHeight` up to `stopHash`, at most `max`
   * of them, with their filter entries and the filter header before the first (a getcfheaders answer;
   * getcfilters reads each block's `filter` after it). Fails when `stopHash` is unknown or not active,
   * `startHeight` is above it, the range is longer than `max`, or a block of it is not indexed yet.
   */
  readonly headersRange: (
    startHeight: number,
    stopHash: BlockHash,
    max: number,
  ) => Effect.Effect<FilterRange, FilterRangeError | StorageError>
  /**
   * checkpoints is the filter header of every `interval`-th active block up to `stopHash` (heights
   * interval, 2·interval, …: BIP157's cfcheckpt with interval 1,000). Fails as headersRange.
   */
  readonly checkpoints: (
    stopHash: BlockHash,
    interval: number,
  ) => Effect.Effect<ReadonlyArray<Uint8Array>, FilterRangeError | StorageError>
  /** indexedTip is the last block the index wrote (for tests and status), if any. */
  readonly indexedTip: Effect.Effect<Option.Option<BlockHash>, StorageError>
  /** caughtUp waits until the start-up catch-up reached the active tip. */
  readonly caughtUp: Effect.Effect<void>
}

/** FilterIndex is the service tag; `layer` runs it over the Chain and the ChainStore. */
export class FilterIndex extends Context.Tag("fibercoin/FilterIndex")<FilterIndex, FilterIndexService>() {}

/** Connected is one BlockConnected to index. */
interface Connected {
  readonly hash: BlockHash
  readonly height: number
  readonly block: Block
}

/**
 * Cmd is the actor's mailbox: index the blocks of a run of BlockConnected events, or (the catch-up)
 * blocks of the active chain by hash, answering how many of them are indexed.
 */
type Cmd =
  | { readonly _tag: "Connected"; readonly blocks: ReadonlyArray<Connected> }
  | {
      readonly _tag: "Index"
      readonly hashes: ReadonlyArray<BlockHash>
      readonly reply: Deferred.Deferred<number, StorageError>
    }

/** MAX_BATCH bounds the blocks indexed in one storage transaction (events taken at once, catch-up steps). */
const MAX_BATCH = 64

const encodeRow = (e: FilterEntry): Uint8Array => {
  const row = new Uint8Array(CFHEADER_ROW_BYTES)
  row.set(e.filterHash, 0)
  row.set(e.header, 32)
  row.set(e.prev, 64)
  return row
}

const decodeRow = (row: Uint8Array): Option.Option<FilterEntry> =>
  row.length === CFHEADER_ROW_BYTES
    ? Option.some({
        filterHash: row.slice(0, 32),
        header: row.slice(32, 64),
        prev: row.slice(64, 96) as BlockHash,
      })
    : Option.none()

/** row keys in the `cfindex` table: a block's filter, its header row, and the last block indexed */
const filterKey = (hash: Uint8Array) => `f${toHex(hash)}`
const headerKey = (hash: Uint8Array) => `h${toHex(hash)}`
const LAST_KEY = "last"

/**
 * make starts the FilterIndex in the current scope: it subscribes to the Chain's events before
 * anything else (so no connect is missed), indexes every BlockConnected on its own fiber, and catches
 * up in the background from the last block it indexed to the active tip (an existing data dir gets
 * its filters without delaying the node's start; requests for blocks indexed so far are answered
 * meanwhile). A block whose parent has no filter header yet is left to the catch-up, which walks the
 * active chain by height until it reaches the tip. Blocks that arrive together (IBD) are written in
 * one storage transaction, at most MAX_BATCH at a time.
 */
export const make = Effect.gen(function* () {
  const chain = yield* Chain
  const store = yield* ChainStore
  const table = store.table("cfindex")
  const events = yield* PubSub.subscribe(chain.events)
  const caughtUp = yield* Deferred.make<void>()

  const entry = (hash: BlockHash) =>
    Effect.map(table.get(headerKey(hash)), (row) => Option.flatMap(row, decodeRow))

  const indexed = (hash: BlockHash) => Effect.map(table.get(headerKey(hash)), Option.isSome)

  /**
   * indexBatch writes the filters and header rows of `blocks` (in order) in one transaction, skipping
   * those already indexed; it stops at the first block whose parent has no filter header (neither
   * stored nor earlier in the batch). Answers how many of `blocks` are indexed now.
   */
  const indexBatch = (blocks: ReadonlyArray<Connected>): Effect.Effect<number, StorageError> =>
    Effect.gen(function* () {
      const pending = new Map<string, Uint8Array>()
      const rows: Array<readonly [string, Uint8Array]> = []
      let done = 0
      let last: BlockHash | undefined
      for (const { hash, height, block } of blocks) {
        if (pending.has(toHex(hash)) || (yield* indexed(hash))) {
          done++
          continue
        }
        let prevHeader: Uint8Array | undefined
        if (height === 0) prevHeader = ZERO_FILTER_HEADER
        else {
          prevHeader = pending.get(toHex(block.header.prev))
          if (prevHeader === undefined) {
            const prev = yield* entry(block.header.prev)
            if (Option.isNone(prev)) break
            prevHeader = prev.value.header
          }
        }
        const filter = buildFilter(block, hash)
        const fHash = filterHash(filter)
        const header = filterHeader(fHash, prevHeader)
        pending.set(toHex(hash), header)
        rows.push([filterKey(hash), filter])
        rows.push([headerKey(hash), encodeRow({ filterHash: fHash, header, prev: block.header.prev })])
        last = hash
        done++
      }
      if (last !== undefined) {
        rows.push([LAST_KEY, last])
        yield* table.write(rows)
      }
      return done
    })

  /** readBlocks reads the catch-up's blocks from the Chain; it stops at the first it cannot read. */
  const readBlocks = (hashes: ReadonlyArray<BlockHash>) =>
    Effect.gen(function* () {
      const blocks: Array<Connected> = []
      for (const hash of hashes) {
        const info = yield* chain.entry(hash)
        const bytes = yield* chain.block(hash)
        if (Option.isNone(info) || Option.isNone(bytes)) break
        const block = decodeBlock(bytes.value)
        if (Either.isLeft(block)) break
        blocks.push({ hash, height: info.value.height, block: block.right })
      }
      return blocks
    })

  const logged = <A>(what: string, fallback: A, effect: Effect.Effect<A, StorageError>) =>
    effect.pipe(
      Effect.catchAll((e) => Effect.as(Effect.logWarning(`filter index: ${what}: ${e.message}`), fallback)),
    )

  const handle = (state: undefined, cmd: Cmd): Effect.Effect<undefined> => {
    switch (cmd._tag) {
      case "Connected":
        return logged("indexing connected blocks", state, Effect.as(indexBatch(cmd.blocks), state))
      case "Index":
        return Effect.gen(function* () {
          const result = yield* Effect.either(Effect.flatMap(readBlocks(cmd.hashes), indexBatch))
          yield* Deferred.complete(cmd.reply, result)
          return state
        })
    }
  }

  const actor = yield* Actor.make<Cmd, undefined, never, never>({
    name: "filter-index",
    capacity: 1024,
    initial: Effect.succeed(undefined),
    handle,
  })

  // forward runs of BlockConnected events (an IBD's come many at once) as one command each
  yield* Effect.forkScoped(
    Queue.takeBetween(events, 1, MAX_BATCH).pipe(
      Effect.flatMap((taken) => {
        const blocks: Array<Connected> = []
        for (const event of taken as Iterable<ChainEvent>) {
          if (event._tag === "BlockConnected")
            blocks.push({ hash: event.hash, height: event.height, block: event.block })
        }
        return blocks.length === 0 ? Effect.void : actor.send({ _tag: "Connected", blocks })
      }),
      Effect.forever,
    ),
  )

  /**
   * catchUp finds the first active height without a filter (from the last indexed block, stepping
   * back past blocks a reorg replaced), then indexes by height, MAX_BATCH blocks a step, until the
   * active chain ends.
   */
  const catchUp = Effect.gen(function* () {
    let height = 0
    const last = yield* table.get(LAST_KEY)
    if (Option.isSome(last)) {
      const info = yield* chain.entry(last.value as BlockHash)
      if (Option.isSome(info)) height = info.value.height
    }
    height = Math.min(height, (yield* chain.tip).height)
    for (; height > 0; height--) {
      const below = yield* chain.hashAt(height - 1)
      if (Option.isSome(below) && (yield* indexed(below.value))) break
    }
    let done = 0
    for (let end = false; !end; ) {
      const batch: Array<BlockHash> = []
      while (batch.length < MAX_BATCH) {
        const hash = yield* chain.hashAt(height)
        if (Option.isNone(hash)) {
          end = true
          break
        }
        height++
        if (!(yield* indexed(hash.value))) batch.push(hash.value)
      }
      if (batch.length === 0) continue
      const n = yield* Actor.ask<Cmd, number, StorageError>(actor, (reply) => ({
        _tag: "Index",
        hashes: batch,
        reply,
      }))
      done += n
      if (n < batch.length)
        return yield* Effect.logWarning(
          `filter index: cannot index block ${toHex(batch[n]!)}; catch-up stopped`,
        )
    }
    if (done > 0) yield* Effect.logInfo(`filter index: caught up, ${done} blocks indexed`)
  })

  yield* Effect.forkScoped(
    logged("catch-up", undefined, catchUp).pipe(Effect.ensuring(Deferred.succeed(caughtUp, undefined))),
  )

  /** activeHeight is the height of `hash` if it is on the active chain. */
  const activeHeight = (hash: BlockHash) =>
    Effect.flatMap(chain.entry(hash), (info) =>
      Option.isNone(info)
        ? Effect.fail(new FilterRangeError({ reason: "unknown-stop" }))
        : info.value.active
          ? Effect.succeed(info.value.height)
          : Effect.fail(new FilterRangeError({ reason: "not-active" })),
    )

  const required = (hash: BlockHash) =>
    Effect.flatMap(entry(hash), (e) =>
      Option.isSome(e)
        ? Effect.succeed(e.value)
        : Effect.fail(new FilterRangeError({ reason: "not-indexed" })),
    )

  const headersRange: FilterIndexService["headersRange"] = (startHeight, stopHash, max) =>
    Effect.gen(function* () {
      const stopHeight = yield* activeHeight(stopHash)
      if (startHeight > stopHeight) return yield* new FilterRangeError({ reason: "start-after-stop" })
      if (stopHeight - startHeight + 1 > max) return yield* new FilterRangeError({ reason: "too-long" })
      const blocks: Array<FilterRangeBlock> = []
      let hash = stopHash
      for (let height = stopHeight; height >= startHeight; height--) {
        const e = yield* required(hash)
        blocks.push({ ...e, hash, height })
        hash = e.prev
      }
      blocks.reverse()
      const previousHeader = startHeight === 0 ? ZERO_FILTER_HEADER : (yield* required(hash)).header
      return { previousHeader, blocks }
    })

  const checkpoints: FilterIndexService["checkpoints"] = (stopHash, interval) =>
    Effect.gen(function* () {
      const stopHeight = yield* activeHeight(stopHash)
      const out: Array<Uint8Array> = []
      for (let height = interval; height <= stopHeight; height += interval) {
        const hash = yield* chain.hashAt(height)
        if (Option.isNone(hash)) return yield* new FilterRangeError({ reason: "not-active" })
        out.push((yield* required(hash.value)).header)
      }
      // the chain did not move under us: the stop block is still active at its height
      const again = yield* chain.hashAt(stopHeight)
      if (Option.isNone(again) || toHex(again.value) !== toHex(stopHash))
        return yield* new FilterRangeError({ reason: "not-active" })
      return out
    })

  return {
    filter: (hash) => table.get(filterKey(hash)),
    header: (hash) =>
      Effect.map(
        entry(hash),
        Option.map((e) => e.header),
      ),
    entry,
    headersRange,
    checkpoints,
    indexedTip: Effect.map(
      table.get(LAST_KEY),
      Option.map((b) => b as BlockHash),
    ),
    caughtUp: Deferred.await(caughtUp),
  } satisfies FilterIndexService
})

/** layer runs the FilterIndex over the Chain and its ChainStore (full and miner nodes). */
export const layer: Layer.Layer<FilterIndex, never, Chain | ChainStore> = Layer.scoped(FilterIndex, make)
