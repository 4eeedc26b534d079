import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Fiber, Option, TestClock } from "effect"
import { AddrBook } from "../../src/actors/AddrBook.js"
import { Chain } from "../../src/actors/Chain.js"
import { Miner } from "../../src/actors/Miner.js"
import { Network } from "../../src/actors/PeerManager.js"
import { Rendezvous } from "../../src/actors/Rendezvous.js"
import { Wallet } from "../../src/actors/Wallet.js"
import { decodeAddress } from "../../src/consensus/address.js"
import { regtest } from "../../src/consensus/params.js"
import { makeDatagramSim } from "../../src/layers/DatagramSim.js"
import { makeSimNetwork } from "../../src/layers/TransportSim.js"
import { UdpEndpoint } from "../../src/layers/UdpEndpoint.js"
import { toHex } from "../../src/schema/hex.js"
import { endpointKey } from "../../src/schema/netaddr.js"
import type { PublicKey } from "../../src/schema/primitives.js"
import {
  P2P_PORT,
  quiet,
  settle,
  simConfig,
  simTime,
  startNode,
  UDP_PORT,
  waitUntil,
} from "../support/simnet.js"

const SERVER = "203.0.113.1"
const A_PRIVATE = "192.168.1.10"
const A_PUBLIC = "198.51.100.1"
const B_PRIVATE = "192.168.2.10"
const B_PUBLIC = "198.51.100.2"
const MAPPING_TIMEOUT_MS = 30_000

/** runFor runs `effect` while the TestClock moves in `stepMs` steps, failing after `maxMs` of simulated time. */
const runFor = <A, E, R>(effect: Effect.Effect<A, E, R>, maxMs = 60_000, stepMs = 50) =>
  Effect.gen(function* () {
    const fiber = yield* Effect.fork(effect)
    for (let t = 0; t < maxMs && Option.isNone(yield* Fiber.poll(fiber)); t += stepMs) {
      yield* TestClock.adjust(stepMs)
      yield* settle
    }
    if (Option.isNone(yield* Fiber.poll(fiber))) {
      yield* Fiber.interrupt(fiber)
      return yield* Effect.die(new Error(`not finished within ${maxMs} ms of simulated time`))
    }
    return yield* Fiber.join(fiber)
  })

/**
 * twoNats is the simulated networks of the peer tests (seeded, 20 ms links, simulated time started):
 * A and B each behind its own port-restricted NAT, and the rendezvous server's address.
 */
const twoNats = (seed: number) =>
  Effect.gen(function* () {
    yield* simTime
    const tcp = yield* makeSimNetwork({ seed, defaultLink: { latency: "20 millis" } })
    const udp = yield* makeDatagramSim({ seed, defaultLink: { latency: "20 millis" } })
    for (const [pub, priv] of [
      [A_PUBLIC, A_PRIVATE],
      [B_PUBLIC, B_PRIVATE],
    ] as const) {
      yield* udp.addNat({
        publicHost: pub,
        type: "port-restricted",
        privateHosts: [priv],
        mappingTimeout: MAPPING_TIMEOUT_MS,
      })
    }
    return { tcp, udp, server: { host: SERVER, port: UDP_PORT } }
  })

/** advance moves the TestClock `ms` forward in 1-second steps, letting every timer on the way run. */
const advance = (ms: number) =>
  Effect.gen(function* () {
    for (let t = 0; t < ms; t += 1_000) {
      yield* TestClock.adjust(1_000)
      yield* settle
    }
  })

