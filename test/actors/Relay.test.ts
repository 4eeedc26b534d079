import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Layer, Option, type Scope, TestClock } from "effect"
import * as Actor from "../../src/actors/Actor.js"
import * as ChainActor from "../../src/actors/Chain.js"
import { Chain } from "../../src/actors/Chain.js"
import * as MempoolActor from "../../src/actors/Mempool.js"
import { defaultMempoolPolicy, Mempool, type MempoolService } from "../../src/actors/Mempool.js"
import type { PeerHandle } from "../../src/actors/net.js"
import * as RelayActor from "../../src/actors/Relay.js"
import { defaultRelayConfig, Relay, type RelayConfig } from "../../src/actors/Relay.js"
import { txidOf } from "../../src/consensus/hash.js"
import { regtest } from "../../src/consensus/params.js"
import { ChainStore, makeMemoryStore } from "../../src/layers/ChainStore.js"
import { layerDefault, loadDefaultBackend } from "../../src/layers/Signatures.js"
import * as SigVerifier from "../../src/layers/SigVerifier.js"
import { encodeBlock } from "../../src/schema/block.js"
import { toHex } from "../../src/schema/hex.js"
import type { Height } from "../../src/schema/primitives.js"
import { encodeTx, type Tx } from "../../src/schema/tx.js"
import { INV_TX, InvMessage, NotFoundMessage } from "../../src/schema/wire.js"
import { fakeTxid, pay, type Spendable, TestChain, type TestKey, testKey } from "../support/chain.js"
import { type FakePeer, fakePeer } from "../support/peers.js"

const backend = loadDefaultBackend().backend
const miner = testKey(backend, 1)
const bob: TestKey = testKey(backend, 2)

/** The node's history: 110 blocks, so the coinbases of blocks 1..10 are spendable at height 111. */
const prefix = new TestChain(regtest, backend, miner)
prefix.mine(110)
const prefixBlocks = prefix.blocks.slice(1)
const mature = prefix.matureCoins().filter((s) => s.coin.coinbase)
const coin = (i: number): Spendable => mature[i]!

const idOf = (tx: Tx): string => toHex(txidOf(encodeTx(tx)))

/** outputOf is output 0 of an unconfirmed `tx`, owned by bob. */
const outputOf = (tx: Tx): Spendable => ({
  outpoint: { txid: txidOf(encodeTx(tx)), index: 0 },
  coin: { value: tx.outputs[0]!.value, pubkey: bob.pubkey, height: 0 as Height, coinbase: false },
  key: bob,
})

/** send spends `from` whole to bob, leaving a 1000-unit fee. */
const send = (from: Spendable): Tx => prefix.spend([from], [pay(bob, from.coin.value - 1000n)])

/** badSig is a spend of coin 9 whose signature is flipped in one bit: provably invalid. */
const badSig = (() => {
  const good = send(coin(9))
  const sig = new Uint8Array(good.inputs[0]!.witness)
  sig[7]! ^= 0x01
  return { ...good, inputs: [{ prevout: good.inputs[0]!.prevout, witness: sig }] }
})()

const verifierLayer = SigVerifier.layerInline().pipe(Layer.provide(layerDefault))

/** The node's clock: a day after the fixture's blocks, so none is "too new". */
const setClock = TestClock.setTime((prefix.times[0]! + 86_400 * 2) * 1000)

/** withRelay runs `body` on a node (Chain, Mempool, Relay over a memory store) that has the prefix. */
const withRelay = <A, E>(
  body: Effect.Effect<A, E, Relay | Mempool | Chain | Scope.Scope>,
  config: RelayConfig = defaultRelayConfig,
  wrapMempool: (mempool: MempoolService) => MempoolService = (mempool) => mempool,
) =>
  Effect.gen(function* () {
    yield* setClock
    const base = Layer.merge(Layer.succeed(ChainStore, makeMemoryStore()), verifierLayer)
    const chain = ChainActor.layer(ChainActor.defaultChainConfig(regtest)).pipe(Layer.provide(base))
    const pool = MempoolActor.layer(defaultMempoolPolicy).pipe(Layer.provide(chain), Layer.provide(base))
    // `wrapMempool` sees every call Relay (and the test) makes into the pool
    const mempool = Layer.effect(Mempool, Effect.map(Mempool, wrapMempool)).pipe(Layer.provide(pool))
    const node = RelayActor.layer(config).pipe(Layer.provideMerge(Layer.merge(mempool, chain)))
    return yield* Effect.gen(function* () {
      const c = yield* Chain
      for (const b of prefixBlocks) yield* c.submitBlock(encodeBlock(b))
      return yield* body
    }).pipe(Effect.provide(node))
  })

