import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Either, Layer, Option, PubSub, Queue, TestClock } from "effect"
import * as ChainActor from "../../src/actors/Chain.js"
import { Chain, type ChainEvent } from "../../src/actors/Chain.js"
import { regtest } from "../../src/consensus/params.js"
import { ChainStore, type ChainStoreService, makeMemoryStore } from "../../src/layers/ChainStore.js"
import { layerDefault, loadDefaultBackend } from "../../src/layers/Signatures.js"
import * as SigVerifier from "../../src/layers/SigVerifier.js"
import { type Block, encodeBlock } from "../../src/schema/block.js"
import { encodeCoin } from "../../src/schema/coin.js"
import { toHex } from "../../src/schema/hex.js"
import { pay, TestChain, type TestKey, testKey } from "../support/chain.js"

const backend = loadDefaultBackend().backend
const COIN = 100_000_000n
const miner = testKey(backend, 1)
const bob: TestKey = testKey(backend, 2)

/** A shared prefix of 110 blocks, so coinbases 1..10 are mature and branches can spend them. */
const prefix = new TestChain(regtest, backend, miner)
prefix.registerKey(bob)
prefix.mine(110)

/** branch grows `n` blocks on a copy of `from`; each block spends one mature coin to bob when `withTxs`. */
const branch = (from: TestChain, n: number, tag: number, withTxs = true): TestChain => {
  const b = from.clone()
  for (let i = 0; i < n; i++) {
    const spendable = withTxs ? b.matureCoins().filter((s) => s.coin.coinbase) : []
    const txs = spendable.length > 0 ? [b.spend([spendable[0]!], [pay(bob, 49n * COIN - BigInt(tag))])] : []
    b.connect(b.candidate(txs, { time: b.times[b.times.length - 1]! + 60 + tag }))
  }
  return b
}

/** The blocks a fixture has beyond `base`'s tip. */
const beyond = (c: TestChain, base: TestChain): ReadonlyArray<Block> => c.blocks.slice(base.blocks.length)

const storeLayer = (store: ChainStoreService) => Layer.succeed(ChainStore, store)
const verifierLayer = SigVerifier.layerInline().pipe(Layer.provide(layerDefault))
const chainLayer = (store: ChainStoreService, config = ChainActor.defaultChainConfig(regtest)) =>
  ChainActor.layer(config).pipe(Layer.provide(Layer.merge(storeLayer(store), verifierLayer)))

/** The node's clock: a day after the fixture's blocks, so none is "too new". */
const setClock = TestClock.setTime((prefix.times[0]! + 86_400 * 2) * 1000)

const submitAll = (blocks: ReadonlyArray<Block>) =>
  Effect.gen(function* () {
    const chain = yield* Chain
    const results: Array<string> = []
    for (const b of blocks) results.push(yield* chain.submitBlock(encodeBlock(b)))
    return results
  })

/** coinSet lists a store's UTXO set as sorted `key=coin` strings: an independent check of the commitment. */
const coinSet = (store: ChainStoreService) =>
  Effect.gen(function* () {
    const rows: Array<string> = []
    yield* store.forEachCoin((key, coin) => rows.push(`${key}=${toHex(encodeCoin(coin))}`))
    return rows.sort()
  })

/** replay feeds `blocks` to a fresh node and returns its commitment and coin set. */
const replay = (blocks: ReadonlyArray<Block>) =>
  Effect.gen(function* () {
    const store = makeMemoryStore()
    return yield* Effect.gen(function* () {
      yield* submitAll(blocks)
      const chain = yield* Chain
      const c = yield* chain.utxoCommitment
      return { tip: toHex(c.hash), commitment: toHex(c.commitment), coins: yield* coinSet(store) }
    }).pipe(Effect.provide(chainLayer(store)))
  })

/** state is the node's tip, commitment and coin set, comparable with a replay. */
const state = (store: ChainStoreService) =>
  Effect.gen(function* () {
    const chain = yield* Chain
    const c = yield* chain.utxoCommitment
    return { tip: toHex(c.hash), commitment: toHex(c.commitment), coins: yield* coinSet(store) }
  })

const prefixBlocks = prefix.blocks.slice(1)

