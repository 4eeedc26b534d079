import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, Layer, Option, Queue, Stream, TestClock } from "effect"
import { AddrBook, type AddrBookService } from "../../src/actors/AddrBook.js"
import { Chain, type ChainServiceApi } from "../../src/actors/Chain.js"
import { Mempool, type MempoolService } from "../../src/actors/Mempool.js"
import type { PeerHandle } from "../../src/actors/net.js"
import * as Peer from "../../src/actors/Peer.js"
import { Relay, type RelayMessage } from "../../src/actors/Relay.js"
import * as SpamFilter from "../../src/actors/SpamFilter.js"
import { Sync, type SyncMessage } from "../../src/actors/Sync.js"
import { defaultSpamPolicy, type SpamPolicy } from "../../src/actors/spamPolicy.js"
import { blockHashOf } from "../../src/consensus/hash.js"
import { regtest } from "../../src/consensus/params.js"
import { layerMemory } from "../../src/layers/ChainStore.js"
import { makeSimNetwork } from "../../src/layers/TransportSim.js"
import type { BlockHeader } from "../../src/schema/block.js"
import { encodeMessage, encodeRawFrame, type FrameEvent, Framer } from "../../src/schema/frame.js"
import { toHex } from "../../src/schema/hex.js"
import { hostToBytes } from "../../src/schema/netaddr.js"
import type { BlockHash } from "../../src/schema/primitives.js"
import {
  type AddrEntry,
  AddrMessage,
  type Command,
  GetAddrMessage,
  GetDataMessage,
  GetHeadersMessage,
  HeadersMessage,
  INV_BLOCK,
  INV_TX,
  type InvItem,
  InvMessage,
  MAX_HEADERS,
  NotFoundMessage,
  PingMessage,
  PongMessage,
  SendHeadersMessage,
  VerackMessage,
  VersionMessage,
  type WireMessage,
} from "../../src/schema/wire.js"
import { settle } from "../support/simnet.js"

const magic = regtest.magic
/** the host the Peer under test listens on, and the host the test (the far end) dials from */
const NEAR = "10.0.0.1"
const FAR = "10.0.0.2"
const PORT = 18444
/** the nonce the Peer under test puts in its version */
const NEAR_NONCE = 0x1234n
/** a nonce the hooks say is one of the node's own (a self-connection) */
const OWN_NONCE = 0x777n
const RAW: ReadonlySet<Command> = new Set<Command>(["block", "tx"])

const hash = (n: number): Uint8Array => new Uint8Array(32).fill(n)
const bytes = (n: number, size: number): Uint8Array =>
  Uint8Array.from({ length: size }, (_, i) => (n + i) & 0xff)
const header = (n: number): BlockHeader => ({
  version: 1,
  prev: hash(n) as BlockHash,
  merkleRoot: hash(n + 1),
  time: 1_700_000_000 + n,
  bits: 0x207fffff,
  nonce: n,
})

/** what the far end says in its version */
const farVersion = (nonce = 0x99n) =>
  new VersionMessage({
    protocolVersion: 1,
    services: 5,
    bestHeight: 42,
    userAgent: "/far:1.0/",
    nonce,
    listenPort: 18555,
    theirAddress: { host: hostToBytes("203.0.113.7")!, port: 40_000 },
  })

const addrEntries: ReadonlyArray<AddrEntry> = [
  { time: 1_700_000_000, services: 1, host: hostToBytes("10.5.0.1")!, port: 18444 },
  { time: 1_700_000_001, services: 1, host: hostToBytes("10.6.0.1")!, port: 18444 },
]

/** Calls records what the Peer handed to the stub services and hooks. */
interface Calls {
  readonly ready: Array<PeerHandle>
  readonly syncConnected: Array<number>
  readonly syncDisconnected: Array<number>
  readonly relayConnected: Array<number>
  readonly relayDisconnected: Array<number>
  readonly syncReceive: Array<SyncMessage>
  readonly syncBlocks: Array<Uint8Array>
  readonly relayReceive: Array<RelayMessage>
  readonly relayTxs: Array<Uint8Array>
  readonly headersAfter: Array<{
    readonly locator: ReadonlyArray<BlockHash>
    readonly stop: BlockHash
    readonly max: number
  }>
  readonly addGossip: Array<ReadonlyArray<AddrEntry>>
  readonly getAddr: Array<number>
}

