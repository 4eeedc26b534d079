import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Layer, Option, PubSub, Queue, TestClock } from "effect"
import * as ChainActor from "../../src/actors/Chain.js"
import { Chain, type ChainEvent } from "../../src/actors/Chain.js"
import * as LightClientActor from "../../src/actors/LightClient.js"
import { buildFilter, filterHash, filterHeader, ZERO_FILTER_HEADER } from "../../src/consensus/blockFilter.js"
import { regtest } from "../../src/consensus/params.js"
import { ChainStore, makeMemoryStore } from "../../src/layers/ChainStore.js"
import * as KeystoreLayer from "../../src/layers/Keystore.js"
import { Keystore } from "../../src/layers/Keystore.js"
import { layerDefault, loadDefaultBackend } from "../../src/layers/Signatures.js"
import * as SigVerifier from "../../src/layers/SigVerifier.js"
import { encodeBlock } from "../../src/schema/block.js"
import { bytesEqual, toHex } from "../../src/schema/hex.js"
import { CFHeadersMessage, CFilterMessage, SERVICE_FILTERS, SERVICE_FULL } from "../../src/schema/wire.js"
import { pay, TestChain, type TestKey, testKey } from "../support/chain.js"
import { type FakePeer, fakePeer } from "../support/peers.js"

const backend = loadDefaultBackend().backend
const COIN = 100_000_000n
const miner = testKey(backend, 1)

const verifierLayer = SigVerifier.layerInline().pipe(Layer.provide(layerDefault))
const servicesLayer = () => {
  const base = Layer.mergeAll(Layer.succeed(ChainStore, makeMemoryStore()), verifierLayer)
  const chain = ChainActor.layer(ChainActor.defaultChainConfig(regtest)).pipe(Layer.provideMerge(base))
  const keystore = KeystoreLayer.layer({ network: regtest }).pipe(Layer.provide(layerDefault))
  return Layer.merge(chain, keystore)
}

const config = {
  ...LightClientActor.defaultLightClientConfig(regtest),
  requestTimeout: Duration.seconds(5),
}

/** filterPeer is a fake full node that serves filters. */
const filterPeer = (id: number): FakePeer => {
  const peer = fakePeer(id, { services: SERVICE_FULL | SERVICE_FILTERS })
  // its headers reached far beyond the test chains: it has every block asked of it
  Effect.runSync(peer.updateStats((s) => ({ ...s, syncedHeaders: 1_000 })))
  return peer
}

/** tick moves the TestClock one client tick and lets the actor work. */
const tick = Effect.gen(function* () {
  yield* TestClock.adjust(Duration.seconds(1))
  yield* Effect.yieldNow()
})

/** turn is one turn of the real event loop: every fiber woken so far runs. */
const turn = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))

/**
 * until gives the actor event-loop turns until `check` holds, failing after 500 (no sleeping and no
 * fixed number of turns: a loaded machine only takes more of them)
 */
const until = (what: string, check: Effect.Effect<boolean>) =>
  Effect.gen(function* () {
    for (let i = 0; i < 500; i++) {
      if (yield* check) return
      yield* turn
    }
    return yield* Effect.dieMessage(`never happened: ${what}`)
  })
const sent = (p: FakePeer, command: Parameters<FakePeer["sentOf"]>[0]) =>
  Effect.sync(() => p.sentOf(command).length > 0)

/** honest answers a peer's getcfheaders/getcfilters/getdata for `c` (optionally lying about one block's filter hash). */
const answers = (c: TestChain, lieAt?: number) => {
  const filters = c.blocks.map((b, i) => buildFilter(b, c.hashes[i]!))
  const hashes = filters.map((f, i) => (i === lieAt ? filterHash(new Uint8Array([0])) : filterHash(f)))
  const headers: Array<Uint8Array> = []
  let prev = ZERO_FILTER_HEADER
  for (const h of hashes) {
    prev = filterHeader(h, prev)
    headers.push(prev)
  }
  const heightOf = (hash: Uint8Array) => c.hashes.findIndex((h) => bytesEqual(h, hash))
  return {
    cfheaders: (start: number, stopHash: Uint8Array) =>
      new CFHeadersMessage({
        filterType: 0,
        stopHash,
        previousFilterHeader: headers[start - 1]!,
        filterHashes: hashes.slice(start, heightOf(stopHash) + 1),
      }),
    cfilters: (start: number, stopHash: Uint8Array) =>
      filters
        .slice(start, heightOf(stopHash) + 1)
        .map((filter, i) => new CFilterMessage({ filterType: 0, blockHash: c.hashes[start + i]!, filter })),
  }
}

