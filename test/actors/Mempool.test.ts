import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Either, Layer, Option, PubSub, Queue, type Scope, TestClock } from "effect"
import * as ChainActor from "../../src/actors/Chain.js"
import { Chain, type ChainServiceApi } from "../../src/actors/Chain.js"
import * as MempoolActor from "../../src/actors/Mempool.js"
import {
  defaultMempoolPolicy,
  Mempool,
  type MempoolEvent,
  type MempoolPolicy,
} from "../../src/actors/Mempool.js"
import { txidOf } from "../../src/consensus/hash.js"
import { regtest } from "../../src/consensus/params.js"
import { ChainStore, type ChainStoreService, makeMemoryStore } from "../../src/layers/ChainStore.js"
import { layerDefault, loadDefaultBackend } from "../../src/layers/Signatures.js"
import * as SigVerifier from "../../src/layers/SigVerifier.js"
import { type Block, encodeBlock } from "../../src/schema/block.js"
import { toHex } from "../../src/schema/hex.js"
import type { Height } from "../../src/schema/primitives.js"
import { encodeTx, type Tx, txSize } from "../../src/schema/tx.js"
import { fakeTxid, pay, type Spendable, TestChain, type TestKey, testKey } from "../support/chain.js"

const backend = loadDefaultBackend().backend
const COIN = 100_000_000n
const miner = testKey(backend, 1)
const bob: TestKey = testKey(backend, 2)
const carol: TestKey = testKey(backend, 3)

/** The node's history: 110 blocks, so the coinbases of blocks 1..11 are spendable at height 111. */
const prefix = new TestChain(regtest, backend, miner)
prefix.mine(110)
const prefixBlocks = prefix.blocks.slice(1)
const mature = prefix.matureCoins().filter((s) => s.coin.coinbase)
const coin = (i: number): Spendable => mature[i]!

const idOf = (tx: Tx): string => toHex(txidOf(encodeTx(tx)))
const hexOf = (tx: Tx): Uint8Array => encodeTx(tx)

/** outputOf is output `index` of an unconfirmed `tx`, owned by `key`, as a Spendable for `spend`. */
const outputOf = (tx: Tx, key: TestKey, index = 0): Spendable => ({
  outpoint: { txid: txidOf(encodeTx(tx)), index },
  coin: { value: tx.outputs[index]!.value, pubkey: key.pubkey, height: 0 as Height, coinbase: false },
  key,
})

/** send spends `from` whole to `to`, leaving `fee`. */
const send = (from: Spendable, fee: bigint, to: TestKey = bob, lockTime = 0): Tx =>
  prefix.spend([from], [pay(to, from.coin.value - fee)], lockTime)

/** A one-input, one-output transaction's size: every fixture below has this shape unless stated. */
const SIZE = txSize(send(coin(0), 1000n))

const verifierLayer = SigVerifier.layerInline().pipe(Layer.provide(layerDefault))
/** nodeLayer: Chain and Mempool over `store`; `wrapChain` lets a test watch the Mempool's calls into the Chain. */
const nodeLayer = (
  store: ChainStoreService,
  policy: MempoolPolicy,
  wrapChain: (chain: ChainServiceApi) => ChainServiceApi = (chain) => chain,
) => {
  const base = Layer.merge(Layer.succeed(ChainStore, store), verifierLayer)
  const actor = ChainActor.layer(ChainActor.defaultChainConfig(regtest)).pipe(Layer.provide(base))
  const chain = Layer.effect(Chain, Effect.map(Chain, wrapChain)).pipe(Layer.provide(actor))
  return MempoolActor.layer(policy).pipe(Layer.provideMerge(chain), Layer.provide(base))
}

/** The node's clock: a day after the fixture's blocks, so none is "too new". */
const setClock = TestClock.setTime((prefix.times[0]! + 86_400 * 2) * 1000)

/** withNode runs `body` on a node (Chain + Mempool on a memory store) that has connected the prefix. */
const withNode = <A, E>(
  body: Effect.Effect<A, E, Mempool | Chain | Scope.Scope>,
  policy: MempoolPolicy = defaultMempoolPolicy,
  wrapChain?: (chain: ChainServiceApi) => ChainServiceApi,
) =>
  Effect.gen(function* () {
    yield* setClock
    const store = makeMemoryStore()
    return yield* Effect.gen(function* () {
      const chain = yield* Chain
      for (const b of prefixBlocks) yield* chain.submitBlock(encodeBlock(b))
      return yield* body
    }).pipe(Effect.provide(nodeLayer(store, policy, wrapChain)))
  })

