import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Either, Option, Random, TestClock } from "effect"
import { Chain } from "../../src/actors/Chain.js"
import { Mempool } from "../../src/actors/Mempool.js"
import { Miner } from "../../src/actors/Miner.js"
import type { ProbeEvent } from "../../src/actors/net.js"
import { Network } from "../../src/actors/PeerManager.js"
import { Wallet } from "../../src/actors/Wallet.js"
import { decodeAddress } from "../../src/consensus/address.js"
import { regtest } from "../../src/consensus/params.js"
import { makeSimNetwork } from "../../src/layers/TransportSim.js"
import { toHex } from "../../src/schema/hex.js"
import type { PublicKey } from "../../src/schema/primitives.js"
import { INV_BLOCK, INV_TX } from "../../src/schema/wire.js"
import { quiet, type SimNode, settle, simConfig, simTime, startNode, waitUntil } from "../support/simnet.js"

/** mineAt mines `n` blocks at `node` paying a fresh address of its wallet. */
const mineAt = (node: SimNode, n: number) =>
  node.run(
    Effect.gen(function* () {
      const address = yield* (yield* Wallet).newAddress
      const key = Either.getOrThrow(decodeAddress(regtest.hrp, address)) as PublicKey
      return yield* (yield* Miner).generate(n, key)
    }),
  )

const tipOf = (node: SimNode) => node.run(Effect.flatMap(Chain, (c) => c.tip))
const peerCount = (node: SimNode) =>
  node.run(
    Effect.map(
      Effect.flatMap(Network, (n) => n.peers),
      (p) => p.length,
    ),
  )

