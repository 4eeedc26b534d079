import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, Either, Option, Random, type Scope, Stream, TestClock } from "effect"
import { AddrBook } from "../../src/actors/AddrBook.js"
import { Chain } from "../../src/actors/Chain.js"
import { Mempool } from "../../src/actors/Mempool.js"
import type { ProbeEvent } from "../../src/actors/net.js"
import { Network, type PeerSummary } from "../../src/actors/PeerManager.js"
import { SpamFilter } from "../../src/actors/SpamFilter.js"
import { defaultSpamPolicy, FLOOD_SCORE, Misbehavior, scoreOf } from "../../src/actors/spamPolicy.js"
import { assembleBlock, makeCoinbase } from "../../src/consensus/assemble.js"
import { headerHash, validateBlock } from "../../src/consensus/checkBlock.js"
import { txidOf } from "../../src/consensus/hash.js"
import { regtest } from "../../src/consensus/params.js"
import { loadDefaultBackend } from "../../src/layers/Signatures.js"
import type { Connection, TransportError } from "../../src/layers/Transport.js"
import { makeSimNetwork, type SimNetwork } from "../../src/layers/TransportSim.js"
import { type Block, decodeBlock, encodeBlock } from "../../src/schema/block.js"
import type { NodeConfig } from "../../src/schema/config.js"
import { encodeMessage, encodeRawFrame, type FrameEvent, Framer } from "../../src/schema/frame.js"
import { toHex } from "../../src/schema/hex.js"
import { hostToBytes } from "../../src/schema/netaddr.js"
import { encodeTx, type Tx } from "../../src/schema/tx.js"
import {
  type AddrEntry,
  AddrMessage,
  type Command,
  HeadersMessage,
  INV_BLOCK,
  INV_TX,
  type InvItem,
  InvMessage,
  MAX_ADDR_ENTRIES,
  MAX_INV_ENTRIES,
  PingMessage,
  SERVICE_FULL,
  VerackMessage,
  VersionMessage,
  type WireMessage,
} from "../../src/schema/wire.js"
import { concat } from "../support/bytes.js"
import { pay } from "../support/chain.js"
import { blockRuleCases, COIN, makeRuleFixture, type RuleFixture, txRuleCases } from "../support/ruleCases.js"
import {
  P2P_PORT,
  quiet,
  type SimNode,
  settle,
  simConfig,
  simTime,
  startNode,
  waitUntil,
} from "../support/simnet.js"

/**
 * Spam and DoS hardening on a simulated network (TestClock): a real node, and test peers speaking
 * raw frames from their own sim hosts, so each test controls exactly what reaches the node and sees
 * exactly what comes back.
 */

const magic = regtest.magic
const RAW: ReadonlySet<Command> = new Set<Command>(["block", "tx"])
const NODE = "10.0.0.1"

let fixture: RuleFixture | undefined
/** theFixture is the consensus table's 102-block chain, mined once for the file. */
const theFixture = (): RuleFixture => {
  fixture ??= makeRuleFixture(loadDefaultBackend().backend)
  return fixture
}

/** seeded runs a test quietly with the node's randomness (nonces, address-book secret) seeded. */
const seeded =
  (seed: number) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    quiet(Effect.withRandom(effect, Random.make(seed)))

/** nodeConfig is a sim node at NODE that dials nobody (only the test's peers talk to it). */
const nodeConfig = (limits: Partial<NodeConfig["limits"]> = {}): NodeConfig => {
  const base = simConfig(NODE)
  return { ...base, limits: { ...base.limits, maxOutbound: 0, ...limits } }
}

/** fixtureTime sets the TestClock an hour past the fixture's tip: its blocks are recent, none too new. */
const fixtureTime = (f: RuleFixture) => TestClock.setTime(f.chain.context().now * 1000)

/** feedFixture gives the node the fixture's blocks directly (no network). */
const feedFixture = (node: SimNode, f: RuleFixture) =>
  node.run(
    Effect.flatMap(Chain, (chain) =>
      Effect.forEach(f.chain.blocks.slice(1), (b) => Effect.orDie(chain.submitBlock(encodeBlock(b))), {
        discard: true,
      }),
    ),
  )

const tipOf = (node: SimNode) => node.run(Effect.flatMap(Chain, (c) => c.tip))