/** stubs are the services Peer.run needs, each recording its calls; Chain and Mempool answer from maps. */
const stubs = (store: {
  readonly blocks: Map<string, Uint8Array>
  readonly txs: Map<string, Uint8Array>
  readonly headers: ReadonlyArray<BlockHeader>
}) => {
  const calls: Calls = {
    ready: [],
    syncConnected: [],
    syncDisconnected: [],
    relayConnected: [],
    relayDisconnected: [],
    syncReceive: [],
    syncBlocks: [],
    relayReceive: [],
    relayTxs: [],
    headersAfter: [],
    addGossip: [],
    getAddr: [],
  }
  const chain = {
    tip: Effect.succeed({ hash: hash(7), height: 7, chainwork: 8n, header: header(7), medianTimePast: 0 }),
    block: (h: BlockHash) => Effect.succeed(Option.fromNullable(store.blocks.get(toHex(h)))),
    headersAfter: (locator: ReadonlyArray<BlockHash>, stop: BlockHash, max: number) =>
      Effect.sync(() => {
        calls.headersAfter.push({ locator, stop, max })
        return store.headers
      }),
  } as unknown as ChainServiceApi
  const mempool = {
    get: (txid: Uint8Array) =>
      Effect.succeed(Option.map(Option.fromNullable(store.txs.get(toHex(txid))), (b) => ({ bytes: b }))),
  } as unknown as MempoolService
  const record =
    <A>(into: Array<A>) =>
    (a: A) =>
      Effect.sync(() => void into.push(a))
  const addrBook = {
    addGossip: (_from: unknown, entries: ReadonlyArray<AddrEntry>) =>
      Effect.sync(() => {
        calls.addGossip.push(entries)
        return [] as ReadonlyArray<AddrEntry>
      }),
    getAddr: Effect.sync(() => {
      calls.getAddr.push(1)
      return addrEntries
    }),
  } as unknown as AddrBookService
  const layer = Layer.mergeAll(
    Layer.succeed(Chain, chain),
    Layer.succeed(Mempool, mempool),
    Layer.succeed(Sync, {
      peerConnected: (p) => record(calls.syncConnected)(p.info.id),
      peerDisconnected: record(calls.syncDisconnected),
      receive: (_p, msg) => record(calls.syncReceive)(msg),
      receiveBlock: (_p, payload) => record(calls.syncBlocks)(payload),
    }),
    Layer.succeed(Relay, {
      peerConnected: (p) => record(calls.relayConnected)(p.info.id),
      peerDisconnected: record(calls.relayDisconnected),
      receive: (_p, msg) => record(calls.relayReceive)(msg),
      receiveTx: (_p, payload) => record(calls.relayTxs)(payload),
    }),
    Layer.succeed(AddrBook, addrBook),
  )
  return { calls, layer }
}

interface Setup {
  /** which side of the connection the Peer under test is on (default: inbound, the listener's) */
  readonly direction?: "inbound" | "outbound"
  readonly options?: Partial<Peer.PeerOptions>
  /** the far end reads what it is sent (default true) */
  readonly farReads?: boolean
  readonly receiveBufferChunks?: number
  /** what hooks.ready answers */
  readonly admit?: boolean
  /** overrides of the spam policy the connection's guard applies */
  readonly spam?: Partial<SpamPolicy>
}

/**
 * start runs Peer.run (peer id 1) over a sim connection between NEAR (listening) and FAR (dialling);
 * the test plays the other end with raw frames.
 */
