import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Layer, Option, TestClock } from "effect"
import * as ChainActor from "../../src/actors/Chain.js"
import { Chain } from "../../src/actors/Chain.js"
import { headerHash } from "../../src/consensus/checkBlock.js"
import type { RuleError } from "../../src/consensus/errors.js"
import { regtest } from "../../src/consensus/params.js"
import { checkProofOfWork } from "../../src/consensus/pow.js"
import { ChainStore, type ChainStoreService, makeMemoryStore } from "../../src/layers/ChainStore.js"
import { layerDefault, loadDefaultBackend } from "../../src/layers/Signatures.js"
import * as SigVerifier from "../../src/layers/SigVerifier.js"
import { type Block, type BlockHeader, encodeBlock } from "../../src/schema/block.js"
import { toHex } from "../../src/schema/hex.js"
import type { BlockHash } from "../../src/schema/primitives.js"
import { TestChain, testKey } from "../support/chain.js"

const backend = loadDefaultBackend().backend
const miner = testKey(backend, 1)

/** grow adds `n` coinbase-only blocks to `c`, `60 + tag` seconds apart (a tag makes a distinct branch). */
const grow = (c: TestChain, n: number, tag: number): TestChain => {
  for (let i = 0; i < n; i++) c.connect(c.candidate([], { time: c.times[c.times.length - 1]! + 60 + tag }))
  return c
}

/**
 * main: 2,000 blocks, one a minute. side: forks main after height 95 and reaches height 110 (more work
 * than main's first 100 blocks). fork250: forks main after height 250 and reaches 260.
 */
const main = new TestChain(regtest, backend, miner)
main.mine(95)
const side = grow(main.clone(), 15, 7)
main.mine(155)
const fork250 = grow(main.clone(), 10, 3)
main.mine(1750)

/** headersOf is `c`'s headers at heights from..to. */
const headersOf = (c: TestChain, from: number, to: number): ReadonlyArray<BlockHeader> =>
  c.blocks.slice(from, to + 1).map((b) => b.header)
const blocksOf = (c: TestChain, from: number, to: number): ReadonlyArray<Block> =>
  c.blocks.slice(from, to + 1)
const mainHeaders = headersOf(main, 1, 2000)

/** powOk: the header's hash meets the target its bits claim. */
const powOk = (h: BlockHeader) => checkProofOfWork(headerHash(h), h.bits, regtest.powLimit)

/** grindHeader searches nonces until the proof of work passes (or, with ok = false, fails). */
const grindHeader = (h: BlockHeader, ok = true): BlockHeader => {
  for (let nonce = 0; ; nonce++) {
    const c = { ...h, nonce }
    if (powOk(c) === ok) return c
  }
}

/** headersOn builds `n` headers (no blocks behind them) on `prev`, `60 + tag` seconds apart. */
const headersOn = (prev: BlockHeader, n: number, tag: number): Array<BlockHeader> => {
  const out: Array<BlockHeader> = []
  let p = prev
  for (let i = 0; i < n; i++) {
    p = grindHeader({ ...p, prev: headerHash(p), time: p.time + 60 + tag })
    out.push(p)
  }
  return out
}

const storeLayer = (store: ChainStoreService) => Layer.succeed(ChainStore, store)
const verifierLayer = SigVerifier.layerInline().pipe(Layer.provide(layerDefault))
const chainLayer = (store: ChainStoreService) =>
  ChainActor.layer(ChainActor.defaultChainConfig(regtest)).pipe(
    Layer.provide(Layer.merge(storeLayer(store), verifierLayer)),
  )

/** The node's clock: an hour after main's last block, so none is "too new". */
const nowSeconds = main.times[2000]! + 3600
const setClock = TestClock.setTime(nowSeconds * 1000)

const noStop = new Uint8Array(32) as BlockHash
const nothing: ReadonlySet<string> = new Set()

const submitAll = (blocks: ReadonlyArray<Block>) =>
  Effect.gen(function* () {
    const chain = yield* Chain
    const results: Array<string> = []
    for (const b of blocks) results.push(yield* chain.submitBlock(encodeBlock(b)))
    return results
  })

