import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Layer, Logger, TestClock } from "effect"
import * as ChainActor from "../../src/actors/Chain.js"
import { Chain, type ChainServiceApi } from "../../src/actors/Chain.js"
import type { PeerHandle } from "../../src/actors/net.js"
import * as SyncActor from "../../src/actors/Sync.js"
import { Sync, type SyncService } from "../../src/actors/Sync.js"
import { headerHash } from "../../src/consensus/checkBlock.js"
import { regtest } from "../../src/consensus/params.js"
import { ChainStore, makeMemoryStore } from "../../src/layers/ChainStore.js"
import { layerDefault, loadDefaultBackend } from "../../src/layers/Signatures.js"
import * as SigVerifier from "../../src/layers/SigVerifier.js"
import { type BlockHeader, encodeBlock } from "../../src/schema/block.js"
import { toHex } from "../../src/schema/hex.js"
import {
  HeadersMessage,
  INV_BLOCK,
  InvMessage,
  MAX_HEADERS,
  NotFoundMessage,
  SERVICE_FULL,
  SERVICE_LIGHT,
  SendHeadersMessage,
} from "../../src/schema/wire.js"
import { TestChain, testKey } from "../support/chain.js"
import { type FakePeer, fakePeer } from "../support/peers.js"

const backend = loadDefaultBackend().backend
const miner = testKey(backend, 1)

/** The remote chain: 2,100 blocks, so its headers come in two batches (2,000 + 100). */
const remote = new TestChain(regtest, backend, miner)
remote.mine(MAX_HEADERS + 100)
const TOP = remote.height
const heightOf = new Map(remote.hashes.map((h, i) => [toHex(h), i]))
const encoded = new Map(remote.blocks.map((b, i) => [toHex(remote.hashes[i]!), encodeBlock(b)]))

/** The node's clock: an hour after the remote's last block, so no header is "too new". */
const setClock = TestClock.setTime((remote.times[TOP]! + 3600) * 1000)

const config: SyncActor.SyncConfig = SyncActor.defaultSyncConfig

/** nodeLayer: Chain and Sync; `wrapChain` lets a test watch the calls into the Chain (Sync's and its own). */
const nodeLayer = (
  cfg: SyncActor.SyncConfig = config,
  wrapChain: (chain: ChainServiceApi) => ChainServiceApi = (chain) => chain,
) => {
  const actor = ChainActor.layer(ChainActor.defaultChainConfig(regtest)).pipe(
    Layer.provide(
      Layer.merge(
        Layer.succeed(ChainStore, makeMemoryStore()),
        SigVerifier.layerInline().pipe(Layer.provide(layerDefault)),
      ),
    ),
  )
  const chain = Layer.effect(Chain, Effect.map(Chain, wrapChain)).pipe(Layer.provide(actor))
  return SyncActor.layer(cfg).pipe(Layer.provideMerge(chain))
}

/** run gives `body` a fresh node (Chain + Sync) with the clock set after the fixture. */
const run = <A, E>(
  body: Effect.Effect<A, E, Chain | Sync>,
  cfg?: SyncActor.SyncConfig,
  wrapChain?: (chain: ChainServiceApi) => ChainServiceApi,
) =>
  Effect.gen(function* () {
    yield* setClock
    return yield* body.pipe(Effect.provide(nodeLayer(cfg, wrapChain)))
  })

/**
 * Remote plays one peer: it answers getheaders from its fixture chain (up to `height`) and getdata with
 * the fixture's blocks, unless told to stay silent. `requests` logs every block asked of it, with how
 * many of its blocks it had handed over when the getdata went out.
 */
interface Remote {
  readonly peer: FakePeer
  readonly chain: TestChain
  height: number
  answerHeaders: boolean
  answerBlocks: boolean
  cursor: number
  delivered: number
  readonly requests: Array<{ readonly hex: string; readonly height: number; readonly outstanding: number }>
}