const start = (setup: Setup = {}) =>
  Effect.gen(function* () {
    const sim = yield* makeSimNetwork(
      setup.receiveBufferChunks === undefined
        ? { seed: 1 }
        : { seed: 1, receiveBufferChunks: setup.receiveBufferChunks },
    )
    const listener = yield* sim.transport(NEAR).listen({ host: NEAR, port: PORT })
    const dialled = yield* sim.transport(FAR).connect(listener.local)
    const accepted = yield* Queue.take(listener.accepted)
    const [near, far] = setup.direction === "outbound" ? [dialled, accepted] : [accepted, dialled]
    const store = {
      blocks: new Map<string, Uint8Array>(),
      txs: new Map<string, Uint8Array>(),
      headers: [header(1), header(2)],
    }
    const { calls, layer } = stubs(store)
    const options: Peer.PeerOptions = {
      ...Peer.defaultPeerTimings,
      magic,
      services: 1,
      userAgent: "/near:0.1/",
      listenPort: PORT,
      static: false,
      nonce: NEAR_NONCE,
      ...setup.options,
    }
    const hooks: Peer.PeerHooks = {
      isOwnNonce: (n) => n === OWN_NONCE,
      ready: (peer) =>
        Effect.sync(() => {
          calls.ready.push(peer)
          return setup.admit ?? true
        }),
      relayAddr: () => Effect.void,
    }
    const spam = yield* SpamFilter.make({ ...defaultSpamPolicy, ...setup.spam }).pipe(
      Effect.provide(layerMemory),
    )
    const admission = yield* spam.admit(near.remote, near.direction, false)
    if (admission._tag === "Refused")
      throw new Error(`spam filter refused the test connection: ${admission.reason}`)
    const fiber = yield* Effect.fork(
      Peer.run(1, near, options, hooks, admission.guard).pipe(Effect.provide(layer)),
    )

    const received: Array<FrameEvent> = []
    const framer = new Framer(magic, RAW)
    const reader =
      setup.farReads === false
        ? undefined
        : yield* Effect.fork(
            Stream.runForEach(far.read, (chunk) =>
              Effect.sync(() => void received.push(...framer.push(chunk))),
            ),
          )
    yield* settle

    /** write sends frames from the far end and lets the Peer handle them */
    const write = (...frames: ReadonlyArray<Uint8Array>) =>
      Effect.gen(function* () {
        for (const f of frames) yield* far.write(f)
        yield* settle
        yield* settle
      })
    const send = (...msgs: ReadonlyArray<WireMessage>) => write(...msgs.map((m) => encodeMessage(magic, m)))
    /** messages are the decoded messages of one command the far end received */
    const messages = <C extends Command>(command: C) =>
      received.flatMap((e) =>
        e._tag === "Message" && e.message._tag === command
          ? [e.message as Extract<WireMessage, { readonly _tag: C }>]
          : [],
      )
    const commands = () =>
      received.map((e) => (e._tag === "Message" ? e.message._tag : e._tag === "Raw" ? e.command : "error"))
    const raws = (command: Command) =>
      received.flatMap((e) => (e._tag === "Raw" && e.command === command ? [e.payload] : []))
    /** handshake completes the version/verack exchange from the far end */
    const handshake = Effect.gen(function* () {
      if (setup.direction === "outbound") yield* settle // its version is on the way
      yield* send(farVersion(), new VerackMessage())
      expect(calls.ready).toHaveLength(1)
      return calls.ready[0]!
    })
    /** tick advances the clock and lets the woken fibers run */
    const tick = (d: Duration.DurationInput) => Effect.zipRight(TestClock.adjust(d), settle)
    return {
      sim,
      near,
      far,
      fiber,
      reader,
      received,
      calls,
      store,
      write,
      send,
      messages,
      commands,
      raws,
      handshake,
      tick,
    }
  })

/** ended is the Peer's result once it returned; none while it runs. */
const ended = (fiber: Fiber.RuntimeFiber<string>) =>
  Effect.map(
    Fiber.poll(fiber),
    Option.map((exit) => (Exit.isSuccess(exit) ? exit.value : "failed")),
  )