describe("P2P network on a simulated network (TestClock)", () => {
  it.scoped("two nodes handshake, measure ping, and a block mined at one reaches the other", () =>
    quiet(
      Effect.gen(function* () {
        yield* simTime
        const sim = yield* makeSimNetwork({ seed: 1, defaultLink: { latency: "20 millis" } })
        const quietA = simConfig("10.0.0.1")
        // no outbound of its own: A does not dial B's self-announced address back
        const a = yield* startNode(sim, { ...quietA, limits: { ...quietA.limits, maxOutbound: 0 } })
        const b = yield* startNode(sim, simConfig("10.0.1.1", ["10.0.0.1"]))
        yield* waitUntil(
          Effect.zipWith(peerCount(a), peerCount(b), (x, y) => x === 1 && y === 1),
          "5 seconds",
        )
        const [infoA] = yield* a.run(Effect.flatMap(Network, (n) => n.peers))
        expect(infoA!.info.inbound).toBe(true)
        expect(infoA!.info.subver).toMatch(/^\/fibercoin:/)
        const hashes = yield* mineAt(a, 3)
        yield* waitUntil(
          Effect.map(tipOf(b), (t) => t.height === 3),
          "10 seconds",
        )
        expect(toHex((yield* tipOf(b)).hash)).toBe(toHex(hashes[2]!))
        // pings go out every 2 minutes; after one the round trip (2 × 20 ms latency) is measured
        yield* waitUntil(
          Effect.map(b.run(Effect.flatMap(Network, (n) => n.peers)), (p) => p[0]?.stats.pingMs !== undefined),
          "3 minutes",
          "1 second",
        )
        const [infoB] = yield* b.run(Effect.flatMap(Network, (n) => n.peers))
        expect(infoB!.stats.pingMs).toBeGreaterThanOrEqual(40)
      }),
    ),
  )

  it.scoped("10 nodes in a random graph converge on one tip; a tx reaches every mempool once per link", () =>
    quiet(
      Effect.gen(function* () {
        yield* simTime
        const sim = yield* makeSimNetwork({ seed: 7, defaultLink: { latency: "30 millis" } })
        const rng = Random.make(42)
        const hosts = Array.from({ length: 10 }, (_, i) => `10.${i}.0.1`)
        // a random spanning tree plus a few extra edges; each edge is dialled by its later node
        const edges = new Set<string>()
        for (let i = 1; i < hosts.length; i++) edges.add(`${yield* rng.nextIntBetween(0, i)}-${i}`)
        for (let k = 0; k < 6; k++) {
          const x = yield* rng.nextIntBetween(0, 10)
          const y = yield* rng.nextIntBetween(0, 10)
          if (x !== y) edges.add(`${Math.min(x, y)}-${Math.max(x, y)}`)
        }
        const neighbours = hosts.map(() => [] as Array<string>)
        for (const e of edges) {
          const [x, y] = e.split("-").map(Number) as [number, number]
          neighbours[y]!.push(hosts[x]!)
        }
        const events: Array<ProbeEvent> = []
        const nodes: Array<SimNode> = []
        for (let i = 0; i < hosts.length; i++) {
          const config = simConfig(hosts[i]!, neighbours[i]!)
          nodes.push(yield* startNode(sim, config, { probe: (e) => events.push(e) }))
        }
        const expectedLinks = edges.size
        yield* waitUntil(
          Effect.map(
            Effect.forEach(nodes, peerCount),
            (counts) => counts.reduce((a, b) => a + b, 0) === 2 * expectedLinks,
          ),
          "10 seconds",
        )
        // blocks mined at two different nodes: everyone ends on the same tip
        yield* mineAt(nodes[0]!, 101)
        yield* waitUntil(
          Effect.map(Effect.forEach(nodes, tipOf), (tips) => tips.every((t) => t.height === 101)),
          "60 seconds",
        )
        yield* mineAt(nodes[9]!, 2)
        yield* waitUntil(
          Effect.map(Effect.forEach(nodes, tipOf), (tips) => tips.every((t) => t.height === 103)),
          "30 seconds",
        )
        const tips = yield* Effect.forEach(nodes, tipOf)
        expect(new Set(tips.map((t) => toHex(t.hash))).size).toBe(1)

        // a payment from node 0 (its coinbase matured) reaches every mempool
        events.length = 0
        const to = yield* nodes[5]!.run(Effect.flatMap(Wallet, (w) => w.newAddress))
        const txid = yield* nodes[0]!.run(Effect.flatMap(Wallet, (w) => w.send(to, 1_000_000n)))
        yield* waitUntil(
          Effect.map(
            Effect.forEach(nodes, (n) => n.run(Effect.flatMap(Mempool, (m) => m.get(txid)))),
            (found) => found.every((o) => o._tag === "Some"),
          ),
          "60 seconds",
        )
        const hex = toHex(txid)
        const invs = events.filter(
          (e) =>
            e.direction === "in" &&
            e.message?._tag === "inv" &&
            e.message.items.some((i) => i.type === INV_TX && toHex(i.hash) === hex),
        )
        // no node hears the same inv twice from the same peer
        const perLink = new Map<string, number>()
        for (const e of invs) {
          const key = `${e.local.host}<-${e.remote.host}`
          perLink.set(key, (perLink.get(key) ?? 0) + 1)
        }
        expect([...perLink.values()].every((n) => n === 1)).toBe(true)
        // every node received the tx body exactly once
        const bodies = events.filter((e) => e.direction === "in" && e.command === "tx")
        expect(bodies.length).toBe(nodes.length - 1)
        // nobody announces the tx back to the node it got the tx from
        const gotFrom = new Map<string, string>()
        for (const e of bodies) gotFrom.set(e.local.host, e.remote.host)
        const echoes = invs.filter((e) => gotFrom.get(e.remote.host) === e.local.host)
        expect(echoes).toEqual([])
        expect(invs.length).toBeLessThanOrEqual(2 * expectedLinks)
      }),
    ),
  )

  it.scoped(
    "a late joiner syncs 2,000 blocks from 4 peers in parallel; a peer that stops answering is dropped and its blocks fetched elsewhere",
    () =>
      quiet(
        Effect.gen(function* () {
          yield* simTime
          const sim = yield* makeSimNetwork({ seed: 11, defaultLink: { latency: "20 millis" } })
          const servers: Array<SimNode> = []
          for (let i = 0; i < 4; i++) {
            const c = simConfig(`10.${20 + i}.0.1`)
            servers.push(yield* startNode(sim, { ...c, limits: { ...c.limits, maxOutbound: 0 } }))
          }
          // the chain: mined at server 0, handed to the other servers directly (no network)
          const hashes = yield* mineAt(servers[0]!, 2_000)
          const blocks = yield* servers[0]!.run(
            Effect.forEach(hashes, (h) => Effect.flatMap(Chain, (c) => Effect.orDie(c.block(h)))),
          )
          for (const server of servers.slice(1)) {
            yield* server.run(
              Effect.forEach(blocks, (b) =>
                Effect.flatMap(Chain, (c) => Effect.orDie(c.submitBlock(Option.getOrThrow(b)))),
              ),
            )
          }
          const events: Array<ProbeEvent> = []
          const late = yield* startNode(
            sim,
            simConfig(
              "10.30.0.1",
              servers.map((s) => s.host),
            ),
            { probe: (e) => events.push(e) },
          )
          const staller = servers[2]!.host
          yield* waitUntil(
            Effect.map(tipOf(late), (t) => t.height >= 400),
            "60 seconds",
          )
          const heightAtStall = (yield* tipOf(late)).height
          expect(heightAtStall).toBeLessThan(2_000)
          // every server was asked for blocks: the download runs from all four in parallel
          const askedOf = (host: string) =>
            events.filter(
              (e) =>
                e.direction === "out" &&
                e.remote.host === host &&
                e.message?._tag === "getdata" &&
                e.message.items.some((i) => i.type === INV_BLOCK),
            ).length
          for (const server of servers) expect(askedOf(server.host)).toBeGreaterThan(0)
          // the staller: everything it sends from now on is lost, but its connection stays up
          yield* sim.setLink(staller, late.host, { latency: "20 millis", loss: 1 })
          yield* waitUntil(
            Effect.map(tipOf(late), (t) => t.height === 2_000),
            "120 seconds",
          )
          expect(toHex((yield* tipOf(late)).hash)).toBe(toHex(hashes[1_999]!))
          // it was dropped for stalling (its redial cannot finish a handshake through the loss)
          const peers = yield* late.run(Effect.flatMap(Network, (n) => n.peers))
          expect(peers.map((p) => p.info.addr.host).sort()).toEqual(
            servers.filter((s) => s.host !== staller).map((s) => s.host),
          )
          const blocksFrom = (host: string) =>
            events.filter((e) => e.direction === "in" && e.remote.host === host && e.command === "block")
              .length
          expect(blocksFrom(staller)).toBeGreaterThan(0)
          expect(servers.reduce((n, s) => n + blocksFrom(s.host), 0)).toBeGreaterThanOrEqual(2_000)
        }),
      ),
  )

  // seeded: one schedule of nonces, feelers and relays. This run once hung the TestClock: relayed
  // self-announcements circled the network for their whole 10 fresh minutes (now each is relayed once).
  it.scoped(
    "nodes that know only a seed find each other through verified address gossip",
    () =>
      quiet(
        Effect.withRandom(Random.make(5))(
          Effect.gen(function* () {
            yield* simTime
            const sim = yield* makeSimNetwork({ seed: 5, defaultLink: { latency: "25 millis" } })
            const seed = yield* startNode(sim, simConfig("9.0.0.1"))
            const others: Array<SimNode> = []
            for (let i = 0; i < 5; i++) {
              // distinct /8s: the outbound subnet caps do not get in the way
              const c = simConfig(`${11 + i}.0.0.1`)
              others.push(
                yield* startNode(
                  sim,
                  { ...c, addnode: [{ host: seed.host, port: 18444 }] },
                  { net: { selfAnnounceInterval: Duration.minutes(3) } },
                ),
              )
            }
            const peerHosts = (node: SimNode) =>
              node.run(
                Effect.map(
                  Effect.flatMap(Network, (n) => n.peers),
                  (peers) => new Set(peers.map((p) => p.info.addr.host)),
                ),
              )
            // at first each knows only the seed; the seed verifies their self-announcements with feelers
            // (one per 2 min), and the re-announcements then spread to the others, who dial them
            yield* waitUntil(
              Effect.map(Effect.forEach(others, peerHosts), (sets) =>
                sets.every((hosts) => [...hosts].filter((h) => h !== seed.host).length >= 2),
              ),
              "20 minutes",
              "1 second",
            )
            const seen = yield* Effect.forEach(others, peerHosts)
            for (const hosts of seen)
              expect([...hosts].filter((h) => h !== seed.host).length).toBeGreaterThanOrEqual(2)
          }),
        ),
      ),
    180_000,
  )

  it.scoped(
    "a node catching up with a peer that keeps mining is not dropped for the announcements it cannot connect yet",
    () =>
      quiet(
        Effect.gen(function* () {
          yield* simTime
          const sim = yield* makeSimNetwork({ seed: 7, defaultLink: { latency: "200 millis" } })
          const quietA = simConfig("10.0.0.1")
          const a = yield* startNode(sim, { ...quietA, limits: { ...quietA.limits, maxOutbound: 0 } })
          yield* mineAt(a, 300)
          const b = yield* startNode(sim, simConfig("10.0.1.1", ["10.0.0.1"]))
          yield* waitUntil(
            Effect.map(peerCount(b), (n) => n === 1),
            "5 seconds",
          )
          const [first] = yield* b.run(Effect.flatMap(Network, (n) => n.peers))
          // A mines 300 more, one at a time, while B is still catching up: each block is announced to
          // B, often as a header that does not connect to B's tree yet
          for (let i = 0; i < 300; i++) {
            yield* mineAt(a, 1)
            yield* TestClock.adjust("5 millis")
            yield* settle
          }
          yield* waitUntil(
            Effect.map(tipOf(b), (t) => t.height === 600),
            "120 seconds",
            "100 millis",
          )
          const [still] = yield* b.run(Effect.flatMap(Network, (n) => n.peers))
          expect(still?.info.id).toBe(first!.info.id)
        }),
      ),
    { timeout: 60_000 },
  )
})