const makeRemote = (
  id: number,
  opts: { chain?: TestChain; height?: number; services?: number; answerBlocks?: boolean } = {},
): Remote => {
  const chain = opts.chain ?? remote
  return {
    peer: fakePeer(id, { services: opts.services ?? SERVICE_FULL }),
    chain,
    height: opts.height ?? chain.height,
    answerHeaders: true,
    answerBlocks: opts.answerBlocks ?? true,
    cursor: 0,
    delivered: 0,
    requests: [],
  }
}

/** headersFor answers a getheaders from the remote's chain, as Chain.headersAfter does. */
const headersFor = (r: Remote, locator: ReadonlyArray<Uint8Array>, stop: Uint8Array): Array<BlockHeader> => {
  const index = new Map(r.chain.hashes.slice(0, r.height + 1).map((h, i) => [toHex(h), i]))
  let start = 1
  for (const h of locator) {
    const at = index.get(toHex(h))
    if (at !== undefined) {
      start = at + 1
      break
    }
  }
  const stopHex = toHex(stop)
  const out: Array<BlockHeader> = []
  for (let h = start; h <= r.height && out.length < MAX_HEADERS; h++) {
    out.push(r.chain.blocks[h]!.header)
    if (toHex(r.chain.hashes[h]!) === stopHex) break
  }
  return out
}

/**
 * respond answers what the node sent `r` since the last call (not what it sends meanwhile: a peer's
 * block handover waits for Sync within its quota, and Sync's next getdata to it is the next round's,
 * so one pump fiber serves every remote in turn, as their own readers would in parallel).
 */
const respond = (sync: SyncService, r: Remote) =>
  Effect.gen(function* () {
    const end = r.peer.sent.length
    while (r.cursor < end) {
      const { message } = r.peer.sent[r.cursor++]!
      if (message._tag === "getheaders" && r.answerHeaders) {
        const headers = headersFor(r, message.locator, message.stop)
        yield* sync.receive(r.peer, new HeadersMessage({ headers }, { disableValidation: true }))
      } else if (message._tag === "getdata") {
        const outstanding = r.requests.length - r.delivered + message.items.length
        for (const item of message.items) {
          const hex = toHex(item.hash)
          r.requests.push({ hex, height: heightOf.get(hex) ?? -1, outstanding })
        }
        if (!r.answerBlocks) continue
        for (const item of message.items) {
          r.delivered++
          yield* sync.receiveBlock(r.peer, encoded.get(toHex(item.hash))!)
        }
      }
    }
  })

/** pumpUntil lets the actors and the remotes talk until `done` holds; fails after `rounds` rounds. */
const pumpUntil = (
  remotes: ReadonlyArray<Remote>,
  done: Effect.Effect<boolean, never, Chain | Sync>,
  rounds = 200_000,
) =>
  Effect.gen(function* () {
    const sync = yield* Sync
    for (let i = 0; i < rounds; i++) {
      for (const r of remotes) yield* respond(sync, r)
      if (yield* done) return
      yield* Effect.yieldNow()
    }
    return yield* Effect.dieMessage("pumpUntil: condition not reached")
  })

/** settle pumps a fixed number of rounds: for asserting that nothing more happens. */
const settle = (remotes: ReadonlyArray<Remote>, rounds = 2_000) =>
  Effect.gen(function* () {
    const sync = yield* Sync
    for (let i = 0; i < rounds; i++) {
      for (const r of remotes) yield* respond(sync, r)
      yield* Effect.yieldNow()
    }
  })

const tipHeight = Effect.flatMap(Chain, (c) => c.tip).pipe(Effect.map((t) => t.height))
const tipIs = (h: number) => Effect.map(tipHeight, (t) => t === h)

const connect = (remotes: ReadonlyArray<Remote>) =>
  Effect.flatMap(Sync, (sync) =>
    Effect.forEach(remotes, (r) => sync.peerConnected(r.peer), { discard: true }),
  )

/** submitUpTo gives the node the remote's blocks 1..h directly (a node already synced that far). */
const submitUpTo = (h: number) =>
  Effect.gen(function* () {
    const chain = yield* Chain
    for (let i = 1; i <= h; i++) yield* chain.submitBlock(encoded.get(toHex(remote.hashes[i]!))!)
  })

