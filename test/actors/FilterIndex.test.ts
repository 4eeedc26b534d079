import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Either, Layer, Option } from "effect"
import * as ChainActor from "../../src/actors/Chain.js"
import { Chain } from "../../src/actors/Chain.js"
import * as FilterIndexActor from "../../src/actors/FilterIndex.js"
import { FilterIndex } from "../../src/actors/FilterIndex.js"
import {
  buildFilter,
  filterHash,
  filterHeader,
  keyItem,
  matchAny,
  outpointItem,
  ZERO_FILTER_HEADER,
} from "../../src/consensus/blockFilter.js"
import { regtest } from "../../src/consensus/params.js"
import { ChainStore, type ChainStoreService, makeMemoryStore } from "../../src/layers/ChainStore.js"
import { layerLmdb } from "../../src/layers/ChainStoreLmdb.js"
import { layerDefault, loadDefaultBackend } from "../../src/layers/Signatures.js"
import * as SigVerifier from "../../src/layers/SigVerifier.js"
import { type Block, encodeBlock } from "../../src/schema/block.js"
import { toHex } from "../../src/schema/hex.js"
import type { BlockHash } from "../../src/schema/primitives.js"
import { pay, TestChain, type TestKey, testKey } from "../support/chain.js"

const backend = loadDefaultBackend().backend
const COIN = 100_000_000n
const miner = testKey(backend, 1)
const bob: TestKey = testKey(backend, 2)

/** A shared prefix of 103 blocks: coinbases 1..3 are mature, so branches can spend them. */
const prefix = new TestChain(regtest, backend, miner)
prefix.registerKey(bob)
prefix.mine(103)

/** branch grows `n` blocks on a copy of `from`, each spending one mature coinbase to bob. */
const branch = (from: TestChain, n: number, tag: number): TestChain => {
  const b = from.clone()
  for (let i = 0; i < n; i++) {
    const spendable = b.matureCoins().filter((s) => s.coin.coinbase)
    const txs = spendable.length > 0 ? [b.spend([spendable[0]!], [pay(bob, 49n * COIN - BigInt(tag))])] : []
    b.connect(b.candidate(txs, { time: b.times[b.times.length - 1]! + 60 + tag }))
  }
  return b
}

const verifierLayer = SigVerifier.layerInline().pipe(Layer.provide(layerDefault))
/** nodeLayer is a Chain and, unless `index` is false, a FilterIndex over `store`. */
const chainLayer = (store: ChainStoreService) =>
  ChainActor.layer(ChainActor.defaultChainConfig(regtest)).pipe(
    Layer.provideMerge(Layer.merge(Layer.succeed(ChainStore, store), verifierLayer)),
  )
const indexLayer = (store: ChainStoreService) =>
  FilterIndexActor.layer.pipe(Layer.provideMerge(chainLayer(store)))

const submitAll = (blocks: ReadonlyArray<Block>) =>
  Effect.gen(function* () {
    const chain = yield* Chain
    for (const b of blocks) yield* chain.submitBlock(encodeBlock(b))
  })

/** indexed waits (a few seconds at most) until the index holds a filter header for `hash`. */
const indexed = (hash: BlockHash) =>
  Effect.gen(function* () {
    const index = yield* FilterIndex
    for (let i = 0; i < 400; i++) {
      if (Option.isSome(yield* index.header(hash))) return
      yield* Effect.sleep(Duration.millis(5))
    }
    throw new Error(`block ${toHex(hash)} never indexed`)
  })

/** expectedHeaders are the filter headers of a fixture's blocks, computed from scratch. */
const expectedHeaders = (c: TestChain): Array<string> => {
  let prev = ZERO_FILTER_HEADER
  return c.blocks.map((block, i) => {
    prev = filterHeader(filterHash(buildFilter(block, c.hashes[i]!)), prev)
    return toHex(prev)
  })
}

/** checkIndexed asserts the index holds every block of `c` with its own filter and header. */
const checkIndexed = (c: TestChain) =>
  Effect.gen(function* () {
    const index = yield* FilterIndex
    const want = expectedHeaders(c)
    for (let i = 0; i < c.blocks.length; i++) {
      const hash = c.hashes[i]!
      const filter = yield* index.filter(hash)
      expect(Option.map(filter, toHex)).toEqual(Option.some(toHex(buildFilter(c.blocks[i]!, hash))))
      expect(Option.map(yield* index.header(hash), toHex)).toEqual(Option.some(want[i]))
    }
  })