/** peerOf is the node's view of the connection from `host` (none before its handshake or once it is gone). */
const peerOf = (node: SimNode, host: string): Effect.Effect<PeerSummary | undefined> =>
  node.run(
    Effect.map(
      Effect.flatMap(Network, (n) => n.peers),
      (peers) => peers.find((p) => p.info.addr.host === host),
    ),
  )

const scoreAt = (node: SimNode, host: string) => Effect.map(peerOf(node, host), (p) => p?.stats.banScore)

const isBanned = (node: SimNode, host: string) =>
  node.run(Effect.flatMap(SpamFilter, (s) => s.isBanned(host)))

/** banOf is the node's ban of exactly `host`, if any. */
const banOf = (node: SimNode, host: string) =>
  node.run(
    Effect.map(Effect.orDie(Effect.flatMap(SpamFilter, (s) => s.banned)), (bans) =>
      bans.find((b) => b.subnet === `${host}/32`),
    ),
  )

/** the version every test peer sends: a full node that listens nowhere (nothing for the node to dial back) */
const versionOf = (nonce: bigint) =>
  new VersionMessage({
    protocolVersion: 1,
    services: SERVICE_FULL,
    bestHeight: 0,
    userAgent: "/spam-test:0.1/",
    nonce,
    listenPort: 0,
    theirAddress: { host: hostToBytes(NODE)!, port: P2P_PORT },
  })

/** HANDSHAKE_BYTES is what a test peer sends for its handshake (version and verack frames). */
const HANDSHAKE_BYTES =
  encodeMessage(magic, versionOf(1n)).length + encodeMessage(magic, new VerackMessage()).length

/** hashOf is a distinct 32-byte hash for (label, n), for announcing things that do not exist. */
const hashOf = (label: number, n: number): Uint8Array => {
  const h = new Uint8Array(32)
  const view = new DataView(h.buffer)
  view.setUint32(0, 0x5eed_0000 + label)
  view.setUint32(4, n)
  return h
}

/**
 * settleUntil lets the woken fibers run, without moving the clock, until `condition` holds; it fails
 * after `turns` rounds (every wait is bounded).
 */
const settleUntil = (condition: Effect.Effect<boolean>, what: string, turns = 200) =>
  Effect.gen(function* () {
    for (let i = 0; i < turns; i++) {
      if (yield* condition) return
      yield* settle
    }
    return yield* Effect.fail(new Error(`${what}: not within ${turns} turns`))
  })

/** WirePeer is the test's end of one sim connection to the node, speaking raw frames. */
interface WirePeer {
  readonly host: string
  readonly conn: Connection
  /** how the node ended the connection: "closed" (it hung up) or "reset" (refused); undefined while open */
  readonly ended: () => string | undefined
  /** write sends frames and lets the node handle them */
  readonly write: (...frames: ReadonlyArray<Uint8Array>) => Effect.Effect<void>
  readonly send: (...msgs: ReadonlyArray<WireMessage>) => Effect.Effect<void>
  /** messages are the decoded messages of one command the node sent us */
  readonly messages: <C extends Command>(command: C) => Array<Extract<WireMessage, { readonly _tag: C }>>
  /** handshake sends version and verack and waits until the node has registered the peer */
  readonly handshake: Effect.Effect<void, Error>
}

/** dial connects from `host` to the node and reads everything it sends. */
const dial = (
  sim: SimNetwork,
  node: SimNode,
  host: string,
  nonce: bigint,
): Effect.Effect<WirePeer, TransportError, Scope.Scope> =>
  Effect.gen(function* () {
    const conn = yield* sim.transport(host).connect({ host: node.host, port: P2P_PORT })
    const received: Array<FrameEvent> = []
    const framer = new Framer(magic, RAW)
    let ended: string | undefined
    yield* Stream.runForEach(conn.read, (chunk) =>
      Effect.sync(() => void received.push(...framer.push(chunk))),
    ).pipe(
      Effect.match({
        onFailure: (e) => {
          ended = e.reason
        },
        onSuccess: () => {
          ended = "closed"
        },
      }),
      Effect.forkScoped,
    )
    const write = (...frames: ReadonlyArray<Uint8Array>) =>
      Effect.gen(function* () {
        // a write after the node hung up goes nowhere, as on a real socket
        for (const f of frames) yield* Effect.ignore(conn.write(f))
        yield* settle
      })
    const messages = <C extends Command>(command: C) =>
      received.flatMap((e) =>
        e._tag === "Message" && e.message._tag === command
          ? [e.message as Extract<WireMessage, { readonly _tag: C }>]
          : [],
      )
    const send = (...msgs: ReadonlyArray<WireMessage>) => write(...msgs.map((m) => encodeMessage(magic, m)))
    const handshake = Effect.gen(function* () {
      yield* send(versionOf(nonce), new VerackMessage())
      yield* settleUntil(
        Effect.map(
          peerOf(node, host),
          (p) => p !== undefined && messages("version").length === 1 && messages("verack").length === 1,
        ),
        `handshake of ${host}`,
      )
    })
    yield* settle
    return { host, conn, ended: () => ended, write, send, messages, handshake }
  })