const stats = (p: PeerHandle) => p.stats

describe("Sync actor: headers-first download", () => {
  it.scoped(
    "handshake: sendheaders to every peer, getheaders with our locator to those that serve blocks",
    () =>
      run(
        Effect.gen(function* () {
          const full = makeRemote(1)
          const light = makeRemote(2, { services: SERVICE_LIGHT })
          full.answerHeaders = false
          light.answerHeaders = false
          yield* connect([full, light])
          yield* pumpUntil(
            [full, light],
            Effect.sync(() => full.peer.sent.length >= 2),
          )
          yield* settle([full, light], 200)
          expect(full.peer.sent.map((s) => s.command)).toEqual(["sendheaders", "getheaders"])
          const [getheaders] = full.peer.sentOf("getheaders")
          // a fresh node's locator is its genesis; no stop
          expect(getheaders!.locator.map(toHex)).toEqual([toHex(regtest.genesisHash)])
          expect(getheaders!.stop.every((b) => b === 0)).toBe(true)
          // a light peer serves no blocks: it is never asked for headers to download
          expect(light.peer.sent.map((s) => s.command)).toEqual(["sendheaders"])
        }),
      ),
  )

  it.scoped(
    "2,100 headers come in two batches: the second getheaders continues from the first's last header",
    () =>
      run(
        Effect.gen(function* () {
          const r = makeRemote(1, { answerBlocks: false })
          yield* connect([r])
          const chain = yield* Chain
          yield* pumpUntil(
            [r],
            Effect.map(chain.bestHeader, (b) => b.height === TOP),
          )
          yield* settle([r], 200)
          const getheaders = r.peer.sentOf("getheaders")
          expect(getheaders.length).toBe(2)
          expect(getheaders[1]!.locator.map(toHex)).toEqual([toHex(remote.hashes[MAX_HEADERS]!)])
          expect((yield* stats(r.peer)).syncedHeaders).toBe(TOP)
          // blocks are asked for as soon as the first batch is in, from the bottom up
          const requested = r.requests.map((q) => q.height)
          expect(requested).toEqual(Array.from({ length: 16 }, (_, i) => i + 1))
        }),
      ),
  )

  it.scoped(
    "blocks come from 4 peers in parallel, at most 16 in flight per peer, each asked of one peer once",
    () =>
      run(
        Effect.gen(function* () {
          const remotes = [1, 2, 3, 4].map((id) => makeRemote(id, { answerBlocks: false }))
          yield* connect(remotes)
          // nobody answers getdata yet: each peer holds exactly one full batch, all different
          yield* pumpUntil(
            remotes,
            Effect.sync(() => remotes.every((r) => r.requests.length > 0)),
          )
          yield* settle(remotes, 500)
          for (const r of remotes) expect(r.requests.length).toBe(16)
          const first = remotes.flatMap((r) => r.requests.map((q) => q.height)).sort((a, b) => a - b)
          expect(first).toEqual(Array.from({ length: 64 }, (_, i) => i + 1))

          for (const r of remotes) {
            r.answerBlocks = true
            r.cursor = 0
            r.requests.length = 0
          }
          yield* pumpUntil(remotes, tipIs(TOP))
          const all = remotes.flatMap((r) => r.requests.map((q) => q.hex))
          expect(all.length).toBe(TOP)
          expect(new Set(all).size).toBe(TOP)
          for (const r of remotes) {
            // outstanding counts what the peer had not yet handed over: a lower bound of the node's in-flight
            expect(Math.max(...r.requests.map((q) => q.outstanding))).toBeLessThanOrEqual(16)
            expect(r.requests.length).toBeGreaterThan(TOP / 10)
            expect((yield* stats(r.peer)).syncedBlocks).toBeGreaterThan(0)
            expect(r.peer.disconnected).toBeUndefined()
          }
        }),
      ),
  )

  it.scoped(
    "a peer that stops answering is dropped after stallTimeout; its blocks come from the others",
    () =>
      run(
        Effect.gen(function* () {
          const remotes = [1, 2, 3, 4].map((id) => makeRemote(id))
          const silent = remotes[3]!
          silent.answerBlocks = false
          yield* connect(remotes)
          const chain = yield* Chain
          // the others run ahead until the window above the stuck tip is full
          const requestedTop = () => Math.max(0, ...remotes.flatMap((r) => r.requests.map((q) => q.height)))
          yield* pumpUntil(
            remotes,
            Effect.map(tipHeight, (t) => silent.requests.length > 0 && requestedTop() >= t + config.window),
          )
          yield* settle(remotes, 2_000)
          const stuck = yield* tipHeight
          const lowestSilent = Math.min(...silent.requests.map((q) => q.height))
          expect(stuck).toBe(lowestSilent - 1)
          expect(requestedTop()).toBe(stuck + config.window)
          expect(silent.peer.disconnected).toBeUndefined()

          yield* TestClock.adjust(Duration.sum(config.stallTimeout, config.tick))
          yield* pumpUntil(remotes, tipIs(TOP))
          expect(silent.peer.disconnected).toBe("stalling block download")
          const others = new Set(remotes.slice(0, 3).flatMap((r) => r.requests.map((q) => q.hex)))
          for (const q of silent.requests) expect(others.has(q.hex)).toBe(true)
          expect(toHex((yield* chain.tip).hash)).toBe(toHex(remote.hashes[TOP]!))
        }),
      ),
  )

  it.scoped(
    "an announcer that does not deliver is dropped after stallTimeout; the block comes from another",
    () =>
      run(
        Effect.gen(function* () {
          const slow = makeRemote(1, { height: 40, answerBlocks: false })
          const other = makeRemote(2, { height: 40 })
          const remotes = [slow, other]
          // the node has the first 40 blocks and both peers know it
          yield* connect(remotes)
          slow.answerBlocks = true
          yield* pumpUntil(remotes, tipIs(40))
          yield* settle(remotes, 200)
          // both announce block 41; the first announcer is asked, and never answers
          slow.answerBlocks = false
          slow.height = other.height = 41
          const sync = yield* Sync
          const header41 = new HeadersMessage({ headers: [remote.blocks[41]!.header] })
          yield* sync.receive(slow.peer, header41)
          yield* sync.receive(other.peer, header41)
          yield* pumpUntil(
            remotes,
            Effect.sync(() => slow.requests.some((q) => q.height === 41)),
          )
          yield* settle(remotes, 200)
          expect(other.requests.some((q) => q.height === 41)).toBe(false)
          yield* TestClock.adjust(Duration.sum(config.stallTimeout, config.tick))
          yield* pumpUntil(remotes, tipIs(41))
          expect(slow.peer.disconnected).toBe("stalling block download")
          expect(other.requests.filter((q) => q.height === 41).length).toBe(1)
        }),
      ),
  )

  it.scoped("the only peer holding a request for blockTimeout is dropped", () =>
    run(
      Effect.gen(function* () {
        const r = makeRemote(1, { answerBlocks: false })
        yield* connect([r])
        yield* pumpUntil(
          [r],
          Effect.sync(() => r.requests.length === 16),
        )
        // nobody else could fetch the block: no stall, only the block timeout
        yield* TestClock.adjust(Duration.subtract(config.blockTimeout, config.tick))
        yield* settle([r], 200)
        expect(r.peer.disconnected).toBeUndefined()
        yield* TestClock.adjust(Duration.sum(config.tick, config.tick))
        yield* pumpUntil(
          [r],
          Effect.sync(() => r.peer.disconnected !== undefined),
        )
        expect(r.peer.disconnected).toBe("block download timeout")
      }),
    ),
  )

  it.scoped("while behind the best header, a progress line is logged every progressEvery", () => {
    const lines: Array<string> = []
    const capture = Logger.make(({ message }) => {
      lines.push(Array.isArray(message) ? message.join(" ") : String(message))
    })
    return run(
      Effect.gen(function* () {
        const r = makeRemote(1, { answerBlocks: false })
        yield* connect([r])
        yield* pumpUntil(
          [r],
          Effect.sync(() => r.requests.length === 16),
        )
        yield* TestClock.adjust(config.progressEvery)
        yield* pumpUntil(
          [r],
          Effect.sync(() => lines.some((l) => l.startsWith("sync: "))),
        )
        expect(lines.filter((l) => l.startsWith("sync: "))).toEqual([
          `sync: height 0 of ${TOP} (0.0%), 1 peers, 16 blocks in flight`,
        ])
      }),
    ).pipe(Effect.provide(Logger.add(capture)))
  })

  it.scoped("a notfound answer sends the block to another peer at once", () =>
    run(
      Effect.gen(function* () {
        const a = makeRemote(1, { answerBlocks: false })
        yield* connect([a])
        yield* pumpUntil(
          [a],
          Effect.sync(() => a.requests.length === 16),
        )
        const b = makeRemote(2, { answerBlocks: false })
        yield* connect([b])
        yield* pumpUntil(
          [a, b],
          Effect.sync(() => b.requests.length === 16),
        )
        const sync = yield* Sync
        const missing = a.requests
          .slice(0, 4)
          .map((q) => ({ type: INV_BLOCK as typeof INV_BLOCK, hash: remote.hashes[q.height]! }))
        yield* sync.receive(a.peer, new NotFoundMessage({ items: missing }))
        // both hand over what they still hold, and answer from now on: a has free slots first
        const missingHex = new Set(missing.map((m) => toHex(m.hash)))
        for (const r of [a, b]) {
          r.answerBlocks = true
          for (const q of r.requests) {
            if (missingHex.has(q.hex)) continue
            r.delivered++
            yield* sync.receiveBlock(r.peer, encoded.get(q.hex)!)
          }
        }
        yield* pumpUntil([a, b], tipIs(TOP))
        // the blocks a did not have came from b, and were never asked of a again
        for (const hex of missingHex) expect(b.requests.some((q) => q.hex === hex)).toBe(true)
        const askedOfA = a.requests.filter((q) => missingHex.has(q.hex))
        expect(askedOfA.length).toBe(4)
      }),
    ),
  )
})