describe("FilterIndex", () => {
  const main = branch(prefix, 3, 1)

  it.live("indexes every connected block: its filter, and filter headers chained from genesis", () =>
    Effect.gen(function* () {
      // the start-up catch-up (genesis only) is done: what follows comes through BlockConnected events
      yield* (yield* FilterIndex).caughtUp
      yield* submitAll(main.blocks.slice(1))
      yield* indexed(main.tip)
      yield* checkIndexed(main)
      // a wallet finds its payment: bob's key matches the block that paid him, and the spent coinbase's outpoint
      const index = yield* FilterIndex
      const last = main.blocks[main.height]!
      const filter = Option.getOrThrow(yield* index.filter(main.tip))
      expect(matchAny(filter, main.tip, [keyItem(bob.pubkey)])).toBe(true)
      const spent = last.txs[1]!.inputs[0]!.prevout
      expect(matchAny(filter, main.tip, [outpointItem(spent.txid, spent.index)])).toBe(true)
    }).pipe(Effect.provide(indexLayer(makeMemoryStore()))),
  )

  it.live("headersRange: the active chain's filter hashes and the header before; bad ranges refused", () =>
    Effect.gen(function* () {
      yield* submitAll(main.blocks.slice(1))
      yield* indexed(main.tip)
      const index = yield* FilterIndex
      const want = expectedHeaders(main)
      const range = yield* index.headersRange(100, main.tip, 2000)
      expect(range.blocks.map((b) => b.height)).toEqual([100, 101, 102, 103, 104, 105, 106])
      expect(toHex(range.previousHeader)).toBe(want[99])
      expect(range.blocks.map((b) => toHex(b.header))).toEqual(want.slice(100))
      expect(range.blocks.map((b) => toHex(b.filterHash))).toEqual(
        main.blocks.slice(100).map((b, i) => toHex(filterHash(buildFilter(b, main.hashes[100 + i]!)))),
      )
      // from genesis: the previous header is 32 zero bytes
      const fromZero = yield* index.headersRange(0, main.hashes[5]!, 10)
      expect(toHex(fromZero.previousHeader)).toBe(toHex(ZERO_FILTER_HEADER))
      expect(fromZero.blocks.length).toBe(6)
      const reason = (e: Effect.Effect<unknown, unknown>) =>
        Effect.map(Effect.either(e), (r) =>
          Either.isLeft(r) && r.left instanceof FilterIndexActor.FilterRangeError
            ? r.left.reason
            : "answered",
        )
      expect(yield* reason(index.headersRange(0, main.tip, 2000))).toBe("answered")
      expect(yield* reason(index.headersRange(0, main.tip, 100))).toBe("too-long")
      expect(yield* reason(index.headersRange(50, main.hashes[10]!, 100))).toBe("start-after-stop")
      expect(yield* reason(index.headersRange(0, new Uint8Array(32) as BlockHash, 100))).toBe("unknown-stop")
      // checkpoints every 50 blocks (the wire's are every 1,000)
      const checkpoints = yield* index.checkpoints(main.tip, 50)
      expect(checkpoints.map(toHex)).toEqual([want[50], want[100]])
    }).pipe(Effect.provide(indexLayer(makeMemoryStore()))),
  )

  it.live("a reorg: both branches keep their filters, each branch's headers chain on its own blocks", () =>
    Effect.gen(function* () {
      const a = branch(prefix, 2, 2)
      const b = branch(prefix, 3, 3)
      yield* submitAll(a.blocks.slice(1))
      yield* indexed(a.tip)
      yield* submitAll(b.blocks.slice(prefix.blocks.length))
      yield* indexed(b.tip)
      expect(toHex((yield* (yield* Chain).tip).hash)).toBe(toHex(b.tip))
      yield* checkIndexed(a)
      yield* checkIndexed(b)
      const index = yield* FilterIndex
      // ranges follow the active branch; the old branch's tip is no stop for them
      const range = yield* index.headersRange(prefix.height + 1, b.tip, 10)
      expect(range.blocks.map((x) => toHex(x.hash))).toEqual(b.hashes.slice(prefix.height + 1).map(toHex))
      const stale = yield* Effect.either(index.headersRange(prefix.height + 1, a.tip, 10))
      expect(Either.isLeft(stale) && stale.left._tag === "FilterRangeError" && stale.left.reason).toBe(
        "not-active",
      )
    }).pipe(Effect.provide(indexLayer(makeMemoryStore()))),
  )

  it.live("a restart catches up in the background: blocks connected without the index get filters", () =>
    Effect.gen(function* () {
      const store = makeMemoryStore()
      const half = main.blocks.slice(1, 60)
      // the first half indexed, the rest connected by a node without the index (an older version)
      yield* Effect.scoped(
        Effect.gen(function* () {
          yield* submitAll(half)
          yield* indexed(main.hashes[59]!)
        }).pipe(Effect.provide(indexLayer(store))),
      )
      yield* submitAll(main.blocks.slice(60)).pipe(Effect.provide(chainLayer(store)), Effect.scoped)
      yield* Effect.scoped(
        Effect.gen(function* () {
          const index = yield* FilterIndex
          yield* index.caughtUp
          yield* checkIndexed(main)
          expect(Option.map(yield* index.indexedTip, toHex)).toEqual(Option.some(toHex(main.tip)))
        }).pipe(Effect.provide(indexLayer(store))),
      )
    }),
  )

  it.live("over LMDB: a data dir from before the index gets its filters at start, and keeps them", () =>
    Effect.gen(function* () {
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "fibercoin-cfindex-"))),
        (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true })),
      )
      /** chainOnDisk is a Chain over the LMDB store in `dir`; indexOnDisk the same with the FilterIndex. */
      const chainOnDisk = () =>
        ChainActor.layer(ChainActor.defaultChainConfig(regtest)).pipe(
          Layer.provideMerge(Layer.merge(layerLmdb(dir), verifierLayer)),
        )
      const indexOnDisk = () => FilterIndexActor.layer.pipe(Layer.provideMerge(chainOnDisk()))
      yield* submitAll(main.blocks.slice(1)).pipe(Effect.provide(chainOnDisk()), Effect.scoped)
      yield* Effect.gen(function* () {
        yield* (yield* FilterIndex).caughtUp
        yield* checkIndexed(main)
      }).pipe(Effect.provide(indexOnDisk()), Effect.scoped)
      // reopened: everything is there at once, nothing to catch up
      yield* Effect.gen(function* () {
        const index = yield* FilterIndex
        expect(Option.map(yield* index.indexedTip, toHex)).toEqual(Option.some(toHex(main.tip)))
        yield* checkIndexed(main)
      }).pipe(Effect.provide(indexOnDisk()), Effect.scoped)
    }).pipe(Effect.scoped),
  )
})