/** eventuallyE lets the actors run until `cond` holds (no clock moves: only yields). */
const eventuallyE = <R>(cond: Effect.Effect<boolean, never, R>, what: string) =>
  Effect.gen(function* () {
    for (let i = 0; i < 5_000; i++) {
      if (yield* cond) return
      yield* Effect.yieldNow()
    }
    return yield* Effect.dieMessage(`never happened: ${what}`)
  })
const eventually = (cond: () => boolean, what: string) => eventuallyE(Effect.sync(cond), what)

/** settle lets the actors run for a while, for asserting that something did NOT happen. */
const settle = Effect.repeatN(Effect.yieldNow(), 300)

/** trickle moves the clock one trickle interval on and lets the actors act on it. */
const trickle = Effect.zipRight(TestClock.adjust(defaultRelayConfig.trickleInterval), settle)

const inv = (...txs: ReadonlyArray<Tx>) =>
  new InvMessage({ items: txs.map((tx) => ({ type: INV_TX, hash: txidOf(encodeTx(tx)) })) })
const notfound = (...txs: ReadonlyArray<Tx>) =>
  new NotFoundMessage({ items: txs.map((tx) => ({ type: INV_TX, hash: txidOf(encodeTx(tx)) })) })

/** requested lists what a peer was asked for, one array per getdata message. */
const requested = (peer: FakePeer) => peer.sentOf("getdata").map((m) => m.items.map((i) => toHex(i.hash)))
/** announced lists what was announced to a peer, one array per inv message. */
const announced = (peer: FakePeer) => peer.sentOf("inv").map((m) => m.items.map((i) => toHex(i.hash)))

const inPool = (tx: Tx) =>
  Effect.flatMap(Mempool, (m) => m.get(txidOf(encodeTx(tx)))).pipe(Effect.map(Option.isSome))

/** connect makes fake peers 1..n and tells the Relay about them (and lets it take note). */
const connect = (n: number) =>
  Effect.gen(function* () {
    const relay = yield* Relay
    const peers = Array.from({ length: n }, (_, i) => fakePeer(i + 1))
    for (const p of peers) yield* relay.peerConnected(p)
    yield* settle
    return peers
  })

/** deliver hands a transaction to the Relay as peer `from`'s `tx` frame and waits until the pool has it. */
const deliver = (from: FakePeer, tx: Tx) =>
  Effect.gen(function* () {
    yield* (yield* Relay).receiveTx(from, encodeTx(tx))
    yield* eventuallyE(inPool(tx), `${idOf(tx)} in the pool`)
  })