describe("Sync actor: misbehaving peers", () => {
  /** withBadPow raises the difficulty bits of header `i`: its hash no longer meets its target. */
  const withBadPow = (headers: Array<BlockHeader>, i: number) =>
    headers.map((h, j) => (j === i ? { ...h, bits: 0x1d00ffff } : h))

  const mutations: ReadonlyArray<readonly [string, (hs: Array<BlockHeader>) => Array<BlockHeader>]> = [
    ["bad proof of work", (hs) => withBadPow(hs, 5)],
    ["a gap in the batch", (hs) => hs.filter((_, j) => j !== 5)],
  ]
  for (const [name, mutate] of mutations) {
    it.scoped(`headers with ${name} cost the peer its ban score and the connection; no block is asked`, () =>
      run(
        Effect.gen(function* () {
          const r = makeRemote(1)
          r.answerHeaders = false
          yield* connect([r])
          const sync = yield* Sync
          const headers = mutate(remote.blocks.slice(1, 11).map((b) => b.header))
          yield* sync.receive(r.peer, new HeadersMessage({ headers }, { disableValidation: true }))
          yield* pumpUntil(
            [r],
            Effect.sync(() => r.peer.disconnected !== undefined),
          )
          expect(r.peer.disconnected).toMatch(/^invalid headers: (high-hash|bad-diffbits|bad-headers-chain)$/)
          expect((yield* stats(r.peer)).banScore).toBeGreaterThanOrEqual(50)
          yield* settle([r], 200)
          expect(r.peer.sentOf("getdata")).toEqual([])
        }),
      ),
    )
  }

  it.scoped(
    "headers that do not connect are ignored while our getheaders is unanswered; once it is late each is answered with our locator, ten times, then the peer is dropped",
    () =>
      run(
        Effect.gen(function* () {
          const r = makeRemote(1)
          r.answerHeaders = false
          yield* connect([r])
          const sync = yield* Sync
          const orphan = new HeadersMessage(
            { headers: [remote.blocks[50]!.header] },
            { disableValidation: true },
          )
          // our getheaders from the connect is unanswered: its announcements cannot connect yet (a peer
          // mining faster than we catch up): not counted, and no getheaders storm
          for (let i = 0; i < 10; i++) yield* sync.receive(r.peer, orphan)
          yield* settle([r], 500)
          expect(r.peer.sentOf("getheaders").length).toBe(1)
          // once a getheaders is late (the block timeout, 60 s), an unconnecting message counts and is
          // answered with a locator (which is then awaited in turn)
          for (let i = 0; i < 10; i++) {
            yield* TestClock.adjust("61 seconds")
            yield* sync.receive(r.peer, orphan)
            yield* settle([r], 50)
          }
          expect(r.peer.sentOf("getheaders").length).toBe(11)
          expect(r.peer.disconnected).toBeUndefined()
          yield* TestClock.adjust("61 seconds")
          yield* sync.receive(r.peer, orphan)
          yield* pumpUntil(
            [r],
            Effect.sync(() => r.peer.disconnected !== undefined),
          )
          expect((yield* stats(r.peer)).banScore).toBe(0)
        }),
      ),
  )

  it.scoped("a block that breaks a rule costs the peer its ban score and the connection", () =>
    run(
      Effect.gen(function* () {
        const r = makeRemote(1)
        r.answerHeaders = false
        yield* connect([r])
        const sync = yield* Sync
        const fork = new TestChain(regtest, backend, miner)
        const greedy = fork.candidate([], { coinbase: fork.coinbase(51n * 100_000_000n) })
        yield* sync.receiveBlock(r.peer, encodeBlock(greedy))
        yield* pumpUntil(
          [r],
          Effect.sync(() => r.peer.disconnected !== undefined),
        )
        expect(r.peer.disconnected).toBe("invalid block: bad-cb-amount")
        expect((yield* stats(r.peer)).banScore).toBe(100)
        expect(yield* tipHeight).toBe(0)
      }),
    ),
  )
})