describe("Peer actor over a sim connection", () => {
  it.scoped("an inbound peer answers our version with its version and verack, then registers once", () =>
    Effect.gen(function* () {
      const p = yield* start()
      // inbound: nothing is sent before the far end's version
      expect(p.received).toHaveLength(0)
      yield* p.send(farVersion())
      expect(p.commands()).toEqual(["version", "verack"])
      const version = p.messages("version")[0]!
      expect(version.nonce).toBe(NEAR_NONCE)
      expect(version.bestHeight).toBe(7)
      expect(version.userAgent).toBe("/near:0.1/")
      expect(version.listenPort).toBe(PORT)
      // the address it sees us at: the far end's host and port
      expect(version.theirAddress.host).toEqual(hostToBytes(FAR))
      expect(version.theirAddress.port).toBe(p.far.local.port)
      // not ready until our verack
      expect(p.calls.ready).toHaveLength(0)
      yield* p.send(new VerackMessage())
      expect(p.calls.ready).toHaveLength(1)
      const info = p.calls.ready[0]!.info
      expect(info).toMatchObject({
        id: 1,
        addr: p.far.local,
        inbound: true,
        transport: "tcp",
        static: false,
        version: 1,
        subver: "/far:1.0/",
        services: 5,
        startingHeight: 42,
        listenPort: 18555,
        theirView: { host: "203.0.113.7", port: 40_000 },
      })
      expect(p.calls.syncConnected).toEqual([1])
      expect(p.calls.relayConnected).toEqual([1])
      // an inbound peer sends no getaddr
      expect(p.commands()).toEqual(["version", "verack"])
      // the far end closes: the Peer returns and tells Sync and Relay
      yield* p.far.close
      yield* settle
      expect(yield* ended(p.fiber)).toEqual(Option.some("closed by the peer"))
      expect(p.calls.syncDisconnected).toEqual([1])
      expect(p.calls.relayDisconnected).toEqual([1])
    }),
  )

  it.scoped(
    "an outbound peer sends its version first and asks for addresses once the handshake is done",
    () =>
      Effect.gen(function* () {
        const p = yield* start({ direction: "outbound" })
        expect(p.commands()).toEqual(["version"])
        const peer = yield* p.handshake
        expect(peer.info.inbound).toBe(false)
        expect(p.commands()).toEqual(["version", "verack", "getaddr"])
      }),
  )

  it.scoped("a peer refused by the manager is disconnected", () =>
    Effect.gen(function* () {
      const p = yield* start({ admit: false })
      yield* p.send(farVersion(), new VerackMessage())
      expect(yield* ended(p.fiber)).toEqual(Option.some("refused by the peer manager"))
      expect(p.calls.syncConnected).toEqual([])
    }),
  )

  it.scoped("a peer that never sends its version is dropped after the handshake timeout", () =>
    Effect.gen(function* () {
      const p = yield* start({ options: { handshakeTimeout: Duration.seconds(60) } })
      yield* p.tick("59 seconds")
      expect(yield* ended(p.fiber)).toEqual(Option.none())
      yield* p.tick("1 second")
      expect(yield* ended(p.fiber)).toEqual(Option.some("handshake timeout"))
      // the connection is closed: the far end's read ended
      yield* settle
      expect(Option.isSome(yield* Fiber.poll(p.reader!))).toBe(true)
      expect(p.calls.ready).toHaveLength(0)
      expect(p.received).toHaveLength(0)
    }),
  )

  it.scoped("a handshaken peer is not dropped by the handshake timeout", () =>
    Effect.gen(function* () {
      const p = yield* start()
      yield* p.handshake
      yield* p.tick("61 seconds")
      expect(yield* ended(p.fiber)).toEqual(Option.none())
    }),
  )

  it.scoped("a version carrying one of our own nonces is a connection to ourselves", () =>
    Effect.gen(function* () {
      const p = yield* start()
      yield* p.send(farVersion(OWN_NONCE))
      expect(yield* ended(p.fiber)).toEqual(Option.some("connected to self"))
      expect(p.messages("version")).toHaveLength(0)
      expect(p.calls.ready).toHaveLength(0)
    }),
  )

  it.scoped("answers our ping with the same nonce, pings every interval and measures the pong", () =>
    Effect.gen(function* () {
      const p = yield* start({
        options: { pingInterval: Duration.minutes(2), pingTimeout: Duration.minutes(20) },
      })
      const peer = yield* p.handshake
      yield* p.send(new PingMessage({ nonce: 123_456_789n }))
      expect(p.messages("pong").map((m) => m.nonce)).toEqual([123_456_789n])

      expect(p.messages("ping")).toHaveLength(0)
      yield* p.tick("2 minutes")
      const [ping] = p.messages("ping")
      expect(ping).toBeDefined()
      expect((yield* peer.stats).pingMs).toBeUndefined()
      yield* p.tick("150 millis")
      // a pong with another nonce is not an answer
      yield* p.send(new PongMessage({ nonce: ping!.nonce + 1n }))
      expect((yield* peer.stats).pingMs).toBeUndefined()
      yield* p.send(new PongMessage({ nonce: ping!.nonce }))
      expect((yield* peer.stats).pingMs).toBe(150)

      // answered pings keep the peer connected well past the ping timeout
      for (let i = 0; i < 15; i++) {
        yield* p.tick("2 minutes")
        const last = p.messages("ping").at(-1)!
        yield* p.send(new PongMessage({ nonce: last.nonce }))
      }
      expect(p.messages("ping").length).toBeGreaterThanOrEqual(15)
      expect(yield* ended(p.fiber)).toEqual(Option.none())
    }),
  )

  it.scoped("a ping left unanswered past the ping timeout drops the peer", () =>
    Effect.gen(function* () {
      const p = yield* start({
        options: {
          pingInterval: Duration.minutes(2),
          pingTimeout: Duration.minutes(20),
          idleTimeout: Duration.hours(2),
        },
      })
      yield* p.handshake
      yield* p.tick("2 minutes")
      expect(p.messages("ping")).toHaveLength(1)
      // 20 minutes after the ping it is still within the timeout
      for (let i = 0; i < 10; i++) yield* p.tick("2 minutes")
      expect(yield* ended(p.fiber)).toEqual(Option.none())
      // no second ping while one is outstanding
      expect(p.messages("ping")).toHaveLength(1)
      yield* p.tick("2 minutes")
      expect(yield* ended(p.fiber)).toEqual(Option.some("ping timeout"))
    }),
  )

  it.scoped("a peer that sends nothing for the idle timeout is dropped", () =>
    Effect.gen(function* () {
      const p = yield* start({
        options: {
          pingInterval: Duration.minutes(2),
          pingTimeout: Duration.hours(2),
          idleTimeout: Duration.minutes(20),
        },
      })
      yield* p.handshake
      for (let i = 0; i < 10; i++) yield* p.tick("2 minutes")
      expect(yield* ended(p.fiber)).toEqual(Option.none())
      yield* p.tick("2 minutes")
      expect(yield* ended(p.fiber)).toEqual(Option.some("idle timeout"))
    }),
  )

  it.scoped("routes inv and notfound items by type: transactions to Relay, blocks to Sync", () =>
    Effect.gen(function* () {
      const p = yield* start()
      yield* p.handshake
      const tx1: InvItem = { type: INV_TX, hash: hash(1) }
      const block2: InvItem = { type: INV_BLOCK, hash: hash(2) }
      const tx3: InvItem = { type: INV_TX, hash: hash(3) }
      yield* p.send(new InvMessage({ items: [tx1, block2, tx3] }))
      expect(p.calls.relayReceive).toEqual([new InvMessage({ items: [tx1, tx3] })])
      expect(p.calls.syncReceive).toEqual([new InvMessage({ items: [block2] })])
      // an inv of blocks only does not bother Relay
      yield* p.send(new InvMessage({ items: [block2] }))
      expect(p.calls.relayReceive).toHaveLength(1)
      expect(p.calls.syncReceive).toHaveLength(2)
      yield* p.send(new NotFoundMessage({ items: [block2, tx3] }))
      expect(p.calls.relayReceive.at(-1)).toEqual(new NotFoundMessage({ items: [tx3] }))
      expect(p.calls.syncReceive.at(-1)).toEqual(new NotFoundMessage({ items: [block2] }))
      // headers and sendheaders are Sync's
      yield* p.send(new HeadersMessage({ headers: [header(9)] }), new SendHeadersMessage())
      expect(p.calls.syncReceive.slice(-2).map((m) => m._tag)).toEqual(["headers", "sendheaders"])
      // addresses go to the AddrBook
      yield* p.send(new AddrMessage({ entries: [...addrEntries] }))
      expect(p.calls.addGossip).toHaveLength(1)
      expect(p.calls.addGossip[0]!.map((e) => e.port)).toEqual([18444, 18444])
    }),
  )

  it.scoped("block and tx frames reach Sync and Relay undecoded, byte for byte", () =>
    Effect.gen(function* () {
      const p = yield* start()
      yield* p.handshake
      const block = bytes(1, 1_000)
      const tx = bytes(2, 250)
      yield* p.write(encodeRawFrame(magic, "block", block), encodeRawFrame(magic, "tx", tx))
      expect(p.calls.syncBlocks).toEqual([block])
      expect(p.calls.relayTxs).toEqual([tx])
    }),
  )

  it.scoped(
    "serves getdata: blocks from the Chain and transactions from the Mempool raw, the rest in one notfound",
    () =>
      Effect.gen(function* () {
        const p = yield* start()
        yield* p.handshake
        const block = bytes(3, 2_000)
        const tx = bytes(4, 300)
        p.store.blocks.set(toHex(hash(10)), block)
        p.store.txs.set(toHex(hash(11)), tx)
        const missingBlock: InvItem = { type: INV_BLOCK, hash: hash(12) }
        const missingTx: InvItem = { type: INV_TX, hash: hash(13) }
        const before = p.received.length
        yield* p.send(
          new GetDataMessage({
            items: [
              { type: INV_BLOCK, hash: hash(10) },
              missingBlock,
              { type: INV_TX, hash: hash(11) },
              missingTx,
            ],
          }),
        )
        expect(p.commands().slice(before)).toEqual(["block", "tx", "notfound"])
        expect(p.raws("block")).toEqual([block])
        expect(p.raws("tx")).toEqual([tx])
        expect(p.messages("notfound")).toEqual([new NotFoundMessage({ items: [missingBlock, missingTx] })])
        // all found: no notfound
        yield* p.send(new GetDataMessage({ items: [{ type: INV_TX, hash: hash(11) }] }))
        expect(p.raws("tx")).toHaveLength(2)
        expect(p.messages("notfound")).toHaveLength(1)
      }),
  )

  it.scoped("serves getheaders from Chain.headersAfter", () =>
    Effect.gen(function* () {
      const p = yield* start()
      yield* p.handshake
      const locator = [hash(20), hash(21)]
      yield* p.send(new GetHeadersMessage({ locator, stop: new Uint8Array(32) }))
      expect(p.calls.headersAfter).toHaveLength(1)
      expect(p.calls.headersAfter[0]!.locator).toEqual(locator)
      expect(p.calls.headersAfter[0]!.stop).toEqual(new Uint8Array(32))
      expect(p.calls.headersAfter[0]!.max).toBe(MAX_HEADERS)
      const [answer] = p.messages("headers")
      expect(answer?.headers).toEqual([header(1), header(2)])
    }),
  )

  it.scoped("answers getaddr once per connection, and only to an inbound peer", () =>
    Effect.gen(function* () {
      const inbound = yield* start()
      yield* inbound.handshake
      yield* inbound.send(new GetAddrMessage())
      yield* inbound.send(new GetAddrMessage())
      expect(inbound.messages("addr")).toHaveLength(1)
      expect(inbound.messages("addr")[0]!.entries).toEqual(addrEntries)
      expect(inbound.calls.getAddr).toHaveLength(1)

      const outbound = yield* start({ direction: "outbound" })
      yield* outbound.handshake
      yield* outbound.send(new GetAddrMessage())
      expect(outbound.messages("addr")).toHaveLength(0)
      expect(outbound.calls.getAddr).toHaveLength(0)
    }),
  )

  it.scoped("a frame with a bad checksum scores the peer but keeps it; a wrong magic drops it", () =>
    Effect.gen(function* () {
      const p = yield* start()
      const peer = yield* p.handshake
      const corrupt = encodeMessage(magic, new PingMessage({ nonce: 5n }))
      corrupt[20]! ^= 0xff // first checksum byte
      yield* p.write(corrupt)
      yield* p.send(new PingMessage({ nonce: 6n }))
      expect(yield* ended(p.fiber)).toEqual(Option.none())
      expect(p.messages("pong").map((m) => m.nonce)).toEqual([6n])
      expect((yield* peer.stats).banScore).toBe(50)

      const foreign = encodeMessage(Uint8Array.of(1, 2, 3, 4), new PingMessage({ nonce: 7n }))
      yield* p.write(foreign)
      const reason = yield* ended(p.fiber)
      // a wrong magic scores 100: the peer is dropped and banned
      expect(Option.getOrElse(reason, () => "running")).toMatch(/^banned: bad frame/)
      expect(p.messages("pong")).toHaveLength(1)
    }),
  )

  it.scoped("a bad payload followed by junk in one chunk scores each for what it is (20, then 100)", () =>
    Effect.gen(function* () {
      const p = yield* start()
      const peer = yield* p.handshake
      // a ping whose 7-byte payload cannot hold its nonce, then a wrong magic, in one write
      const bad = encodeRawFrame(magic, "ping", bytes(1, 7))
      yield* p.write(Uint8Array.from([...bad, 0, 0, 0, 0]))
      const reason = Option.getOrElse(yield* ended(p.fiber), () => "running")
      expect(reason).toMatch(/^banned: bad frame: cannot decode frame\.magic/)
      expect((yield* peer.stats).banScore).toBe(120)
    }),
  )

  it.scoped("a far end that does not read is dropped once the unsent bytes pass the send budget", () =>
    Effect.gen(function* () {
      const p = yield* start({
        farReads: false,
        receiveBufferChunks: 2,
        options: { sendBudgetBytes: 20_000 },
      })
      // version and verack fill the far end's 2-chunk receive buffer
      const peer = yield* p.handshake
      yield* peer.sendRaw("block", bytes(1, 8_000))
      yield* settle
      expect(yield* p.near.pendingWriteBytes).toBeGreaterThan(8_000)
      expect(yield* ended(p.fiber)).toEqual(Option.none())
      yield* peer.sendRaw("block", bytes(2, 8_000))
      yield* settle
      expect(yield* ended(p.fiber)).toEqual(Option.none())
      yield* peer.send(
        new InvMessage({ items: Array.from({ length: 200 }, (_, i) => ({ type: INV_TX, hash: hash(i) })) }),
      )
      yield* settle
      expect(yield* ended(p.fiber)).toEqual(Option.some("send budget exceeded (the peer does not read)"))
      // the connection was reset, not flushed
      expect(yield* p.near.pendingWriteBytes).toBe(0)
      // later sends are no-ops
      const sent = (yield* peer.stats).bytesSent
      yield* peer.send(new PingMessage({ nonce: 1n }))
      expect((yield* peer.stats).bytesSent).toBe(sent)
    }),
  )

  describe("the spam filter's guard", () => {
    it.scoped("a second version after the handshake is a protocol violation: scored and dropped", () =>
      Effect.gen(function* () {
        const p = yield* start()
        const peer = yield* p.handshake
        yield* p.send(farVersion())
        expect(Option.getOrElse(yield* ended(p.fiber), () => "running")).toBe("a second version")
        expect((yield* peer.stats).banScore).toBe(20)
        expect(p.calls.ready).toHaveLength(1)
      }),
    )

    it.scoped("a message before version, or a tx frame before the handshake, drops the peer", () =>
      Effect.gen(function* () {
        const early = yield* start()
        yield* early.send(new PingMessage({ nonce: 1n }))
        expect(Option.getOrElse(yield* ended(early.fiber), () => "running")).toBe("ping before the handshake")
        expect(early.messages("pong")).toHaveLength(0)

        const raw = yield* start()
        yield* raw.write(encodeRawFrame(magic, "tx", bytes(9, 100)))
        expect(Option.getOrElse(yield* ended(raw.fiber), () => "running")).toBe("tx before the handshake")
        expect(raw.calls.relayTxs).toHaveLength(0)
      }),
    )

    it.scoped("an inv beyond the inv bucket is dropped unread and scored; ten such floods ban the peer", () =>
      Effect.gen(function* () {
        const p = yield* start({ spam: { inv: { rate: 10, burst: 100 } } })
        const peer = yield* p.handshake
        const inv = (n: number, from: number) =>
          new InvMessage({
            items: Array.from({ length: n }, (_, i) => ({ type: INV_TX, hash: hash(from + i) })),
          })
        yield* p.send(inv(100, 0))
        expect(p.calls.relayReceive).toHaveLength(1)
        // the bucket is empty: a 50,000-entry inv is refused whole, without reaching Relay
        yield* p.send(inv(50_000, 0))
        expect(p.calls.relayReceive).toHaveLength(1)
        expect((yield* peer.stats).banScore).toBe(10)
        // after a second the bucket holds 10 entries again
        yield* p.tick(Duration.seconds(1))
        yield* p.send(inv(10, 0))
        expect(p.calls.relayReceive).toHaveLength(2)
        for (let i = 0; i < 9 && Option.isNone(yield* ended(p.fiber)); i++) yield* p.send(inv(50_000, 0))
        expect(Option.getOrElse(yield* ended(p.fiber), () => "running")).toMatch(/^banned/)
        expect((yield* peer.stats).banScore).toBe(100)
        expect(p.calls.relayReceive).toHaveLength(2)
      }),
    )

    it.scoped(
      "blocks nobody asked for pass within the unrequested allowance; beyond it they are dropped and scored",
      () =>
        Effect.gen(function* () {
          const p = yield* start({ spam: { unrequestedBlocks: { rate: 0, burst: 2 } } })
          const peer = yield* p.handshake
          for (let i = 0; i < 3; i++) yield* p.write(encodeRawFrame(magic, "block", bytes(i, 200)))
          expect(p.calls.syncBlocks).toHaveLength(2)
          expect((yield* peer.stats).banScore).toBe(10)
          // a block we asked for always passes
          const wanted = bytes(7, 200)
          yield* peer.send(
            new GetDataMessage({ items: [{ type: INV_BLOCK, hash: blockHashOf(wanted.subarray(0, 80)) }] }),
          )
          yield* p.write(encodeRawFrame(magic, "block", wanted))
          expect(p.calls.syncBlocks).toHaveLength(3)
          expect((yield* peer.stats).banScore).toBe(10)
        }),
    )

    it.scoped("a peer over its message bucket has the excess dropped: no pong for pings beyond it", () =>
      Effect.gen(function* () {
        const p = yield* start({ spam: { messages: { rate: 1, burst: 5 } } })
        yield* p.handshake // version and verack take 2 of the 5
        yield* p.send(...Array.from({ length: 6 }, (_, i) => new PingMessage({ nonce: BigInt(i) })))
        expect(p.messages("pong").map((m) => m.nonce)).toEqual([0n, 1n, 2n])
        expect(yield* ended(p.fiber)).toEqual(Option.none())
      }),
    )

    it.scoped("bytes beyond the byte bucket pause reading instead of being buffered", () =>
      Effect.gen(function* () {
        const p = yield* start({ spam: { bytes: { rate: 1_000, burst: 1_000 } } })
        yield* p.handshake
        // 2,000 bytes of pings: the second frame waits until the bucket repaid its debt
        const ping = (n: bigint) => encodeMessage(magic, new PingMessage({ nonce: n }))
        yield* p.write(Uint8Array.from([...ping(1n), ...new Uint8Array(0)]))
        const big = encodeRawFrame(magic, "tx", bytes(3, 3_000))
        yield* p.write(big, ping(2n))
        expect(p.calls.relayTxs).toHaveLength(1)
        expect(p.messages("pong").map((m) => m.nonce)).toEqual([1n])
        yield* p.tick(Duration.seconds(3))
        expect(p.messages("pong").map((m) => m.nonce)).toEqual([1n, 2n])
      }),
    )
  })
})