const rawTx = (tx: Tx) => encodeRawFrame(magic, "tx", encodeTx(tx))
const rawBlock = (block: Block) => encodeRawFrame(magic, "block", encodeBlock(block))

describe("spam filter and DoS hardening on a simulated network", () => {
  it.scoped("each invalid-block and invalid-tx reason from the consensus table gets the right score", () =>
    seeded(1)(
      Effect.gen(function* () {
        const f = theFixture()
        yield* fixtureTime(f)
        const sim = yield* makeSimNetwork({ seed: 1 })
        // Each test peer's byte bucket holds exactly its handshake, so the node stops reading it
        // right after the frames under test (for a minute of the clock, which stands still here):
        // its Peer stays registered after Sync or Relay scored and dropped it, and Network.peers
        // still shows the score the node gave it.
        const node = yield* startNode(sim, nodeConfig(), {
          spam: { bytes: { rate: 1, burst: HANDSHAKE_BYTES } },
        })
        yield* feedFixture(node, f)
        expect((yield* tipOf(node)).height).toBe(102)

        let peers = 0
        /**
         * attack sends `frame` from a fresh host after a handshake, followed in the same write by an
         * inv of an unknown tx and an unknown block: Relay answers the one with getdata and Sync the
         * other with getheaders after they have handled the frame, so once both answers arrived (or
         * the node hung up) the frame's verdict is in.
         */
        const attack = (frame: Uint8Array) =>
          Effect.gen(function* () {
            peers++
            const host = `10.${peers}.0.2`
            const peer = yield* dial(sim, node, host, BigInt(peers))
            yield* peer.handshake
            const tx = hashOf(1, peers)
            const block = hashOf(2, peers)
            const barrier = new InvMessage({
              items: [
                { type: INV_TX, hash: tx },
                { type: INV_BLOCK, hash: block },
              ],
            })
            yield* peer.write(concat(frame, encodeMessage(magic, barrier)))
            const answered = () =>
              peer.messages("getdata").some((m) => m.items.some((i) => toHex(i.hash) === toHex(tx))) &&
              peer.messages("getheaders").some((m) => toHex(m.stop) === toHex(block))
            yield* settleUntil(
              Effect.sync(() => peer.ended() !== undefined || answered()),
              `the verdict on ${host}`,
            )
            const score = yield* scoreAt(node, host)
            const ban = yield* banOf(node, host)
            yield* peer.conn.close
            return {
              score,
              banned: ban !== undefined,
              dropped: peer.ended() !== undefined,
              banReason: ban?.reason,
            }
          })

        interface Row {
          readonly what: string
          readonly score: number | undefined
          readonly banned: boolean
          readonly dropped: boolean
        }
        const seen: Array<Row> = []
        const expected: Array<Row> = []
        /** any score drops a block's sender (Sync); a transaction's sender only at the ban (Relay) */
        const check = (what: string, frame: Uint8Array, reason: string, banScore: number) =>
          Effect.gen(function* () {
            const r = yield* attack(frame)
            seen.push({ what, score: r.score, banned: r.banned, dropped: r.dropped })
            expected.push({ what, score: banScore, banned: banScore >= 100, dropped: banScore > 0 })
            // a ban names the rule that caused it
            if (r.banned) expect(r.banReason, what).toContain(reason)
          })

        const blocks = blockRuleCases.flatMap((c) => {
          const built = c.build(f)
          // the cases with a UTXO view of their own break a rule only against that view
          return Array.isArray(built) ? [] : [{ ...c, block: built as Block }]
        })
        expect(blocks.length).toBe(blockRuleCases.length - 2)

        // headers-level failures, as a headers message (before the blocks: a refused header leaves no
        // trace, a refused block does)
        for (const c of blocks) {
          const v = validateBlock(c.block, f.chain.context(), f.chain.utxos, f.backend)
          if (Either.isRight(v) || v.left.scope !== "header") continue
          const headers = encodeMessage(magic, new HeadersMessage({ headers: [c.block.header] }))
          yield* check(`headers: ${c.rule}`, headers, c.reason, c.banScore)
        }
        // Over the wire a block must decode before any rule runs, and one that does not is scored as
        // malformed. The codec caps an input's witness at 100 bytes, so a coinbase of more than 100
        // bytes (bad-cb-length) arrives as a payload that does not decode.
        const undecodable = blocks.filter((c) => Either.isLeft(decodeBlock(encodeBlock(c.block))))
        expect(undecodable.map((c) => c.reason)).toEqual(["bad-cb-length"])
        for (const c of blocks) {
          const decoded = decodeBlock(encodeBlock(c.block))
          const score = Either.isLeft(decoded)
            ? scoreOf(Misbehavior.Malformed({ error: decoded.left }))
            : c.banScore
          yield* check(`block: ${c.rule}`, rawBlock(c.block), c.reason, score)
        }

        // a valid block on a stale branch (less work than the tip) is not the sender's fault
        const stale = f.chain.grind(
          assembleBlock(
            { prev: f.chain.hashes[100]!, time: f.chain.times[100]! + 30, bits: regtest.powLimitBits },
            [makeCoinbase(101, [pay(f.bob, 1n * COIN)], Uint8Array.of(7))],
          ),
        )
        yield* check("block: a valid block on a stale branch", rawBlock(stale), "", 0)
        const staleEntry = yield* node.run(Effect.flatMap(Chain, (c) => c.entry(headerHash(stale.header))))
        expect(Option.map(staleEntry, (e) => e.height)).toEqual(Option.some(101))
        expect((yield* tipOf(node)).height).toBe(102)

        for (const c of txRuleCases) yield* check(`tx: ${c.rule}`, rawTx(c.build(f)), c.reason, c.banScore)

        // a transaction conflicting with one in the pool: the sender may not have seen ours
        const honest = yield* dial(sim, node, "10.200.0.2", 200n)
        yield* honest.handshake
        yield* honest.write(rawTx(f.spend))
        const spendId = txidOf(encodeTx(f.spend))
        yield* settleUntil(
          Effect.map(node.run(Effect.flatMap(Mempool, (m) => m.get(spendId))), Option.isSome),
          "the honest spend in the pool",
        )
        const conflict = f.chain.spend([f.coin], [pay(f.alice, 48n * COIN)])
        yield* check("tx: conflicts with the pool", rawTx(conflict), "txn-mempool-conflict", 0)

        expect(seen).toEqual(expected)
        // every kind of verdict was reached: innocent, malformed, suspicious, provably invalid
        expect(new Set(expected.map((r) => r.score))).toEqual(new Set([0, 20, 50, 100]))
      }),
    ),
  )

  it.scoped("a 50,000-entry inv flood is cut off by the inv bucket", () =>
    seeded(2)(
      Effect.gen(function* () {
        const f = theFixture()
        yield* fixtureTime(f)
        const sim = yield* makeSimNetwork({ seed: 2 })
        const node = yield* startNode(sim, nodeConfig())
        yield* feedFixture(node, f)
        const attacker = yield* dial(sim, node, "10.66.0.2", 1n)
        const honest = yield* dial(sim, node, "10.77.0.2", 2n)
        yield* attacker.handshake
        yield* honest.handshake

        const requested = () => attacker.messages("getdata").flatMap((m) => m.items.map((i) => toHex(i.hash)))
        // an announcement within the bucket is served as usual
        const announced = Array.from(
          { length: 1_000 },
          (_, i): InvItem => ({ type: INV_TX, hash: hashOf(10, i) }),
        )
        yield* attacker.send(new InvMessage({ items: announced }))
        yield* settleUntil(
          Effect.sync(() => requested().length > 0),
          "getdata for the first announcement",
        )
        const first = new Set(announced.map((i) => toHex(i.hash)))
        expect(defaultSpamPolicy.inv.burst).toBeLessThan(MAX_INV_ENTRIES)

        // each full inv is more than the bucket ever holds: dropped unread, scored
        for (let n = 1; n <= 10; n++) {
          const items = Array.from(
            { length: MAX_INV_ENTRIES },
            (_, i): InvItem => ({
              type: INV_TX,
              hash: hashOf(10 + n, i),
            }),
          )
          yield* attacker.write(encodeMessage(magic, new InvMessage({ items }, true)))
          if (n < 10) {
            yield* settleUntil(
              Effect.map(scoreAt(node, attacker.host), (s) => s === n * FLOOD_SCORE),
              `score after flood ${n}`,
            )
            expect(attacker.ended()).toBeUndefined()
          }
        }
        yield* settleUntil(
          Effect.sync(() => attacker.ended() !== undefined),
          "the flooder dropped",
        )
        expect(attacker.ended()).toBe("closed")
        expect(yield* isBanned(node, attacker.host)).toBe(true)
        expect(yield* peerOf(node, attacker.host)).toBeUndefined()
        // nothing of the floods was asked for: every getdata item is from the first announcement
        expect(requested().length).toBeGreaterThan(0)
        expect(requested().filter((h) => !first.has(h))).toEqual([])

        // the honest peer, connected all along, still relays a transaction into the pool
        expect(honest.ended()).toBeUndefined()
        const txid = txidOf(encodeTx(f.spend))
        yield* honest.send(new InvMessage({ items: [{ type: INV_TX, hash: txid }] }))
        yield* waitUntil(
          Effect.sync(() =>
            honest.messages("getdata").some((m) => m.items.some((i) => toHex(i.hash) === toHex(txid))),
          ),
          "10 seconds",
        )
        yield* honest.write(rawTx(f.spend))
        yield* waitUntil(
          Effect.map(node.run(Effect.flatMap(Mempool, (m) => m.get(txid))), Option.isSome),
          "10 seconds",
        )
        expect((yield* peerOf(node, honest.host))?.stats.banScore).toBe(0)
      }),
    ),
  )

  it.scoped("an addr flood is cut off by the addr bucket", () =>
    seeded(3)(
      Effect.gen(function* () {
        yield* simTime
        const sim = yield* makeSimNetwork({ seed: 3 })
        const node = yield* startNode(sim, nodeConfig())
        const attacker = yield* dial(sim, node, "10.66.0.2", 1n)
        yield* attacker.handshake
        const now = Math.floor((yield* Clock.currentTimeMillis) / 1000)
        /** message m: 1,000 fresh addresses, each in its own /16 (so the book's buckets hold them) */
        const addrs = (m: number): Array<AddrEntry> =>
          Array.from({ length: MAX_ADDR_ENTRIES }, (_, k) => {
            const g = m * MAX_ADDR_ENTRIES + k
            return {
              time: now,
              services: SERVICE_FULL,
              host: hostToBytes(`${20 + (g % 100)}.${Math.floor(g / 100)}.7.1`)!,
              port: 18444,
            }
          })
        const bookSize = node.run(
          Effect.map(
            Effect.flatMap(AddrBook, (b) => b.size),
            (s) => s.new + s.tried,
          ),
        )
        expect(yield* bookSize).toBe(0)
        yield* attacker.send(new AddrMessage({ entries: addrs(0) }))
        yield* settleUntil(
          Effect.map(bookSize, (n) => n > 0),
          "the first addresses in the book",
        )
        const afterFirst = yield* bookSize
        expect(afterFirst).toBeLessThanOrEqual(defaultSpamPolicy.addr.burst)
        // the bucket is empty now (0.1 a second, and the clock stands still): each message is dropped
        for (let m = 1; m <= 9; m++) {
          yield* attacker.send(new AddrMessage({ entries: addrs(m) }))
          yield* settleUntil(
            Effect.map(scoreAt(node, attacker.host), (s) => s === m * FLOOD_SCORE),
            `score after addr message ${m + 1}`,
          )
        }
        expect(attacker.ended()).toBeUndefined()
        yield* attacker.send(new AddrMessage({ entries: addrs(10) }))
        yield* settleUntil(
          Effect.sync(() => attacker.ended() !== undefined),
          "the flooder dropped",
        )
        expect(yield* isBanned(node, attacker.host)).toBe(true)
        // 11,000 addresses sent; what reached the book is what the first message brought
        expect(yield* bookSize).toBe(afterFirst)
      }),
    ),
  )

  it.scoped("an unrequested-block flood is cut off by its bucket", () =>
    seeded(4)(
      Effect.gen(function* () {
        const f = theFixture()
        yield* fixtureTime(f)
        const sim = yield* makeSimNetwork({ seed: 4 })
        const events: Array<ProbeEvent> = []
        const node = yield* startNode(sim, nodeConfig(), { probe: (e) => events.push(e) })
        yield* feedFixture(node, f)
        // 25 valid blocks extending the node's tip, pushed without being asked for
        const branch = f.chain.clone()
        branch.mine(25)
        const pushed = branch.blocks.slice(103)
        expect(pushed).toHaveLength(25)
        const burst = defaultSpamPolicy.unrequestedBlocks.burst
        const attacker = yield* dial(sim, node, "10.66.0.2", 1n)
        yield* attacker.handshake
        for (let i = 0; i < pushed.length; i++) {
          yield* attacker.write(rawBlock(pushed[i]!))
          if (i + 1 === burst + 5) {
            yield* settleUntil(
              Effect.map(scoreAt(node, attacker.host), (s) => s === 5 * FLOOD_SCORE),
              "score after 5 blocks over the allowance",
            )
          }
        }
        yield* settleUntil(
          Effect.sync(() => attacker.ended() !== undefined),
          "the flooder dropped",
        )
        expect(yield* isBanned(node, attacker.host)).toBe(true)
        // the allowance reached the chain; the next ten were read and dropped (ten floods make the ban
        // score); the rest were never read
        yield* settleUntil(
          Effect.map(tipOf(node), (t) => t.height === 102 + burst),
          "the allowed blocks connected",
        )
        const read = events.filter((e) => e.direction === "in" && e.command === "block")
        expect(read).toHaveLength(burst + defaultSpamPolicy.banThreshold / FLOOD_SCORE)
        const known = yield* node.run(
          Effect.flatMap(Chain, (c) => Effect.forEach(pushed, (b) => c.entry(headerHash(b.header)))),
        )
        expect(known.map(Option.isSome)).toEqual(pushed.map((_, i) => i < burst))
        expect(yield* node.run(Effect.flatMap(Chain, (c) => c.orphanCount))).toBe(0)
        expect((yield* tipOf(node)).height).toBe(102 + burst)
      }),
    ),
  )

  it.scoped("40 idle sockets are dropped after the handshake timeout", () =>
    seeded(5)(
      Effect.gen(function* () {
        yield* simTime
        const sim = yield* makeSimNetwork({ seed: 5 })
        // 40 hosts in one /16 (four /24s): the /16 cap is raised to let them all in
        const node = yield* startNode(sim, nodeConfig({ handshakeTimeoutSeconds: 30 }), {
          spam: { maxInboundPer16: 40 },
        })
        const sockets: Array<WirePeer> = []
        for (let i = 0; i < 40; i++) {
          sockets.push(yield* dial(sim, node, `10.60.${Math.floor(i / 10)}.${(i % 10) + 2}`, BigInt(i + 1)))
        }
        yield* settle
        yield* TestClock.adjust("29 seconds")
        yield* settle
        expect(sockets.filter((s) => s.ended() !== undefined)).toHaveLength(0)
        yield* TestClock.adjust("1 second")
        yield* settleUntil(
          Effect.sync(() => sockets.every((s) => s.ended() !== undefined)),
          "every idle socket closed",
        )
        expect(new Set(sockets.map((s) => s.ended()))).toEqual(new Set(["closed"]))
        // they said nothing: the node said nothing to them either, and holds no peer
        expect(sockets.flatMap((s) => s.messages("version"))).toHaveLength(0)
        expect(yield* node.run(Effect.flatMap(Network, (n) => n.peers))).toHaveLength(0)
        // timing out is not misbehaving: nobody was banned
        expect(yield* node.run(Effect.orDie(Effect.flatMap(SpamFilter, (s) => s.banned)))).toEqual([])
      }),
    ),
  )

  it.scoped("bans expire after banSeconds", () =>
    seeded(6)(
      Effect.gen(function* () {
        yield* simTime
        const sim = yield* makeSimNetwork({ seed: 6 })
        const node = yield* startNode(sim, nodeConfig({ banSeconds: 120 }))
        const host = "10.9.0.2"
        const junk = yield* dial(sim, node, host, 1n)
        // a frame of another network: nothing it says can be understood
        yield* junk.write(encodeMessage(Uint8Array.of(1, 2, 3, 4), new PingMessage({ nonce: 1n })))
        yield* settleUntil(
          Effect.sync(() => junk.ended() !== undefined),
          "the junk sender dropped",
        )
        expect(yield* isBanned(node, host)).toBe(true)
        const ban = yield* banOf(node, host)
        expect(ban!.until - ban!.createdAt).toBe(120)

        /** tryAgain dials from the banned host and answers whether the node handshakes with it */
        let attempts = 1
        const tryAgain = Effect.gen(function* () {
          attempts++
          const peer = yield* dial(sim, node, host, BigInt(attempts))
          yield* peer.send(versionOf(BigInt(attempts)))
          yield* settleUntil(
            Effect.sync(() => peer.ended() !== undefined || peer.messages("verack").length > 0),
            "the node's answer",
          )
          const admitted = peer.ended() === undefined
          if (!admitted) expect(peer.ended()).toBe("reset")
          yield* peer.conn.close
          return admitted
        })
        expect(yield* tryAgain).toBe(false)
        yield* TestClock.adjust("119 seconds")
        yield* settle
        expect(yield* tryAgain).toBe(false)
        yield* TestClock.adjust("1 second")
        yield* settle
        expect(yield* tryAgain).toBe(true)
        expect(yield* isBanned(node, host)).toBe(false)
        expect(yield* node.run(Effect.orDie(Effect.flatMap(SpamFilter, (s) => s.banned)))).toEqual([])
      }),
    ),
  )

  it.scoped("a peer that sends before version, repeats version, or sends nothing is dropped", () =>
    seeded(7)(
      Effect.gen(function* () {
        yield* simTime
        const sim = yield* makeSimNetwork({ seed: 7 })
        const node = yield* startNode(sim, nodeConfig({ handshakeTimeoutSeconds: 60 }))
        const early = yield* dial(sim, node, "10.1.0.2", 1n)
        const repeater = yield* dial(sim, node, "10.2.0.2", 2n)
        const silent = yield* dial(sim, node, "10.3.0.2", 3n)

        // a ping before version: dropped unanswered
        yield* early.send(new PingMessage({ nonce: 5n }))
        yield* settleUntil(
          Effect.sync(() => early.ended() !== undefined),
          "the early sender dropped",
        )
        expect(early.ended()).toBe("closed")
        expect(early.messages("version")).toHaveLength(0)
        expect(early.messages("pong")).toHaveLength(0)

        // a second version after the handshake: dropped
        yield* repeater.handshake
        yield* repeater.send(versionOf(22n))
        yield* settleUntil(
          Effect.sync(() => repeater.ended() !== undefined),
          "the repeater dropped",
        )
        expect(repeater.ended()).toBe("closed")
        expect(yield* peerOf(node, repeater.host)).toBeUndefined()

        // nothing at all: dropped at the handshake timeout, not before
        yield* TestClock.adjust("59 seconds")
        yield* settle
        expect(silent.ended()).toBeUndefined()
        yield* TestClock.adjust("1 second")
        yield* settleUntil(
          Effect.sync(() => silent.ended() !== undefined),
          "the silent peer dropped",
        )
        expect(silent.ended()).toBe("closed")

        // protocol violations cost 20, far from a ban: the early sender may come back and behave
        expect(yield* node.run(Effect.orDie(Effect.flatMap(SpamFilter, (s) => s.banned)))).toEqual([])
        const again = yield* dial(sim, node, early.host, 4n)
        yield* again.handshake
        expect(again.ended()).toBeUndefined()
      }),
    ),
  )
})