describe("Sync actor: announcements", () => {
  it.scoped(
    "an inv of an unknown block is answered with getheaders up to it, then the block is fetched",
    () =>
      run(
        Effect.gen(function* () {
          yield* submitUpTo(20)
          const r = makeRemote(1, { height: 20 })
          yield* connect([r])
          yield* settle([r], 500)
          r.peer.clear()
          r.cursor = 0
          r.height = 21
          const sync = yield* Sync
          yield* sync.receive(
            r.peer,
            new InvMessage({ items: [{ type: INV_BLOCK, hash: remote.hashes[21]! }] }),
          )
          yield* pumpUntil([r], tipIs(21))
          const [getheaders] = r.peer.sentOf("getheaders")
          expect(toHex(getheaders!.stop)).toBe(toHex(remote.hashes[21]!))
          // the locator starts at the best header's parent, so the answer is never empty
          expect(toHex(getheaders!.locator[0]!)).toBe(toHex(remote.hashes[19]!))
          expect(r.requests.map((q) => q.height)).toEqual([21])
        }),
      ),
  )

  it.scoped(
    "a new tip goes as headers to sendheaders peers, as an inv to the others, not back to its source",
    () =>
      run(
        Effect.gen(function* () {
          const viaHeaders = makeRemote(1, { height: 30 })
          const viaInv = makeRemote(2, { height: 30 })
          const source = makeRemote(3, { height: 30 })
          const remotes = [viaHeaders, viaInv, source]
          yield* connect(remotes)
          const sync = yield* Sync
          yield* sync.receive(viaHeaders.peer, new SendHeadersMessage())
          yield* sync.receive(source.peer, new SendHeadersMessage())
          // the node syncs from the three; they have everything, so nothing is announced to them
          yield* pumpUntil(remotes, tipIs(30))
          yield* settle(remotes, 500)
          for (const r of remotes)
            expect(r.peer.sentOf("inv").length + r.peer.sentOf("headers").length).toBe(0)
          for (const r of remotes) r.peer.clear()
          for (const r of remotes) r.cursor = 0

          // the source announces block 31 with its header (BIP130); the node fetches it from the source
          source.height = 31
          yield* sync.receive(source.peer, new HeadersMessage({ headers: [remote.blocks[31]!.header] }))
          yield* pumpUntil(remotes, tipIs(31))
          yield* settle(remotes, 500)

          const [headers] = viaHeaders.peer.sentOf("headers")
          expect(headers?.headers.map((h) => toHex(headerHash(h)))).toEqual([toHex(remote.hashes[31]!)])
          expect(viaHeaders.peer.sentOf("inv")).toEqual([])
          const invs = viaInv.peer.sentOf("inv")
          expect(invs.map((m) => m.items.map((i) => toHex(i.hash)))).toEqual([[toHex(remote.hashes[31]!)]])
          expect(viaInv.peer.sentOf("headers")).toEqual([])
          expect(source.peer.sent.map((s) => s.command)).toEqual(["getdata"])

          // a block of our own (a miner's) goes to everybody, once
          yield* Effect.flatMap(Chain, (c) => c.submitBlock(encoded.get(toHex(remote.hashes[32]!))!))
          yield* settle(remotes, 500)
          expect(viaHeaders.peer.sentOf("headers").length).toBe(2)
          expect(viaInv.peer.sentOf("inv").length).toBe(2)
          const [own] = source.peer.sentOf("headers")
          expect(own?.headers.map((h) => toHex(headerHash(h)))).toEqual([toHex(remote.hashes[32]!)])
        }),
      ),
  )

  it.scoped(
    "a peer that is behind is not sent blocks it cannot use, and the node does not announce while catching up",
    () =>
      run(
        Effect.gen(function* () {
          const ahead = makeRemote(1)
          const behind = makeRemote(2, { height: 0 })
          const remotes = [ahead, behind]
          yield* connect(remotes)
          yield* pumpUntil(remotes, tipIs(TOP))
          yield* settle(remotes, 500)
          // behind has nothing to offer: never asked for a block
          expect(behind.requests).toEqual([])
          // 2,100 tip changes while syncing, one announcement once synced: the inv of the tip
          const invs = behind.peer.sentOf("inv")
          expect(invs.map((m) => m.items.map((i) => toHex(i.hash)))).toEqual([[toHex(remote.hashes[TOP]!)]])
          expect(ahead.peer.sentOf("inv")).toEqual([])
          expect(ahead.peer.sentOf("headers")).toEqual([])
        }),
      ),
  )
})