const submit = (block: Block) => Effect.flatMap(Chain, (chain) => chain.submitBlock(encodeBlock(block)))

const accept = (tx: Tx, allowOrphan = false) =>
  Effect.flatMap(Mempool, (m) => m.accept(hexOf(tx), { allowOrphan }))

/** reasonOf runs an accept that must fail and answers its reason (or tag, for a DecodeError). */
const reasonOf = (bytes: Uint8Array, allowOrphan = false) =>
  Effect.gen(function* () {
    const r = yield* Effect.either(Effect.flatMap(Mempool, (m) => m.accept(bytes, { allowOrphan })))
    if (Either.isRight(r)) return `accepted (${r.right._tag})`
    return r.left._tag === "DecodeError" ? "DecodeError" : r.left.reason
  })

/** pool is everything a caller can observe of the pool, for before/after comparisons. */
const pool = Effect.gen(function* () {
  const m = yield* Mempool
  return {
    txids: (yield* m.txids).map(toHex),
    info: yield* m.info,
    outputs: (yield* m.outputs).map(([key]) => key),
  }
})

const txids = Effect.flatMap(Mempool, (m) => m.txids).pipe(Effect.map((ids) => ids.map(toHex)))

/** watch subscribes to the pool's events; `drain` lists what was published since, as short strings. */
const watch = Effect.gen(function* () {
  const sub = yield* PubSub.subscribe((yield* Mempool).events)
  return Queue.takeAll(sub).pipe(
    Effect.map((events) =>
      Chunk.toReadonlyArray(events).map((e: MempoolEvent) =>
        e._tag === "TxAccepted" ? `accepted ${toHex(e.entry.txid)}` : `removed ${toHex(e.txid)} ${e.why}`,
      ),
    ),
  )
})

describe("Mempool actor: acceptance", () => {
  it.scoped("a double spend of a pool transaction's input is refused with txn-mempool-conflict", () =>
    withNode(
      Effect.gen(function* () {
        const a = send(coin(0), 1000n)
        const rival = send(coin(0), 5000n, carol)
        expect((yield* accept(a))._tag).toBe("Accepted")
        const before = yield* pool
        expect(yield* reasonOf(hexOf(rival))).toBe("txn-mempool-conflict")
        expect(yield* pool).toEqual(before)
        expect(before.txids).toEqual([idOf(a)])
        const spender = yield* (yield* Mempool).spentBy(`${toHex(coin(0).outpoint.txid)}:0`)
        expect(Option.map(spender, toHex)).toEqual(Option.some(idOf(a)))
      }),
    ),
  )

  it.scoped("a chain of unconfirmed spends A → B → C is accepted; the template puts parents first", () =>
    withNode(
      Effect.gen(function* () {
        const m = yield* Mempool
        const a = send(coin(0), 200n)
        const b = send(outputOf(a, bob), 200n)
        const c = send(outputOf(b, bob), 100_000n)
        const d = send(coin(1), 10_000n)
        for (const tx of [a, b, c, d]) expect((yield* accept(tx))._tag).toBe("Accepted")
        const entryOfC = Option.getOrThrow(yield* m.get(txidOf(hexOf(c))))
        expect(entryOfC.parents.map(toHex)).toEqual([idOf(b)])
        expect(entryOfC.fee).toBe(100_000n)
        // C pays for its parents: their package (about 221 units/byte) outbids D (about 66 units/byte)
        expect((yield* m.template(1_000_000)).map((e) => toHex(e.txid))).toEqual([a, b, c, d].map(idOf))
        // A package that does not fit is passed over for the next best that does
        expect((yield* m.template(2 * SIZE)).map((e) => toHex(e.txid))).toEqual([d, a].map(idOf))
        const info = yield* m.info
        expect(info).toMatchObject({ size: 4, bytes: 4 * SIZE, maxmempool: defaultMempoolPolicy.maxBytes })
        expect(info.usage).toBeGreaterThan(info.bytes)
        // the wallet's view: unconfirmed outputs and who spends them
        expect((yield* m.outputs).map(([key]) => key)).toEqual([a, b, c, d].map((tx) => `${idOf(tx)}:0`))
        expect(Option.map(yield* m.spentBy(`${idOf(a)}:0`), toHex)).toEqual(Option.some(idOf(b)))
      }),
    ),
  )

  it.scoped("an unconfirmed chain longer than 25 is refused with too-long-mempool-chain", () =>
    withNode(
      Effect.gen(function* () {
        let from = coin(0)
        for (let i = 0; i < 25; i++) {
          const tx = send(from, 200n)
          expect((yield* accept(tx))._tag).toBe("Accepted")
          from = outputOf(tx, bob)
        }
        const before = yield* pool
        expect(yield* reasonOf(hexOf(send(from, 200n)))).toBe("too-long-mempool-chain")
        expect(yield* pool).toEqual(before)
      }),
    ),
  )

  it.scoped("a child sent before its parent waits as an orphan and enters when the parent arrives", () =>
    withNode(
      Effect.gen(function* () {
        const events = yield* watch
        const parent = send(coin(0), 1000n)
        const child = send(outputOf(parent, bob), 1000n)
        const grandchild = send(outputOf(child, bob), 1000n)
        expect(yield* accept(grandchild, true)).toEqual({ _tag: "Orphan", txid: txidOf(hexOf(grandchild)) })
        expect(yield* accept(child, true)).toEqual({ _tag: "Orphan", txid: txidOf(hexOf(child)) })
        expect(yield* txids).toEqual([])
        expect((yield* accept(parent))._tag).toBe("Accepted")
        expect(yield* txids).toEqual([parent, child, grandchild].map(idOf))
        expect(yield* events).toEqual([parent, child, grandchild].map((tx) => `accepted ${idOf(tx)}`))
      }),
    ),
  )

  it.scoped("the orphan pool is bounded: beyond maxOrphans the oldest orphan is dropped", () =>
    withNode(
      Effect.gen(function* () {
        const parents = [0, 1, 2].map((i) => send(coin(i), 1000n))
        const children = parents.map((p) => send(outputOf(p, bob), 1000n))
        for (const c of children) expect((yield* accept(c, true))._tag).toBe("Orphan")
        for (const p of parents) expect((yield* accept(p))._tag).toBe("Accepted")
        // the first child was evicted from the orphan pool by the third
        expect(yield* txids).toEqual(
          [parents[0]!, parents[1]!, children[1]!, parents[2]!, children[2]!].map(idOf),
        )
      }),
      { ...defaultMempoolPolicy, maxOrphans: 2 },
    ),
  )
})