describe("the node's UDP stack on a simulated network with NATs (TestClock)", () => {
  it.scoped(
    "a NAT'd node registers at a public node and stays registered; another NAT'd node punches to it and opens a session with its key",
    () =>
      quiet(
        Effect.gen(function* () {
          yield* simTime
          const tcp = yield* makeSimNetwork({ seed: 8, defaultLink: { latency: "20 millis" } })
          const udp = yield* makeDatagramSim({ seed: 8, defaultLink: { latency: "20 millis" } })
          const server = { host: SERVER, port: UDP_PORT }
          const natA = yield* udp.addNat({
            publicHost: A_PUBLIC,
            type: "port-restricted",
            privateHosts: [A_PRIVATE],
            mappingTimeout: MAPPING_TIMEOUT_MS,
          })
          yield* udp.addNat({
            publicHost: B_PUBLIC,
            type: "port-restricted",
            privateHosts: [B_PRIVATE],
            mappingTimeout: MAPPING_TIMEOUT_MS,
          })
          const s = yield* startNode(tcp, simConfig(SERVER), { datagramSim: udp })
          const a = yield* startNode(
            tcp,
            { ...simConfig(A_PRIVATE), rendezvous: [server] },
            { datagramSim: udp },
          )
          const b = yield* startNode(
            tcp,
            { ...simConfig(B_PRIVATE), rendezvous: [server] },
            { datagramSim: udp },
          )

          // a node with no rendezvous servers serves and knows nothing of its NAT
          expect((yield* s.run(Effect.flatMap(UdpEndpoint, (u) => u.nat))).kind).toBe("unknown")
          expect((yield* s.run(UdpEndpoint)).local).toEqual({ host: SERVER, port: UDP_PORT })

          // A probes in the background: cone NAT, its public endpoint is the NAT's, and it registers at S
          const natOfA = Effect.flatMap(UdpEndpoint, (u) => u.nat)
          yield* waitUntil(
            Effect.map(a.run(natOfA), (n) => n.kind !== "unknown"),
            "30 seconds",
          )
          const status = yield* a.run(natOfA)
          expect(status.kind).toBe("cone")
          expect(status.publicAddress?.host).toBe(A_PUBLIC)
          const count = s.run(Effect.flatMap(Rendezvous, (r) => r.registrations))
          yield* advance(2_000)
          expect(yield* count).toBe(2) // A and B
          expect((yield* natA.mappings).length).toBe(1)

          // five mapping timeouts later the keepalives have held A's mapping and its registration (90 s ttl)
          yield* advance(5 * MAPPING_TIMEOUT_MS)
          expect(yield* count).toBe(2)
          const mapping = (yield* natA.mappings)[0]
          expect(mapping?.public).toEqual(status.publicAddress)

          // B asks S to introduce it to A's node key and punches through both NATs
          const aKey = (yield* a.run(Rendezvous)).nodeKey
          const aSessionKey = (yield* a.run(UdpEndpoint)).sessions.publicKey
          const punched = yield* runFor(b.run(Effect.flatMap(Rendezvous, (r) => r.connect(server, aKey))))
          expect(punched._tag).toBe("Punched")
          if (punched._tag !== "Punched") return
          expect(punched.remote).toEqual(status.publicAddress)
          expect(toHex(punched.sessionKey)).toBe(toHex(aSessionKey))

          // a UDP session over the punched path, authenticated with A's session key, both ways; A's
          // PeerManager takes the inbound session as a peer, so this raw session is B's own business
          const bSessions = (yield* b.run(UdpEndpoint)).sessions
          const outbound = yield* runFor(
            bSessions.connect({ remote: punched.remote, remotePublicKey: punched.sessionKey }),
          )
          expect(toHex(outbound.remotePublicKey)).toBe(toHex(aSessionKey))
        }),
      ),
    { timeout: 60_000 },
  )

  it.scoped(
    "two NAT'd nodes become peers over a punched UDP session and one syncs 500 blocks from the other",
    () =>
      quiet(
        Effect.gen(function* () {
          const { tcp, udp, server } = yield* twoNats(9)
          yield* startNode(tcp, simConfig(SERVER), { datagramSim: udp })
          const nat = (host: string) => ({
            ...simConfig(host),
            rendezvous: [server],
            listen: { host, port: 0 },
          })
          const a = yield* startNode(tcp, nat(A_PRIVATE), { datagramSim: udp })
          const b = yield* startNode(tcp, nat(B_PRIVATE), { datagramSim: udp })
          const hashes = yield* a.run(
            Effect.gen(function* () {
              const address = yield* (yield* Wallet).newAddress
              const key = Either.getOrThrow(decodeAddress(regtest.hrp, address)) as PublicKey
              return yield* (yield* Miner).generate(500, key)
            }),
          )
          // both registered at S (a cone NAT each)
          yield* waitUntil(
            Effect.map(b.run(Effect.flatMap(UdpEndpoint, (u) => u.nat)), (n) => n.kind === "cone"),
            "30 seconds",
          )
          yield* advance(2_000)
          // registered: A is reachable as udp:<A's key>@S (getnetworkinfo's udpaddresses)
          const aNat = yield* a.run(Effect.flatMap(UdpEndpoint, (u) => u.nat))
          expect(aNat.registeredAt.map(endpointKey)).toEqual([endpointKey(server)])
          const aKey = (yield* a.run(Rendezvous)).nodeKey
          // the operator's way: addnode udp:<A's key>@S (kept connected, redialled with backoff)
          yield* b.run(Effect.flatMap(Network, (n) => n.addNode({ ...server, nodeKey: aKey }, "add")))
          const udpPeers = (node: typeof a) =>
            node.run(
              Effect.map(
                Effect.flatMap(Network, (n) => n.peers),
                (ps) => ps.filter((p) => p.info.transport === "udp"),
              ),
            )
          yield* waitUntil(
            Effect.map(
              Effect.all([udpPeers(a), udpPeers(b)]),
              ([pa, pb]) => pa.length === 1 && pb.length === 1,
            ),
            "60 seconds",
          )
          const [[atA], [atB]] = [yield* udpPeers(a), yield* udpPeers(b)]
          expect(atA!.info.inbound).toBe(true)
          expect(atA!.info.addr.host).toBe(B_PUBLIC)
          expect(atB!.info.inbound).toBe(false)
          expect(atB!.info.addr.host).toBe(A_PUBLIC)
          // B syncs A's 500 blocks over the session (B has no other peer: its TCP connects nowhere)
          const tipOf = (node: typeof a) => node.run(Effect.flatMap(Chain, (c) => c.tip))
          yield* waitUntil(
            Effect.map(tipOf(b), (t) => t.height === 500),
            "300 seconds",
            "200 millis",
          )
          expect(toHex((yield* tipOf(b)).hash)).toBe(toHex(hashes[hashes.length - 1]!))
          expect((yield* b.run(Effect.flatMap(Network, (n) => n.peers))).length).toBe(1)
        }),
      ),
    { timeout: 60_000 },
  )

  it.scoped(
    "NAT'd nodes find each other by gossip: each announces udp:<key>@S to the public node S, S relays it, and the lower key dials the other over UDP",
    () =>
      quiet(
        Effect.gen(function* () {
          const { tcp, udp, server } = yield* twoNats(10)
          const s = yield* startNode(tcp, simConfig(SERVER), { datagramSim: udp })
          // A and B: a TCP connection out to S (their NATs let that through) and S as rendezvous server;
          // nobody tells either of them about the other
          const nat = (host: string) => ({
            ...simConfig(host),
            rendezvous: [server],
            addnode: [{ host: SERVER, port: P2P_PORT }],
            listen: { host, port: 0 },
          })
          const a = yield* startNode(tcp, nat(A_PRIVATE), { datagramSim: udp })
          const b = yield* startNode(tcp, nat(B_PRIVATE), { datagramSim: udp })
          const keyOf = (node: typeof a) => Effect.map(node.run(UdpEndpoint), (u) => toHex(u.nodeKey))
          const [aKey, bKey] = [yield* keyOf(a), yield* keyOf(b)]
          const udpPeers = (node: typeof a) =>
            node.run(
              Effect.map(
                Effect.flatMap(Network, (n) => n.peers),
                (ps) => ps.filter((p) => p.info.transport === "udp"),
              ),
            )
          yield* waitUntil(
            Effect.map(
              Effect.all([udpPeers(a), udpPeers(b)]),
              ([pa, pb]) => pa.length === 1 && pb.length === 1,
            ),
            "120 seconds",
          )
          // exactly one session between them, dialled by the lower key (the other end sees it inbound)
          const [[atA], [atB]] = [yield* udpPeers(a), yield* udpPeers(b)]
          const aDialled = aKey < bKey
          expect(atA!.info.inbound).toBe(!aDialled)
          expect(atB!.info.inbound).toBe(aDialled)
          expect(atA!.info.addr.host).toBe(B_PUBLIC)
          expect(atB!.info.addr.host).toBe(A_PUBLIC)
          // S learned both udp addresses; the dialler's book has the other one, now reached (gossipable)
          expect((yield* s.run(Effect.flatMap(AddrBook, (book) => book.size))).udp).toBe(2)
          const dialler = aDialled ? a : b
          const reached = yield* dialler.run(Effect.flatMap(AddrBook, (book) => book.getUdpAddr))
          expect(reached.map((e) => toHex(e.nodeKey))).toEqual([aDialled ? bKey : aKey])
          expect(reached[0]!.port).toBe(UDP_PORT)
          // the session stays single: more ticks do not open a second one either way
          yield* advance(10_000)
          expect((yield* udpPeers(a)).length).toBe(1)
          expect((yield* udpPeers(b)).length).toBe(1)
        }),
      ),
    { timeout: 60_000 },
  )
})