describe("Relay actor: requests", () => {
  it.scoped("an announced transaction is requested once, from its first announcer, in one getdata", () =>
    withRelay(
      Effect.gen(function* () {
        const relay = yield* Relay
        const [a, b] = yield* connect(2)
        const tx1 = send(coin(0))
        const tx2 = send(coin(1))
        yield* relay.receive(a!, inv(tx1, tx2))
        yield* eventually(() => a!.sentOf("getdata").length > 0, "getdata to the announcer")
        // the same items announced again, by the same peer and by another one
        yield* relay.receive(a!, inv(tx1, tx2))
        yield* relay.receive(b!, inv(tx2, tx1))
        yield* settle
        expect(requested(a!)).toEqual([[idOf(tx1), idOf(tx2)]])
        expect(requested(b!)).toEqual([])
      }),
    ),
  )

  it.scoped("a transaction already in the pool is not requested", () =>
    withRelay(
      Effect.gen(function* () {
        const relay = yield* Relay
        const [a] = yield* connect(1)
        const tx = send(coin(0))
        yield* (yield* Mempool).accept(encodeTx(tx))
        yield* relay.receive(a!, inv(tx))
        yield* settle
        expect(requested(a!)).toEqual([])
      }),
    ),
  )

  it.scoped("a request unanswered for requestTimeout is asked of the next announcer", () =>
    withRelay(
      Effect.gen(function* () {
        const relay = yield* Relay
        const [a, b] = yield* connect(2)
        const tx = send(coin(0))
        yield* relay.receive(a!, inv(tx))
        yield* relay.receive(b!, inv(tx))
        yield* relay.receive(b!, inv(tx))
        yield* eventually(() => requested(a!).length === 1, "getdata to the first announcer")
        yield* TestClock.adjust(Duration.subtract(defaultRelayConfig.requestTimeout, Duration.seconds(1)))
        yield* settle
        expect(requested(b!)).toEqual([])
        yield* TestClock.adjust(defaultRelayConfig.trickleInterval)
        yield* eventually(() => requested(b!).length === 1, "getdata to the second announcer")
        // b times out too: with nobody left the request is given up (b announced twice, is asked once)
        yield* TestClock.adjust(defaultRelayConfig.requestTimeout)
        yield* settle
        expect(requested(b!)).toEqual([[idOf(tx)]])
        expect(requested(a!)).toEqual([[idOf(tx)]])
        // a late delivery is still taken
        yield* deliver(b!, tx)
      }),
    ),
  )

  it.scoped("notfound moves the request to the next announcer at once; with none left it is dropped", () =>
    withRelay(
      Effect.gen(function* () {
        const relay = yield* Relay
        const [a, b, c, d] = yield* connect(4)
        const tx = send(coin(0))
        for (const p of [a!, b!, c!]) yield* relay.receive(p, inv(tx))
        yield* eventually(() => requested(a!).length === 1, "getdata to a")
        yield* relay.receive(a!, notfound(tx))
        yield* eventually(() => requested(b!).length === 1, "getdata to b")
        // a notfound from a peer that was not asked changes nothing
        yield* relay.receive(d!, notfound(tx))
        yield* relay.receive(b!, notfound(tx))
        yield* eventually(() => requested(c!).length === 1, "getdata to c")
        yield* relay.receive(c!, notfound(tx))
        yield* settle
        expect([a!, b!, c!].map(requested)).toEqual([[[idOf(tx)]], [[idOf(tx)]], [[idOf(tx)]]])
        // the request was given up: a new announcer is asked afresh
        yield* relay.receive(d!, inv(tx))
        yield* eventually(() => requested(d!).length === 1, "getdata to d")
        expect(requested(a!)).toHaveLength(1)
      }),
    ),
  )

  it.scoped("when the asked peer disconnects, the next announcer is asked", () =>
    withRelay(
      Effect.gen(function* () {
        const relay = yield* Relay
        const [a, b] = yield* connect(2)
        const tx = send(coin(0))
        yield* relay.receive(a!, inv(tx))
        yield* relay.receive(b!, inv(tx))
        yield* eventually(() => requested(a!).length === 1, "getdata to a")
        yield* settle
        expect(requested(b!)).toEqual([])
        yield* relay.peerDisconnected(a!.info.id)
        yield* eventually(() => requested(b!).length === 1, "getdata to b")
        yield* deliver(b!, tx)
      }),
    ),
  )

  it.scoped("a peer is asked for at most maxInFlightPerPeer at a time; the rest follow as it delivers", () =>
    withRelay(
      Effect.gen(function* () {
        const relay = yield* Relay
        const [a] = yield* connect(1)
        const tx1 = send(coin(0))
        const tx2 = send(coin(1))
        yield* relay.receive(a!, inv(tx1, tx2))
        yield* eventually(() => requested(a!).length === 1, "first getdata")
        yield* settle
        expect(requested(a!)).toEqual([[idOf(tx1)]])
        yield* deliver(a!, tx1)
        yield* eventually(() => requested(a!).length === 2, "second getdata")
        expect(requested(a!)).toEqual([[idOf(tx1)], [idOf(tx2)]])
      }),
      { ...defaultRelayConfig, maxInFlightPerPeer: 1 },
    ),
  )
})