describe("Mempool actor: duplicates", () => {
  it.scoped(
    "a transaction it holds, in the pool or as an orphan, is answered by its txid before any rule runs",
    () => {
      /** reads of the chain's tip: every acceptance takes it for its contextual checks */
      let tipReads = 0
      return withNode(
        Effect.gen(function* () {
          const parent = send(coin(0), 1000n)
          const orphan = send(outputOf(parent, bob), 1000n)
          const pooled = send(coin(1), 1000n)
          expect((yield* accept(orphan, true))._tag).toBe("Orphan")
          expect((yield* accept(pooled))._tag).toBe("Accepted")
          const before = tipReads
          expect(before).toBe(2)
          expect(yield* accept(orphan, true)).toEqual({ _tag: "Orphan", txid: txidOf(hexOf(orphan)) })
          expect(yield* reasonOf(hexOf(pooled))).toBe("txn-already-in-mempool")
          expect(tipReads).toBe(before)
          // without allowOrphan (RPC) a held orphan is checked in full, and misses its inputs
          expect(yield* reasonOf(hexOf(orphan))).toBe("missing-inputs")
          expect(tipReads).toBe(before + 1)
        }),
        defaultMempoolPolicy,
        (chain) => ({
          ...chain,
          tip: Effect.suspend(() => {
            tipReads++
            return chain.tip
          }),
        }),
      )
    },
  )
})