/** refusal is a failed submitHeaders' [reason, banScore], or "accepted". */
const refusal = (r: Either.Either<unknown, RuleError>) =>
  Either.isLeft(r) ? [r.left.reason, r.left.banScore] : "accepted"

const hexes = (hashes: ReadonlyArray<Uint8Array>) => hashes.map(toHex)
const headerHexes = (headers: ReadonlyArray<BlockHeader>) => headers.map((h) => toHex(headerHash(h)))
const heightsOf = (list: ReadonlyArray<{ readonly height: number }>) => list.map((b) => b.height)
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

describe("Chain actor: headers-first sync", () => {
  it.scoped("a batch of 2,000 headers moves the best header and the locator, not the tip", () =>
    Effect.gen(function* () {
      yield* setClock
      yield* Effect.gen(function* () {
        const chain = yield* Chain
        expect(hexes(yield* chain.locator)).toEqual([toHex(regtest.genesisHash)])
        const r = yield* chain.submitHeaders(mainHeaders)
        expect(r.added).toBe(2000)
        expect(r.last.height).toBe(2000)
        expect(toHex(r.last.hash)).toBe(toHex(main.tip))
        const best = yield* chain.bestHeader
        expect([toHex(best.hash), best.height, best.chainwork]).toEqual([
          toHex(main.tip),
          2000,
          r.last.chainwork,
        ])
        expect((yield* chain.locator)[0]).toEqual(main.tip)
        expect((yield* chain.tip).height).toBe(0)
        const e = yield* chain.entry(main.hashes[1000]!)
        expect(Option.map(e, (x) => [x.status, x.height, x.active])).toEqual(
          Option.some(["header", 1000, false]),
        )
        // known headers are skipped; the last one still answers where the batch ends
        const again = yield* chain.submitHeaders(mainHeaders.slice(1990))
        expect([again.added, toHex(again.last.hash)]).toEqual([0, toHex(main.tip)])
        // an empty batch says nothing about the sender: the active tip, nothing added
        const empty = yield* chain.submitHeaders([])
        expect([empty.added, toHex(empty.last.hash)]).toEqual([0, toHex(regtest.genesisHash)])
      }).pipe(Effect.provide(chainLayer(makeMemoryStore())))
    }),
  )

  it.scoped("blocksToFetch lists missing blocks in height order within window, max and exclude", () =>
    Effect.gen(function* () {
      yield* setClock
      yield* Effect.gen(function* () {
        const chain = yield* Chain
        yield* chain.submitHeaders(mainHeaders)
        const fetch = (window: number, max: number, exclude = nothing) =>
          chain.blocksToFetch(main.tip, { max, window, exclude })
        const first = yield* fetch(1024, 16)
        expect(heightsOf(first)).toEqual(range(1, 16))
        expect(hexes(first.map((b) => b.hash))).toEqual(hexes(main.hashes.slice(1, 17)))
        const requested = new Set(hexes(main.hashes.slice(1, 4)))
        expect(heightsOf(yield* fetch(1024, 16, requested))).toEqual(range(4, 19))
        expect(heightsOf(yield* fetch(5, 16))).toEqual(range(1, 5))
        expect(yield* chain.blocksToFetch(side.tip, { max: 16, window: 1024, exclude: nothing })).toEqual([])

        expect(yield* submitAll(blocksOf(main, 1, 10))).toEqual(Array(10).fill("active"))
        expect((yield* chain.tip).height).toBe(10)
        expect(heightsOf(yield* fetch(5, 16))).toEqual(range(11, 15))
        // a block that arrives before its parent's is stored (its header is known) and not asked for again
        expect(yield* submitAll(blocksOf(main, 12, 12))).toEqual(["side"])
        expect(heightsOf(yield* fetch(5, 16))).toEqual([11, 13, 14, 15])
        expect(yield* submitAll(blocksOf(main, 11, 11))).toEqual(["active"])
        expect((yield* chain.tip).height).toBe(12)

        yield* submitAll(blocksOf(main, 13, 2000))
        expect(toHex((yield* chain.tip).hash)).toBe(toHex(main.tip))
        expect(yield* fetch(1024, 16)).toEqual([])
        expect((yield* chain.syncStatus).verificationProgress).toBe(1)
      }).pipe(Effect.provide(chainLayer(makeMemoryStore())))
    }),
  )

  it.scoped("headers breaking a rule are refused with Core's reason and ban score; earlier ones stay", () =>
    Effect.gen(function* () {
      yield* setClock
      yield* Effect.gen(function* () {
        const chain = yield* Chain
        const [h1, h2, h3, h4] = mainHeaders as [BlockHeader, BlockHeader, BlockHeader, BlockHeader]
        const submit = (headers: ReadonlyArray<BlockHeader>) => Effect.either(chain.submitHeaders(headers))
        expect(refusal(yield* submit(mainHeaders.slice(5, 10)))).toEqual(["prev-blk-not-found", 0])
        expect(refusal(yield* submit([h1, h2, h4]))).toEqual(["bad-headers-chain", 100])
        // h1 and h2 were checked and stored before the break
        expect((yield* chain.bestHeader).height).toBe(2)
        expect(Option.map(yield* chain.entry(main.hashes[2]!), (e) => e.status)).toEqual(
          Option.some("header"),
        )

        const badPow = grindHeader(h3, false)
        expect(refusal(yield* submit([badPow]))).toEqual(["high-hash", 50])
        const badBits = grindHeader({ ...h3, bits: 0x203fffff })
        expect(refusal(yield* submit([badBits]))).toEqual(["bad-diffbits", 100])
        const tooOld = grindHeader({ ...h3, time: h1.time })
        expect(refusal(yield* submit([tooOld]))).toEqual(["time-too-old", 100])
        const tooNew = grindHeader({ ...h3, time: nowSeconds + 3 * 3600 })
        expect(refusal(yield* submit([tooNew]))).toEqual(["time-too-new", 0])
        for (const h of [badPow, badBits, tooOld, tooNew])
          expect(yield* chain.entry(headerHash(h))).toEqual(Option.none())
        expect((yield* chain.bestHeader).height).toBe(2)
        // a too-new header was not remembered: once the clock catches up it is accepted
        yield* TestClock.adjust("2 hours")
        expect((yield* chain.submitHeaders([tooNew])).added).toBe(1)
        expect(toHex((yield* chain.bestHeader).hash)).toBe(toHex(headerHash(tooNew)))
      }).pipe(Effect.provide(chainLayer(makeMemoryStore())))
    }),
  )

  it.scoped(
    "an invalid block takes its headers down: the best header falls back, resubmissions are refused",
    () =>
      Effect.gen(function* () {
        yield* setClock
        const small = new TestChain(regtest, backend, miner)
        small.mine(5)
        // block 6 claims height 7 in its coinbase (bad-cb-height), with three headers on top of it
        const bad = small.candidate([], { coinbase: small.coinbase(50n * 100_000_000n, 7) })
        const above = headersOn(bad.header, 3, 0)
        yield* Effect.gen(function* () {
          const chain = yield* Chain
          yield* submitAll(blocksOf(small, 1, 5))
          expect((yield* chain.submitHeaders([bad.header, ...above])).added).toBe(4)
          expect((yield* chain.bestHeader).height).toBe(9)
          expect(
            heightsOf(
              yield* chain.blocksToFetch(headerHash(above[2]!), { max: 9, window: 9, exclude: nothing }),
            ),
          ).toEqual([6, 7, 8, 9])
          const r = yield* Effect.either(chain.submitBlock(encodeBlock(bad)))
          expect(Either.isLeft(r) && r.left.reason).toBe("bad-cb-height")
          const best = yield* chain.bestHeader
          expect([toHex(best.hash), best.height]).toEqual([toHex(small.tip), 5])
          expect(Option.map(yield* chain.entry(headerHash(above[2]!)), (e) => e.status)).toEqual(
            Option.some("invalid"),
          )
          expect(
            yield* chain.blocksToFetch(headerHash(above[2]!), { max: 9, window: 9, exclude: nothing }),
          ).toEqual([])
          expect(refusal(yield* Effect.either(chain.submitHeaders([bad.header])))).toEqual([
            "duplicate-invalid",
            100,
          ])
          expect(refusal(yield* Effect.either(chain.submitHeaders([above[0]!])))).toEqual([
            "duplicate-invalid",
            100,
          ])
          const newChild = headersOn(bad.header, 1, 5)
          expect(refusal(yield* Effect.either(chain.submitHeaders(newChild)))).toEqual(["bad-prevblk", 100])
          expect((yield* chain.locator)[0]).toEqual(small.tip)
        }).pipe(Effect.provide(chainLayer(makeMemoryStore())))
      }),
  )

  it.scoped("headers of a heavier side branch: blocksToFetch starts at the fork, and its blocks reorg", () =>
    Effect.gen(function* () {
      yield* setClock
      yield* Effect.gen(function* () {
        const chain = yield* Chain
        yield* submitAll(blocksOf(main, 1, 100))
        expect((yield* chain.submitHeaders(headersOf(side, 96, 110))).added).toBe(15)
        expect(toHex((yield* chain.bestHeader).hash)).toBe(toHex(side.tip))
        // the locator follows the best header, not the active chain
        expect((yield* chain.locator)[0]).toEqual(side.tip)
        expect(toHex((yield* chain.tip).hash)).toBe(toHex(main.hashes[100]!))
        const all = yield* chain.blocksToFetch(side.tip, { max: 100, window: 1024, exclude: nothing })
        expect(heightsOf(all)).toEqual(range(96, 110))
        expect(hexes(all.map((b) => b.hash))).toEqual(hexes(side.hashes.slice(96, 111)))
        const windowed = yield* chain.blocksToFetch(side.tip, { max: 100, window: 3, exclude: nothing })
        expect(heightsOf(windowed)).toEqual(range(96, 103))
        // the active tip and a side header with less work than it offer nothing
        expect(
          yield* chain.blocksToFetch(main.hashes[100]!, { max: 100, window: 1024, exclude: nothing }),
        ).toEqual([])
        expect(
          yield* chain.blocksToFetch(side.hashes[99]!, { max: 100, window: 1024, exclude: nothing }),
        ).toEqual([])

        yield* submitAll(blocksOf(side, 96, 110))
        expect(toHex((yield* chain.tip).hash)).toBe(toHex(side.tip))
        expect(yield* chain.blocksToFetch(side.tip, { max: 100, window: 1024, exclude: nothing })).toEqual([])
      }).pipe(Effect.provide(chainLayer(makeMemoryStore())))
    }),
  )

  it.scoped("headersAfter answers getheaders from the active chain", () =>
    Effect.gen(function* () {
      yield* setClock
      const locatorOf = (headers: ReadonlyArray<BlockHeader>) =>
        Effect.gen(function* () {
          const chain = yield* Chain
          yield* chain.submitHeaders(headers)
          return yield* chain.locator
        }).pipe(Effect.provide(chainLayer(makeMemoryStore())))
      const shorter = yield* locatorOf(headersOf(main, 1, 100))
      const forked = yield* locatorOf([...headersOf(main, 1, 250), ...headersOf(fork250, 251, 260)])
      expect(forked[0]).toEqual(fork250.tip)
      yield* Effect.gen(function* () {
        const chain = yield* Chain
        yield* submitAll(blocksOf(main, 1, 300))
        const headersFrom = (locator: ReadonlyArray<BlockHash>, stop: BlockHash, max: number) =>
          chain.headersAfter(locator, stop, max).pipe(Effect.map(headerHexes))
        expect(yield* headersFrom(shorter, noStop, 2000)).toEqual(hexes(main.hashes.slice(101, 301)))
        // the forked locator's first hashes are off the active chain; its height-250 hash is on it
        expect(yield* headersFrom(forked, noStop, 2000)).toEqual(hexes(main.hashes.slice(251, 301)))
        expect(yield* headersFrom(shorter, main.hashes[120]!, 2000)).toEqual(
          hexes(main.hashes.slice(101, 121)),
        )
        expect(yield* headersFrom(shorter, noStop, 5)).toEqual(hexes(main.hashes.slice(101, 106)))
        // no known hash (or none at all): start after genesis
        expect(yield* headersFrom([fork250.tip], noStop, 3)).toEqual(hexes(main.hashes.slice(1, 4)))
        expect(yield* headersFrom([], noStop, 3)).toEqual(hexes(main.hashes.slice(1, 4)))
        expect(yield* headersFrom([main.hashes[300]!], noStop, 2000)).toEqual([])
      }).pipe(Effect.provide(chainLayer(makeMemoryStore())))
    }),
  )

  it.scoped(
    "the locator: best header first, eleven steps of one, then doubling, genesis last (as Core)",
    () =>
      Effect.gen(function* () {
        yield* setClock
        const locator = yield* Effect.gen(function* () {
          const chain = yield* Chain
          yield* chain.submitHeaders(mainHeaders)
          return yield* chain.locator
        }).pipe(Effect.provide(chainLayer(makeMemoryStore())))
        const heightOf = new Map(main.hashes.map((h, i) => [toHex(h), i]))
        expect(locator.length).toBeLessThanOrEqual(101)
        expect(locator.map((h) => heightOf.get(toHex(h)))).toEqual([
          ...range(1989, 2000).reverse(),
          1987,
          1983,
          1975,
          1959,
          1927,
          1863,
          1735,
          1479,
          967,
          0,
        ])
      }),
  )

  it.scoped("header-only entries survive a restart on the same store", () =>
    Effect.gen(function* () {
      yield* setClock
      const store = makeMemoryStore()
      const before = yield* Effect.gen(function* () {
        const chain = yield* Chain
        yield* chain.submitHeaders(mainHeaders)
        yield* submitAll(blocksOf(main, 1, 3))
        return yield* chain.locator
      }).pipe(Effect.provide(chainLayer(store)))
      yield* Effect.gen(function* () {
        const chain = yield* Chain
        const best = yield* chain.bestHeader
        expect([toHex(best.hash), best.height]).toEqual([toHex(main.tip), 2000])
        expect((yield* chain.tip).height).toBe(3)
        expect(yield* chain.locator).toEqual(before)
        expect(Option.map(yield* chain.entry(main.hashes[1500]!), (e) => e.status)).toEqual(
          Option.some("header"),
        )
        const next = yield* chain.blocksToFetch(main.tip, { max: 4, window: 1024, exclude: nothing })
        expect(heightsOf(next)).toEqual([4, 5, 6, 7])
        expect((yield* chain.submitHeaders(mainHeaders)).added).toBe(0)
        expect(yield* submitAll(blocksOf(main, 4, 5))).toEqual(["active", "active"])
      }).pipe(Effect.provide(chainLayer(store)))
    }),
  )

  it.scoped("syncStatus: initial block download until the tip is under 24 h old, then latched off", () =>
    Effect.gen(function* () {
      yield* setClock
      yield* Effect.gen(function* () {
        const chain = yield* Chain
        expect(yield* chain.syncStatus).toEqual({
          headers: 0,
          initialBlockDownload: true,
          verificationProgress: 1,
          warnings: "",
        })
        yield* chain.submitHeaders(mainHeaders)
        expect(yield* chain.syncStatus).toEqual({
          headers: 2000,
          initialBlockDownload: true,
          verificationProgress: 0,
          warnings: "",
        })
        // block 600 is 24 h 20 min older than the clock: still downloading
        yield* submitAll(blocksOf(main, 1, 600))
        expect(yield* chain.syncStatus).toEqual({
          headers: 2000,
          initialBlockDownload: true,
          verificationProgress: 0.3,
          warnings: "",
        })
        // block 700 is 22 h 40 min old: out of initial block download
        yield* submitAll(blocksOf(main, 601, 700))
        expect(yield* chain.syncStatus).toEqual({
          headers: 2000,
          initialBlockDownload: false,
          verificationProgress: 0.35,
          warnings: "",
        })
        // the tip grows old again, but the node never goes back into initial block download
        yield* TestClock.adjust("30 days")
        expect((yield* chain.syncStatus).initialBlockDownload).toBe(false)
      }).pipe(Effect.provide(chainLayer(makeMemoryStore())))
    }),
  )
})