describe("Sync actor: duplicates", () => {
  it.scoped("a stored block sent again unasked is looked up by its hash and not handed to the Chain", () => {
    let submitted = 0
    return run(
      Effect.gen(function* () {
        const sync = yield* Sync
        yield* submitUpTo(5)
        const r = makeRemote(1)
        r.answerHeaders = false
        yield* connect([r])
        yield* settle([r], 50)
        expect(submitted).toBe(5)
        const block = (h: number) => encoded.get(toHex(remote.hashes[h]!))!
        yield* sync.receiveBlock(r.peer, block(3))
        yield* sync.receiveBlock(r.peer, block(5))
        yield* settle([r], 200)
        expect(submitted).toBe(5)
        // the peer has it, so it knows its header: that much is learnt
        expect((yield* stats(r.peer)).syncedHeaders).toBe(5)
        // a block we lack goes to the Chain, asked for or not
        yield* sync.receiveBlock(r.peer, block(6))
        yield* pumpUntil([r], tipIs(6))
        expect(submitted).toBe(6)
        expect(r.peer.misbehaviors).toEqual([])
        expect(r.peer.disconnected).toBeUndefined()
      }),
      config,
      (chain) => ({
        ...chain,
        submitBlock: (bytes) =>
          Effect.suspend(() => {
            submitted++
            return chain.submitBlock(bytes)
          }),
      }),
    )
  })
})