describe("Relay actor: delivered transactions", () => {
  it.scoped(
    "a delivered transaction enters the pool and is trickled once to the peers that do not have it",
    () =>
      withRelay(
        Effect.gen(function* () {
          const relay = yield* Relay
          const [a, b, c, d] = yield* connect(4)
          const tx1 = send(coin(0))
          const tx2 = send(coin(1))
          yield* relay.receive(a!, inv(tx1, tx2))
          yield* relay.receive(b!, inv(tx1))
          yield* eventually(() => requested(a!).length === 1, "getdata to a")
          yield* deliver(a!, tx1)
          yield* deliver(a!, tx2)
          expect((yield* a!.stats).lastTxAt).toBeGreaterThan(0)
          expect((yield* b!.stats).lastTxAt).toBe(0)
          // nothing before the trickle
          yield* settle
          expect([a!, b!, c!, d!].map(announced)).toEqual([[], [], [], []])
          yield* trickle
          // one batch to each peer that has neither; b announced tx1 so it only hears of tx2
          expect(announced(c!)).toEqual([[idOf(tx1), idOf(tx2)]])
          expect(announced(d!)).toEqual([[idOf(tx1), idOf(tx2)]])
          expect(announced(b!)).toEqual([[idOf(tx2)]])
          expect(announced(a!)).toEqual([])
          // never again
          for (let i = 0; i < 5; i++) yield* trickle
          expect([a!, b!, c!, d!].map((p) => announced(p).length)).toEqual([0, 1, 1, 1])
        }),
      ),
  )

  it.scoped("a peer that announces a queued transaction before the trickle is not told of it", () =>
    withRelay(
      Effect.gen(function* () {
        const relay = yield* Relay
        const [a, b] = yield* connect(2)
        const tx = send(coin(0))
        yield* (yield* Mempool).accept(encodeTx(tx))
        yield* settle
        yield* relay.receive(b!, inv(tx))
        yield* trickle
        expect(announced(a!)).toEqual([[idOf(tx)]])
        expect(announced(b!)).toEqual([])
        expect(requested(b!)).toEqual([])
      }),
    ),
  )

  it.scoped("a transaction accepted through the RPC path is announced to every peer", () =>
    withRelay(
      Effect.gen(function* () {
        const [a, b, c] = yield* connect(3)
        const tx = send(coin(0))
        yield* (yield* Mempool).accept(encodeTx(tx))
        yield* trickle
        expect([a!, b!, c!].map(announced)).toEqual([[[idOf(tx)]], [[idOf(tx)]], [[idOf(tx)]]])
      }),
    ),
  )

  it.scoped("an invalid transaction raises its sender's ban score and is never requested again", () =>
    withRelay(
      Effect.gen(function* () {
        const relay = yield* Relay
        const [a, b, c] = yield* connect(3)
        yield* relay.receive(a!, inv(badSig))
        yield* eventually(() => requested(a!).length === 1, "getdata to a")
        yield* relay.receiveTx(a!, encodeTx(badSig))
        yield* eventuallyE(
          Effect.map(a!.stats, (s) => s.banScore > 0),
          "a ban score",
        )
        expect((yield* a!.stats).banScore).toBe(100)
        expect(a!.disconnected).toBeUndefined()
        expect(yield* inPool(badSig)).toBe(false)
        yield* relay.receive(b!, inv(badSig))
        yield* trickle
        expect(requested(b!)).toEqual([])
        expect([a!, b!, c!].map(announced)).toEqual([[], [], []])
        expect((yield* b!.stats).banScore).toBe(0)
      }),
    ),
  )

  it.scoped(
    "a refusal is forgotten on a new tip: a transaction non-final under the old tip is fetched again",
    () =>
      withRelay(
        Effect.gen(function* () {
          const relay = yield* Relay
          const [a, b] = yield* connect(2)
          // final only once a block at height 111 exists (the next block is 111: lockTime must be below it)
          const locked = prefix.spend([coin(8)], [pay(bob, coin(8).coin.value - 1000n)], 111)
          yield* relay.receive(a!, inv(locked))
          yield* eventually(() => requested(a!).length === 1, "getdata to a")
          yield* relay.receiveTx(a!, encodeTx(locked))
          yield* settle
          expect(yield* inPool(locked)).toBe(false)
          expect((yield* a!.stats).banScore).toBe(0)
          // refused under this tip: not fetched again
          yield* relay.receive(b!, inv(locked))
          yield* trickle
          expect(requested(b!)).toEqual([])
          // a new tip: the refusal is forgotten, the next announcement is fetched and the tx accepted
          const next = prefix.clone()
          next.connect(next.candidate([]))
          yield* (yield* Chain).submitBlock(encodeBlock(next.blocks.at(-1)!))
          yield* relay.receive(b!, inv(locked))
          yield* eventually(() => requested(b!).length === 1, "getdata to b after the new tip")
          yield* deliver(b!, locked)
        }),
      ),
  )

  it.scoped("an orphan's parent is asked of the peer that sent it; both enter the pool, parent first", () =>
    withRelay(
      Effect.gen(function* () {
        const relay = yield* Relay
        const [a, b] = yield* connect(2)
        const parent = send(coin(0))
        const child = send(outputOf(parent))
        yield* relay.receive(a!, inv(child))
        yield* eventually(() => requested(a!).length === 1, "getdata for the child")
        yield* relay.receiveTx(a!, encodeTx(child))
        yield* eventually(() => requested(a!).length === 2, "getdata for the parent")
        expect(requested(a!)).toEqual([[idOf(child)], [idOf(parent)]])
        expect(requested(b!)).toEqual([])
        expect(yield* inPool(child)).toBe(false)
        yield* deliver(a!, parent)
        expect(yield* inPool(child)).toBe(true)
        yield* trickle
        expect(announced(b!)).toEqual([[idOf(parent), idOf(child)]])
        expect(announced(a!)).toEqual([])
      }),
    ),
  )
})