describe("Mempool actor: size limit", () => {
  it.scoped(
    "beyond maxBytes the lowest fee-rate package goes; a newcomer that is the lowest is refused",
    () =>
      withNode(
        Effect.gen(function* () {
          const events = yield* watch
          const high = send(coin(0), 10_000n)
          const low = send(coin(1), 500n)
          const mid = send(coin(2), 2_000n)
          const lowest = send(coin(3), 300n)
          expect((yield* accept(high))._tag).toBe("Accepted")
          expect((yield* accept(low))._tag).toBe("Accepted")
          expect((yield* accept(mid))._tag).toBe("Accepted")
          expect(yield* txids).toEqual([high, mid].map(idOf))
          const before = yield* pool
          yield* events
          expect(yield* reasonOf(hexOf(lowest))).toBe("mempool-full")
          expect(yield* pool).toEqual(before)
          expect(yield* events).toEqual([])
        }),
        { ...defaultMempoolPolicy, maxBytes: 2 * SIZE },
      ),
  )

  it.scoped("eviction compares packages: a cheap parent with a generous child outlives a mid-fee tx", () =>
    withNode(
      Effect.gen(function* () {
        const events = yield* watch
        const parent = send(coin(0), 200n)
        const child = send(outputOf(parent, bob), 20_000n)
        const mid = send(coin(1), 2_000n)
        const better = send(coin(2), 5_000n)
        for (const tx of [parent, child, mid]) expect((yield* accept(tx))._tag).toBe("Accepted")
        yield* events
        expect((yield* accept(better))._tag).toBe("Accepted")
        expect(yield* txids).toEqual([parent, child, better].map(idOf))
        expect(yield* events).toEqual([`accepted ${idOf(better)}`, `removed ${idOf(mid)} evicted`])
      }),
      { ...defaultMempoolPolicy, maxBytes: 3 * SIZE },
    ),
  )
})

describe("Mempool actor: following the chain", () => {
  it.scoped("a transaction confirmed in a block leaves the pool; its pool child stays, parentless", () =>
    withNode(
      Effect.gen(function* () {
        const m = yield* Mempool
        const events = yield* watch
        const a = send(coin(0), 1000n)
        const b = send(outputOf(a, bob), 1000n)
        yield* accept(a)
        yield* accept(b)
        yield* events
        const fork = prefix.clone()
        const block = fork.candidate([a])
        fork.connect(block)
        expect(yield* submit(block)).toBe("active")
        expect(yield* txids).toEqual([idOf(b)])
        expect(Option.getOrThrow(yield* m.get(txidOf(hexOf(b)))).parents).toEqual([])
        expect(yield* events).toEqual([`removed ${idOf(a)} block`])
        expect(yield* reasonOf(hexOf(a))).toBe("txn-already-known")
        // the template never offers a confirmed transaction again
        expect((yield* m.template(1_000_000)).map((e) => toHex(e.txid))).toEqual([idOf(b)])
      }),
    ),
  )

  it.scoped("an idle pool follows the chain on its own: the removal is announced without any request", () =>
    withNode(
      Effect.gen(function* () {
        const a = send(coin(0), 1000n)
        yield* accept(a)
        const sub = yield* PubSub.subscribe((yield* Mempool).events)
        const fork = prefix.clone()
        const block = fork.candidate([a])
        fork.connect(block)
        yield* submit(block)
        const event = yield* Queue.take(sub)
        expect(event._tag === "TxRemoved" && [toHex(event.txid), event.why]).toEqual([idOf(a), "block"])
      }),
    ),
  )

  it.scoped("a block spending a pool transaction's input evicts it and its descendants as conflicts", () =>
    withNode(
      Effect.gen(function* () {
        const events = yield* watch
        const a = send(coin(0), 1000n)
        const b = send(outputOf(a, bob), 1000n)
        const unrelated = send(coin(1), 1000n)
        for (const tx of [a, b, unrelated]) yield* accept(tx)
        yield* events
        const fork = prefix.clone()
        const block = fork.candidate([send(coin(0), 5000n, carol)])
        fork.connect(block)
        yield* submit(block)
        expect(yield* txids).toEqual([idOf(unrelated)])
        expect(yield* events).toEqual([`removed ${idOf(a)} conflict`, `removed ${idOf(b)} conflict`])
      }),
    ),
  )

  it.scoped("after a reorg the transactions of the abandoned branch are back in the pool", () =>
    withNode(
      Effect.gen(function* () {
        const m = yield* Mempool
        const events = yield* watch
        const t = send(coin(0), 1000n)
        yield* accept(t)
        const branchA = prefix.clone()
        const blockA = branchA.candidate([t])
        branchA.connect(blockA)
        expect(yield* submit(blockA)).toBe("active")
        expect(yield* txids).toEqual([])
        // a spend of T's confirmed output enters with no pool parent
        const child = send(outputOf(t, bob), 1000n)
        expect((yield* accept(child))._tag).toBe("Accepted")
        const branchB = prefix.clone()
        branchB.mine(2)
        expect(yield* submit(branchB.blocks[111]!)).toBe("side")
        expect(yield* submit(branchB.blocks[112]!)).toBe("active")
        expect(yield* txids).toEqual([t, child].map(idOf))
        expect(Option.getOrThrow(yield* m.get(txidOf(hexOf(child)))).parents.map(toHex)).toEqual([idOf(t)])
        expect(yield* events).toEqual([
          `accepted ${idOf(t)}`,
          `removed ${idOf(t)} block`,
          `accepted ${idOf(child)}`,
          `accepted ${idOf(t)}`,
        ])
      }),
    ),
  )

  it.scoped("after a reorg a pool transaction whose input vanished is removed with why reorg", () =>
    withNode(
      Effect.gen(function* () {
        const events = yield* watch
        // branch A confirms T, and the pool holds a spend of T's output; branch B confirms a rival of T
        const t = send(coin(0), 1000n)
        const branchA = prefix.clone()
        const blockA = branchA.candidate([t])
        branchA.connect(blockA)
        yield* submit(blockA)
        const child = send(outputOf(t, bob), 1000n)
        yield* accept(child)
        const branchB = prefix.clone()
        branchB.connect(branchB.candidate([send(coin(0), 7000n, carol)]))
        branchB.mine(1)
        yield* submit(branchB.blocks[111]!)
        yield* submit(branchB.blocks[112]!)
        expect(yield* txids).toEqual([])
        expect(yield* events).toEqual([`accepted ${idOf(child)}`, `removed ${idOf(child)} reorg`])
      }),
    ),
  )
})