describe("Chain actor: most-work chain, reorgs, invalid branches", () => {
  it.scoped("a fresh node starts at genesis with an empty UTXO set", () =>
    Effect.gen(function* () {
      const store = makeMemoryStore()
      const tip = yield* Effect.gen(function* () {
        return yield* (yield* Chain).tip
      }).pipe(Effect.provide(chainLayer(store)))
      expect(tip.height).toBe(0)
      expect(toHex(tip.hash)).toBe(toHex(regtest.genesisHash))
      expect(yield* coinSet(store)).toEqual([])
    }),
  )

  it.scoped("a longer-work fork wins; the UTXO set equals a fresh replay of the winning chain", () =>
    Effect.gen(function* () {
      yield* setClock
      const a = branch(prefix, 3, 1)
      const b = branch(prefix, 5, 2)
      const store = makeMemoryStore()
      const got = yield* Effect.gen(function* () {
        const chain = yield* Chain
        const sub = yield* PubSub.subscribe(chain.events)
        expect(yield* submitAll([...prefixBlocks, ...beyond(a, prefix)])).toEqual(Array(113).fill("active"))
        yield* Queue.takeAll(sub)
        const results = yield* submitAll(beyond(b, prefix))
        expect(results).toEqual(["side", "side", "side", "active", "active"])
        const events = Chunk.toReadonlyArray(yield* Queue.takeAll(sub)) as ReadonlyArray<ChainEvent>
        const disconnected = events.filter((e) => e._tag === "BlockDisconnected")
        expect(disconnected.map((e) => e.height)).toEqual([113, 112, 111])
        // the disconnected blocks carry their transactions, for the mempool to take back
        expect(disconnected.every((e) => e._tag === "BlockDisconnected" && e.block.txs.length === 2)).toBe(
          true,
        )
        expect((yield* chain.tip).height).toBe(115)
        return yield* state(store)
      }).pipe(Effect.provide(chainLayer(store)))
      expect(got).toEqual(yield* replay([...prefixBlocks, ...beyond(b, prefix)]))
      expect(got.tip).toBe(toHex(b.tip))
    }),
  )

  it.scoped("a reorg across 120 blocks lands on the heavier chain with the replayed UTXO set", () =>
    Effect.gen(function* () {
      yield* setClock
      const a = branch(prefix, 5, 1)
      const b = branch(prefix, 120, 2)
      const store = makeMemoryStore()
      const got = yield* Effect.gen(function* () {
        yield* submitAll([...prefixBlocks, ...beyond(a, prefix), ...beyond(b, prefix)])
        expect((yield* (yield* Chain).tip).height).toBe(230)
        return yield* state(store)
      }).pipe(Effect.provide(chainLayer(store)))
      expect(got).toEqual(yield* replay([...prefixBlocks, ...beyond(b, prefix)]))
    }),
  )

  it.scoped("equal work keeps the first-seen tip; one more block on the other branch switches", () =>
    Effect.gen(function* () {
      yield* setClock
      const a = branch(prefix, 3, 1)
      const b = branch(prefix, 4, 2)
      const store = makeMemoryStore()
      yield* Effect.gen(function* () {
        const chain = yield* Chain
        yield* submitAll([...prefixBlocks, ...beyond(a, prefix)])
        expect(yield* submitAll(beyond(b, prefix).slice(0, 3))).toEqual(["side", "side", "side"])
        expect(toHex((yield* chain.tip).hash)).toBe(toHex(a.tip))
        expect(yield* submitAll(beyond(b, prefix).slice(3))).toEqual(["active"])
        expect(toHex((yield* chain.tip).hash)).toBe(toHex(b.tip))
      }).pipe(Effect.provide(chainLayer(store)))
    }),
  )

  it.scoped("an invalid block deep in a heavier fork leaves the node on the best valid chain, for good", () =>
    Effect.gen(function* () {
      yield* setClock
      const a = branch(prefix, 3, 1)
      // b: two good blocks, then one whose spend carries a broken signature, then 7 more on top of it
      const b = branch(prefix, 2, 2)
      const victim = b.matureCoins().find((s) => s.coin.coinbase)!
      const good = b.spend([victim], [pay(bob, 48n * COIN)])
      const sig = new Uint8Array(good.inputs[0]!.witness)
      sig[5]! ^= 0x40
      const bad = b.candidate([{ ...good, inputs: [{ prevout: good.inputs[0]!.prevout, witness: sig }] }])
      b.append(bad)
      for (let i = 0; i < 7; i++) b.append(b.candidate([], { time: b.times[b.times.length - 1]! + 61 }))
      const store = makeMemoryStore()
      const got = yield* Effect.gen(function* () {
        const chain = yield* Chain
        yield* submitAll([...prefixBlocks, ...beyond(a, prefix)])
        const results: Array<string> = []
        for (const block of beyond(b, prefix)) {
          results.push(
            Either.match(yield* Effect.either(chain.submitBlock(encodeBlock(block))), {
              onLeft: (e) => e.reason,
              onRight: (r) => r,
            }),
          )
        }
        // b1..b3 are stored as side blocks (b3's signature is only checked when b3 connects). b4 makes b
        // heavier than a: the node connects b1, b2, fails at b3, marks b3 and b4 invalid and goes back
        // to a. b5..b10 then have an invalid parent: refused at once, never validated, not remembered.
        expect(results).toEqual([
          "side",
          "side",
          "side",
          "mandatory-script-verify-flag-failed",
          ...Array(6).fill("bad-prevblk"),
        ])
        expect(toHex((yield* chain.tip).hash)).toBe(toHex(a.tip))
        const statusAt = (i: number) =>
          chain.entry(b.hashes[prefix.blocks.length + i]!).pipe(Effect.map(Option.map((e) => e.status)))
        expect(yield* statusAt(2)).toEqual(Option.some("invalid"))
        expect(yield* statusAt(3)).toEqual(Option.some("invalid"))
        expect(yield* statusAt(9)).toEqual(Option.none())
        // resubmitting b4 is answered from the index, without validating it again
        const again = yield* Effect.either(
          chain.submitBlock(encodeBlock(b.blocks[prefix.blocks.length + 3]!)),
        )
        expect(Either.isLeft(again) && again.left.reason).toBe("duplicate-invalid")
        return yield* state(store)
      }).pipe(Effect.provide(chainLayer(store)))
      expect(got).toEqual(yield* replay([...prefixBlocks, ...beyond(a, prefix)]))
    }),
  )

  it.scoped("blocks that arrive before their parents wait as orphans and connect when the parents come", () =>
    Effect.gen(function* () {
      yield* setClock
      const a = branch(prefix, 6, 1)
      const blocks = [...prefixBlocks, ...beyond(a, prefix)]
      const store = makeMemoryStore()
      yield* Effect.gen(function* () {
        const chain = yield* Chain
        yield* submitAll(blocks.slice(0, -6))
        const late = blocks.slice(-6)
        expect(yield* submitAll([...late.slice(1)].reverse())).toEqual(Array(5).fill("orphan"))
        expect(yield* chain.orphanCount).toBe(5)
        expect(yield* submitAll([late[0]!])).toEqual(["active"])
        expect(yield* chain.orphanCount).toBe(0)
        expect(toHex((yield* chain.tip).hash)).toBe(toHex(a.tip))
      }).pipe(Effect.provide(chainLayer(store)))
    }),
  )

  it.scoped("a block it already has is recognised by its header hash before any decoding", () =>
    Effect.gen(function* () {
      yield* setClock
      yield* Effect.gen(function* () {
        const chain = yield* Chain
        yield* submitAll(prefixBlocks)
        const last = encodeBlock(prefixBlocks[prefixBlocks.length - 1]!)
        // the same header with bytes that would not decode (trailing junk): not even decoded
        const padded = Uint8Array.from([...last, 0xde, 0xad])
        expect(yield* chain.submitBlock(padded)).toBe("duplicate")
        // an unknown header with the same junk is decoded, and refused
        const fresh = encodeBlock(branch(prefix, 1, 7).blocks.at(-1)!)
        const refused = yield* Effect.either(chain.submitBlock(Uint8Array.from([...fresh, 0xde, 0xad])))
        expect(Either.isLeft(refused) && refused.left._tag).toBe("DecodeError")
      }).pipe(Effect.provide(chainLayer(makeMemoryStore())))
    }),
  )

  it.scoped("the orphan pool is bounded: beyond its cap the oldest orphans are dropped", () =>
    Effect.gen(function* () {
      yield* setClock
      const a = branch(prefix, 8, 1, false)
      const store = makeMemoryStore()
      const layer = chainLayer(store, { ...ChainActor.defaultChainConfig(regtest), maxOrphanBlocks: 3 })
      yield* Effect.gen(function* () {
        const chain = yield* Chain
        yield* submitAll(prefixBlocks)
        yield* submitAll(beyond(a, prefix).slice(1))
        expect(yield* chain.orphanCount).toBe(3)
      }).pipe(Effect.provide(layer))
    }),
  )

  it.scoped(
    "the orphan pool is bounded by bytes too: beyond maxOrphanBytes the oldest go, a block larger than it is not kept",
    () =>
      Effect.gen(function* () {
        yield* setClock
        const a = branch(prefix, 8, 1, false)
        const orphans = beyond(a, prefix).slice(1)
        const sizes = orphans.map((b) => encodeBlock(b).length)
        // room for exactly the last two orphans' bytes (and fewer than their count cap)
        const maxOrphanBytes = sizes[sizes.length - 1]! + sizes[sizes.length - 2]!
        const store = makeMemoryStore()
        const layer = chainLayer(store, {
          ...ChainActor.defaultChainConfig(regtest),
          maxOrphanBlocks: 100,
          maxOrphanBytes,
        })
        yield* Effect.gen(function* () {
          const chain = yield* Chain
          yield* submitAll(prefixBlocks)
          yield* submitAll(orphans)
          expect(yield* chain.orphanCount).toBe(2)
        }).pipe(Effect.provide(layer))
        const tiny = chainLayer(makeMemoryStore(), {
          ...ChainActor.defaultChainConfig(regtest),
          maxOrphanBytes: Math.min(...sizes) - 1,
        })
        yield* Effect.gen(function* () {
          const chain = yield* Chain
          yield* submitAll(prefixBlocks)
          expect(yield* submitAll(orphans.slice(0, 1))).toEqual(["orphan"])
          expect(yield* chain.orphanCount).toBe(0)
        }).pipe(Effect.provide(tiny))
      }),
  )

  it.scoped("a restart on the same store resumes at the same tip with the same UTXO commitment", () =>
    Effect.gen(function* () {
      yield* setClock
      const a = branch(prefix, 3, 1)
      const store = makeMemoryStore()
      const before = yield* Effect.gen(function* () {
        yield* submitAll([...prefixBlocks, ...beyond(a, prefix)])
        return yield* state(store)
      }).pipe(Effect.provide(chainLayer(store)))
      const after = yield* state(store).pipe(Effect.provide(chainLayer(store)))
      expect(after).toEqual(before)
    }),
  )

  it.scoped("reindex rebuilds the UTXO set and tip from the stored blocks", () =>
    Effect.gen(function* () {
      yield* setClock
      const a = branch(prefix, 3, 1)
      const b = branch(prefix, 4, 2)
      const store = makeMemoryStore()
      yield* Effect.gen(function* () {
        const chain = yield* Chain
        yield* submitAll([...prefixBlocks, ...beyond(a, prefix), ...beyond(b, prefix)])
        const before = yield* state(store)
        expect((yield* chain.reindex).height).toBe(114)
        expect(yield* state(store)).toEqual(before)
        expect((yield* chain.tip).height).toBe(114)
      }).pipe(Effect.provide(chainLayer(store)))
    }),
  )

  it.scoped("a block breaking a rule is refused with its reason and changes nothing", () =>
    Effect.gen(function* () {
      yield* setClock
      const store = makeMemoryStore()
      yield* Effect.gen(function* () {
        const chain = yield* Chain
        yield* submitAll(prefixBlocks.slice(0, 5))
        const before = yield* state(store)
        const cheat = prefix.clone()
        cheat.blocks.length = 6
        cheat.hashes.length = 6
        cheat.times.length = 6
        const tooRich = cheat.candidate([], { coinbase: cheat.coinbase(51n * COIN) })
        const r = yield* Effect.either(chain.submitBlock(encodeBlock(tooRich)))
        expect(Either.isLeft(r) && r.left.reason).toBe("bad-cb-amount")
        const junk = yield* Effect.either(chain.submitBlock(Uint8Array.of(1, 2, 3)))
        expect(Either.isLeft(junk) && junk.left._tag).toBe("DecodeError")
        expect(yield* state(store)).toEqual(before)
      }).pipe(Effect.provide(chainLayer(store)))
    }),
  )
})