describe("LightClient", () => {
  it.scoped(
    "follows the headers with filters from two peers, fetches only the block that pays the wallet, and bans a peer whose filter headers lie",
    () =>
      Effect.gen(function* () {
        const keystore = yield* Keystore
        const wallet: TestKey = { ...testKey(backend, 9), pubkey: keystore.publicKey(0) } as TestKey
        // 105 blocks; block 102 pays the wallet's first key
        const c = new TestChain(regtest, backend, miner)
        c.mine(101)
        const coinbase = c.matureCoins()[0]!
        c.connect(c.candidate([c.spend([coinbase], [pay(wallet, 7n * COIN)])]))
        c.mine(3)
        yield* TestClock.setTime((c.times[c.times.length - 1]! + 3600) * 1000)
        const chain = yield* Chain
        yield* chain.submitHeaders(c.blocks.slice(1).map((b) => b.header))

        const client = yield* LightClientActor.make(config)
        const events = yield* PubSub.subscribe(client.events)
        const honest = filterPeer(1)
        const liar = filterPeer(2)
        // a peer whose headers reach only block 50 is never asked about blocks it lacks (BIP157 servers punish that)
        const behind = fakePeer(3, { services: SERVICE_FULL | SERVICE_FILTERS })
        yield* behind.updateStats((s) => ({ ...s, syncedHeaders: 50 }))
        yield* client.peerConnected(behind)
        yield* client.peerConnected(honest)
        yield* client.peerConnected(liar)
        yield* tick
        yield* until(
          "both asked for filter headers",
          Effect.zipWith(sent(honest, "getcfheaders"), sent(liar, "getcfheaders"), (x, y) => x && y),
        )

        // both are asked for the filter headers of the whole range
        const stop = c.tip
        for (const p of [honest, liar]) {
          const [ask] = p.sentOf("getcfheaders")
          expect(ask).toMatchObject({ filterType: 0, startHeight: 1 })
          expect(toHex(ask!.stopHash)).toBe(toHex(stop))
        }
        yield* client.receive(honest, answers(c).cfheaders(1, stop))
        yield* client.receive(liar, answers(c, 102).cfheaders(1, stop))
        yield* until("the disputed block asked for", sent(honest, "getdata"))
        // they disagree at block 102: the client fetches it and checks its filter itself
        const [dispute] = honest.sentOf("getdata")
        expect(dispute!.items.map((i) => toHex(i.hash))).toEqual([toHex(c.hashes[102]!)])
        yield* client.receiveBlock(honest, encodeBlock(c.blocks[102]!))
        yield* until("the filters asked for", sent(honest, "getcfilters"))
        expect(liar.misbehaviors.map((m) => m._tag)).toEqual(["Lied"])
        expect(liar.disconnected).toMatch(/filter header/)
        expect(honest.misbehaviors).toEqual([])

        // the honest peer's filters; only block 102 matches the wallet, and only it is downloaded
        const [getFilters] = honest.sentOf("getcfilters")
        expect(getFilters).toMatchObject({ startHeight: 1 })
        honest.clear()
        for (const f of answers(c).cfilters(1, stop)) yield* client.receive(honest, f)
        yield* until("the matching block asked for", sent(honest, "getdata"))
        const fetched = honest.sentOf("getdata").flatMap((g) => g.items.map((i) => toHex(i.hash)))
        expect(fetched).toEqual([toHex(c.hashes[102]!)])
        yield* client.receiveBlock(honest, encodeBlock(c.blocks[102]!))
        yield* until(
          "the scan at 105",
          Effect.map(client.status, (s) => s.height === 105),
        )

        expect(behind.sent).toEqual([])
        const status = yield* client.status
        expect(status.height).toBe(105)
        expect(toHex(status.hash)).toBe(toHex(c.tip))
        const coins: Array<string> = []
        yield* client.forEachCoin((key, coin) => coins.push(`${key} ${coin.value} ${coin.height}`))
        expect(coins).toHaveLength(1)
        expect(coins[0]).toMatch(new RegExp(` ${7n * COIN} 102$`))
        // the wallet's events: every block connected in order, block 102 whole, the others empty
        const seen = (yield* Queue.takeAll(events)).pipe((chunk) => [...chunk])
        const connected = seen.filter(
          (e): e is Extract<ChainEvent, { _tag: "BlockConnected" }> => e._tag === "BlockConnected",
        )
        expect(connected.map((e) => e.height)).toEqual(Array.from({ length: 105 }, (_, i) => i + 1))
        expect(connected.filter((e) => e.block.txs.length > 0).map((e) => e.height)).toEqual([102])
        expect(Option.isSome(yield* client.hashAt(105))).toBe(true)
      }).pipe(Effect.provide(servicesLayer())),
  )

  it.scoped(
    "on a reorg it disconnects the blocks of the old branch (the wallet's coin goes) and scans the new one",
    () =>
      Effect.gen(function* () {
        const keystore = yield* Keystore
        const wallet: TestKey = { ...testKey(backend, 9), pubkey: keystore.publicKey(0) } as TestKey
        const base = new TestChain(regtest, backend, miner)
        base.mine(101)
        // branch A pays the wallet at 102; branch B (longer) does not
        const a = base.clone()
        a.connect(a.candidate([a.spend([a.matureCoins()[0]!], [pay(wallet, 7n * COIN)])]))
        a.mine(1)
        const b = base.clone()
        b.mine(4)
        yield* TestClock.setTime((b.times[b.times.length - 1]! + 3600) * 1000)
        const chain = yield* Chain
        yield* chain.submitHeaders(a.blocks.slice(1).map((x) => x.header))
        const client = yield* LightClientActor.make(config)
        const events = yield* PubSub.subscribe(client.events)
        const peer = filterPeer(1)
        yield* client.peerConnected(peer)

        /** serve answers whatever the client asked of `peer` from chain `c`, until it asks nothing new */
        const serve = (c: TestChain) =>
          Effect.gen(function* () {
            for (let round = 0; round < 20; round++) {
              const asked = [...peer.sent]
              peer.clear()
              if (asked.length === 0) return
              for (const m of asked) {
                const msg = m.message
                if (msg._tag === "getcfheaders")
                  yield* client.receive(peer, answers(c).cfheaders(msg.startHeight, msg.stopHash))
                if (msg._tag === "getcfilters")
                  for (const f of answers(c).cfilters(msg.startHeight, msg.stopHash))
                    yield* client.receive(peer, f)
                if (msg._tag === "getdata")
                  for (const item of msg.items) {
                    const at = c.hashes.findIndex((h) => bytesEqual(h, item.hash))
                    yield* client.receiveBlock(peer, encodeBlock(c.blocks[at]!))
                  }
              }
              // the actor answers each message in turn: wait until it asked something new or is done
              for (let i = 0; i < 50 && peer.sent.length === 0; i++) yield* turn
            }
          })

        yield* tick
        yield* serve(a)
        yield* until(
          "branch A scanned",
          Effect.map(client.status, (st) => st.height === 103),
        )
        let coins = 0
        yield* client.forEachCoin(() => coins++)
        expect(coins).toBe(1)
        yield* Queue.takeAll(events)

        // branch B overtakes: the client goes back to 101 and scans B's blocks
        yield* chain.submitHeaders(b.blocks.slice(102).map((x) => x.header))
        yield* tick
        yield* serve(b)
        yield* until(
          "branch B scanned",
          Effect.map(client.status, (st) => st.height === 105),
        )
        const status = yield* client.status
        expect(status.height).toBe(105)
        expect(toHex(status.hash)).toBe(toHex(b.tip))
        coins = 0
        yield* client.forEachCoin(() => coins++)
        expect(coins).toBe(0)
        const seen = [...(yield* Queue.takeAll(events))].filter((e) => e._tag !== "TipChanged")
        expect(seen.map((e) => `${e._tag} ${e.height}`)).toEqual([
          "BlockDisconnected 103",
          "BlockDisconnected 102",
          "BlockConnected 102",
          "BlockConnected 103",
          "BlockConnected 104",
          "BlockConnected 105",
        ])
        // the disconnected block 102 carried the wallet's transaction back to the wallet
        const gone = seen[1] as Extract<ChainEvent, { _tag: "BlockDisconnected" }>
        expect(gone.block.txs.length).toBe(2)
      }).pipe(Effect.provide(servicesLayer())),
  )

  it.scoped("a reorg while a batch is running replaces it: the old branch's answers are ignored", () =>
    Effect.gen(function* () {
      const base = new TestChain(regtest, backend, miner)
      base.mine(101)
      const a = base.clone()
      a.mine(2)
      const b = base.clone()
      // another time in B's first block: another branch from 102 on
      b.connect(b.candidate([], { time: b.times[b.times.length - 1]! + 61 }))
      b.mine(3)
      yield* TestClock.setTime((b.times[b.times.length - 1]! + 3600) * 1000)
      const chain = yield* Chain
      yield* chain.submitHeaders(a.blocks.slice(1).map((x) => x.header))
      const client = yield* LightClientActor.make(config)
      const peer = filterPeer(1)
      yield* client.peerConnected(peer)
      yield* tick
      yield* until("a batch for branch A", sent(peer, "getcfheaders"))
      const [forA] = peer.sentOf("getcfheaders")
      expect(toHex(forA!.stopHash)).toBe(toHex(a.tip))
      peer.clear()
      // branch B overtakes before A's filter headers come: the next tick starts a batch for B
      yield* chain.submitHeaders(b.blocks.slice(102).map((x) => x.header))
      yield* tick
      yield* until("a batch for branch B", sent(peer, "getcfheaders"))
      const [forB] = peer.sentOf("getcfheaders")
      expect(toHex(forB!.stopHash)).toBe(toHex(b.tip))
      // A's late answer is ignored; B's is taken and the scan ends on B
      yield* client.receive(peer, answers(a).cfheaders(1, a.tip))
      yield* client.receive(peer, answers(b).cfheaders(1, b.tip))
      yield* until("B's filters asked for", sent(peer, "getcfilters"))
      for (const f of answers(b).cfilters(1, b.tip)) yield* client.receive(peer, f)
      yield* until(
        "branch B scanned",
        Effect.map(client.status, (st) => st.height === 105 && toHex(st.hash) === toHex(b.tip)),
      )
      expect(peer.misbehaviors).toEqual([])
    }).pipe(Effect.provide(servicesLayer())),
  )
})