describe("Relay actor: fairness under a flood", () => {
  it.scoped(
    "a peer flooding invs waits on its own quota: another peer's tx is handled after at most perSource of the flood's messages",
    () =>
      withRelay(
        Effect.gen(function* () {
          const relay = yield* Relay
          const flooder = fakePeer(1)
          const honest = fakePeer(2)
          /** how many of the flood's invs Relay had handled (one getdata each) when it accepted the honest tx */
          let floodHandledAtAccept: number | undefined
          const watched: PeerHandle = {
            ...honest,
            updateStats: (f) =>
              Effect.suspend(() => {
                floodHandledAtAccept ??= requested(flooder).length
                return honest.updateStats(f)
              }),
          }
          yield* relay.peerConnected(flooder)
          yield* relay.peerConnected(watched)
          let handedOver = 0
          const flood = yield* Effect.fork(
            Effect.forEach(
              Array.from({ length: 10_000 }, (_, i) => fakeTxid(`flood ${i}`)),
              (hash) =>
                relay
                  .receive(flooder, new InvMessage({ items: [{ type: INV_TX, hash }] }))
                  .pipe(Effect.tap(() => Effect.sync(() => handedOver++))),
              { discard: true },
            ),
          )
          yield* eventually(() => requested(flooder).length >= 50, "the flood under way")
          // the flooder's reader is held at its quota: it is never more than perSource messages ahead
          expect(handedOver - requested(flooder).length).toBeLessThanOrEqual(Actor.defaultPerSource)
          const before = requested(flooder).length
          const tx = send(coin(0))
          yield* relay.receiveTx(watched, encodeTx(tx))
          yield* eventuallyE(inPool(tx), "the honest tx in the pool")
          expect(floodHandledAtAccept).toBeDefined()
          expect(floodHandledAtAccept! - before).toBeLessThanOrEqual(Actor.defaultPerSource)
          expect(flood.unsafePoll()).toBeNull()
        }),
        { ...defaultRelayConfig, maxInFlightPerPeer: 1_000_000, maxAnnouncementsPerPeer: 1_000_000 },
      ),
  )
})

describe("Relay actor: duplicates", () => {
  /** counting wraps the pool to count Relay's calls: `accept` (decode and validation) and `get` (a lookup). */
  const counting = () => {
    const calls = { accept: 0, get: 0 }
    const wrap = (m: MempoolService): MempoolService => ({
      ...m,
      accept: (bytes, options) =>
        Effect.suspend(() => {
          calls.accept++
          return m.accept(bytes, options)
        }),
      get: (txid) =>
        Effect.suspend(() => {
          calls.get++
          return m.get(txid)
        }),
    })
    return { calls, wrap }
  }

  it.scoped(
    "a transaction in the pool, delivered or announced again by any peer, is dropped by its txid: the pool is not asked",
    () => {
      const { calls, wrap } = counting()
      return withRelay(
        Effect.gen(function* () {
          const relay = yield* Relay
          const [a, b, c] = yield* connect(3)
          const tx = send(coin(0))
          yield* deliver(a!, tx)
          expect(calls.accept).toBe(1)
          const gets = calls.get
          yield* relay.receiveTx(b!, encodeTx(tx))
          yield* relay.receiveTx(a!, encodeTx(tx))
          yield* relay.receive(c!, inv(tx))
          yield* settle
          expect(calls).toEqual({ accept: 1, get: gets })
          expect(requested(c!)).toEqual([])
          for (const p of [a!, b!, c!]) expect((yield* p.stats).banScore).toBe(0)
          // a new transaction still goes to the pool
          yield* deliver(b!, send(coin(1)))
          expect(calls.accept).toBe(2)
        }),
        defaultRelayConfig,
        wrap,
      )
    },
  )

  it.scoped(
    "beyond maxRecentAccepted a pooled tx is forgotten; its copy goes to the pool, which refuses it harmlessly",
    () => {
      const { calls, wrap } = counting()
      return withRelay(
        Effect.gen(function* () {
          const relay = yield* Relay
          const [a, b] = yield* connect(2)
          const [first, second] = [send(coin(0)), send(coin(1))]
          yield* deliver(a!, first)
          yield* deliver(a!, second)
          yield* relay.receiveTx(b!, encodeTx(first))
          yield* eventually(() => calls.accept === 3, "the copy handed to the pool")
          yield* settle
          expect((yield* b!.stats).banScore).toBe(0)
          expect(yield* inPool(first)).toBe(true)
          // b is told of the other one only: it sent this one
          yield* trickle
          expect(announced(b!)).toEqual([[idOf(second)]])
        }),
        { ...defaultRelayConfig, maxRecentAccepted: 1 },
        wrap,
      )
    },
  )
})