describe("Mempool actor: every refusal names its reason and leaves the pool as it was", () => {
  const seed = send(coin(0), 1000n)
  const badSig = (() => {
    const good = send(coin(1), 1000n)
    const sig = new Uint8Array(good.inputs[0]!.witness)
    sig[7]! ^= 0x01
    return { ...good, inputs: [{ prevout: good.inputs[0]!.prevout, witness: sig }] }
  })()
  const immature = [...prefix.wallet.values()].find((s) => s.coin.height === 50)!
  const cases: ReadonlyArray<readonly [name: string, bytes: Uint8Array, reason: string]> = [
    ["bytes that are not a transaction", Uint8Array.of(1, 2, 3), "DecodeError"],
    ["a coinbase", hexOf(prefix.coinbase(50n * COIN)), "coinbase"],
    ["a transaction already in the pool", hexOf(seed), "txn-already-in-mempool"],
    [
      "a double spend of a pool transaction's input",
      hexOf(send(coin(0), 3000n, carol)),
      "txn-mempool-conflict",
    ],
    [
      "a spend of an unknown output (no allowOrphan)",
      hexOf(send({ ...coin(2), outpoint: { txid: fakeTxid("nowhere"), index: 0 } }, 1000n)),
      "missing-inputs",
    ],
    ["a transaction with a bad signature", hexOf(badSig), "mandatory-script-verify-flag-failed"],
    ["a transaction locked until a later height", hexOf(send(coin(2), 1000n, bob, 500)), "non-final"],
    [
      "a transaction paying less than the minimum fee rate",
      hexOf(send(coin(2), BigInt(SIZE - 1))),
      "min-fee-not-met",
    ],
    ["a transaction paying no fee", hexOf(send(coin(2), 0n)), "min-fee-not-met"],
    ["a spend of an immature coinbase", hexOf(send(immature, 1000n)), "bad-txns-premature-spend-of-coinbase"],
    [
      "a transaction paying out more than it spends",
      hexOf(prefix.spend([coin(2)], [pay(bob, coin(2).coin.value + 1n)])),
      "bad-txns-in-belowout",
    ],
    [
      "a transaction spending one output twice",
      hexOf(prefix.spend([coin(2), coin(2)], [pay(bob, coin(2).coin.value)])),
      "bad-txns-inputs-duplicate",
    ],
  ]
  for (const [name, bytes, reason] of cases) {
    it.scoped(`${name} is refused with ${reason}`, () =>
      withNode(
        Effect.gen(function* () {
          yield* accept(seed)
          const events = yield* watch
          const before = yield* pool
          expect(yield* reasonOf(bytes)).toBe(reason)
          expect(yield* pool).toEqual(before)
          expect(yield* events).toEqual([])
        }),
      ),
    )
  }
})
