import { createHash } from "node:crypto"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Layer, Random, Scheduler, TestContext } from "effect"
import { Chain } from "../../src/actors/Chain.js"
import { Mempool } from "../../src/actors/Mempool.js"
import { Miner } from "../../src/actors/Miner.js"
import type { ProbeEvent } from "../../src/actors/net.js"
import { Network } from "../../src/actors/PeerManager.js"
import { Rendezvous } from "../../src/actors/Rendezvous.js"
import { Wallet } from "../../src/actors/Wallet.js"
import { decodeAddress } from "../../src/consensus/address.js"
import { regtest } from "../../src/consensus/params.js"
import { Datagrams } from "../../src/layers/Datagram.js"
import { type DatagramSim, makeDatagramSim } from "../../src/layers/DatagramSim.js"
import * as Entropy from "../../src/layers/Entropy.js"
import * as NodeIdentity from "../../src/layers/NodeIdentity.js"
import { makeSimNetwork } from "../../src/layers/TransportSim.js"
import { UdpEndpoint } from "../../src/layers/UdpEndpoint.js"
import { toHex } from "../../src/schema/hex.js"
import { endpointKey } from "../../src/schema/netaddr.js"
import type { PublicKey } from "../../src/schema/primitives.js"
import { encodePayload } from "../../src/schema/wire.js"
import {
  P2P_PORT,
  quiet,
  type SimNode,
  simConfig,
  simTime,
  startNode,
  UDP_PORT,
  waitUntil,
} from "../support/simnet.js"

const SERVER = "203.0.113.1"
const MINER = "203.0.113.2"
const A_PRIVATE = "192.168.1.10"
const A_PUBLIC = "198.51.100.1"
const B_PRIVATE = "192.168.2.10"
const B_PUBLIC = "198.51.100.2"

const sha256 = (data: Uint8Array): string => createHash("sha256").update(data).digest("hex")

/**
 * tapped is `sim` with every datagram a node sends written to `record` (its private address: NATs
 * rewrite it on the way), so the trace covers rendezvous messages and encrypted session packets.
 */
const tapped = (
  sim: DatagramSim,
  record: (from: string, to: string, data: Uint8Array) => void,
): DatagramSim => ({
  ...sim,
  layer: (host) =>
    Layer.succeed(Datagrams, {
      bind: (at) =>
        Effect.map(sim.service(host).bind(at), (socket) => ({
          ...socket,
          send: (to, data) => {
            record(endpointKey(socket.local), endpointKey(to), data)
            return socket.send(to, data)
          },
        })),
    }),
})

/** payloadOf is a probe event's encoded payload: the raw bytes of blocks and transactions, else the message's encoding. */
const payloadOf = (e: ProbeEvent): Uint8Array =>
  e.payload ?? (e.message === undefined ? new Uint8Array(0) : encodePayload(e.message))

/** Run is what one run leaves: its trace lines, their hash, and a few facts to check it did what it should. */
interface Run {
  readonly lines: ReadonlyArray<string>
  readonly hash: string
  readonly tip: string
  readonly registrations: number
  readonly paid: boolean
}

/**
 * run builds a 4-node network under `seed` (fresh TestClock, Random, sim links, and a seeded Entropy
 * per node; identities drawn from it): a public rendezvous server S, a public miner M dialling S, and
 * two NAT'd nodes A and B with S as TCP peer and rendezvous server. M mines past coinbase maturity,
 * pays A, mines the payment in; A and B register at S. Every P2P message (probe) and every datagram
 * sent is a trace line: simulated time, local, remote, command, SHA-256 of the payload.
 */
const run = (seed: number): Effect.Effect<Run, unknown> =>
  Effect.scoped(
    Effect.gen(function* () {
      yield* simTime
      const clock = yield* Effect.clock
      const lines: Array<string> = []
      const now = () => clock.unsafeCurrentTimeMillis()
      const probe = (e: ProbeEvent) =>
        lines.push(
          `${now()} tcp ${e.direction} ${endpointKey(e.local)} ${endpointKey(e.remote)} ${e.command} ${sha256(payloadOf(e))}`,
        )
      const tcp = yield* makeSimNetwork({ seed, defaultLink: { latency: "20 millis" } })
      const rawUdp = yield* makeDatagramSim({ seed, defaultLink: { latency: "20 millis" } })
      for (const [pub, priv] of [
        [A_PUBLIC, A_PRIVATE],
        [B_PUBLIC, B_PRIVATE],
      ] as const) {
        yield* rawUdp.addNat({
          publicHost: pub,
          type: "port-restricted",
          privateHosts: [priv],
          mappingTimeout: 30_000,
        })
      }
      const udp = tapped(rawUdp, (from, to, data) =>
        lines.push(`${now()} udp out ${from} ${to} datagram ${sha256(data)}`),
      )
      const server = { host: SERVER, port: UDP_PORT }
      const options = (host: string) => ({
        datagramSim: udp,
        probe,
        identity: NodeIdentity.layerRandom,
        entropy: Entropy.layerSeeded(Entropy.deriveSeed(seed, host)),
      })
      const s = yield* startNode(tcp, simConfig(SERVER), options(SERVER))
      const m = yield* startNode(tcp, simConfig(MINER, [SERVER]), options(MINER))
      const nat = (host: string) => ({
        ...simConfig(host),
        rendezvous: [server],
        addnode: [{ host: SERVER, port: P2P_PORT }],
        listen: { host, port: 0 },
      })
      const a = yield* startNode(tcp, nat(A_PRIVATE), options(A_PRIVATE))
      const b = yield* startNode(tcp, nat(B_PRIVATE), options(B_PRIVATE))
      const nodes = [s, m, a, b]
      const tipOf = (node: SimNode) => node.run(Effect.flatMap(Chain, (c) => c.tip))
      const allAt = (height: number) =>
        Effect.map(Effect.forEach(nodes, tipOf), (tips) => tips.every((t) => t.height === height))

      yield* waitUntil(
        Effect.map(
          Effect.forEach(nodes, (n) => n.run(Effect.flatMap(Network, (net) => net.peers))),
          (peers) => peers.every((p) => p.length > 0),
        ),
        "10 seconds",
      )
      const mine = (n: number) =>
        m.run(
          Effect.gen(function* () {
            const address = yield* (yield* Wallet).newAddress
            const key = Either.getOrThrow(decodeAddress(regtest.hrp, address)) as PublicKey
            yield* (yield* Miner).generate(n, key)
          }),
        )
      yield* mine(101)
      yield* waitUntil(allAt(101), "60 seconds")
      const to = yield* a.run(Effect.flatMap(Wallet, (w) => w.newAddress))
      const txid = yield* m.run(Effect.flatMap(Wallet, (w) => w.send(to, 5_000_000n)))
      yield* waitUntil(
        Effect.map(
          Effect.forEach(nodes, (n) => n.run(Effect.flatMap(Mempool, (p) => p.get(txid)))),
          (found) => found.every((o) => o._tag === "Some"),
        ),
        "60 seconds",
      )
      yield* mine(1)
      yield* waitUntil(allAt(102), "30 seconds")
      // both NAT'd nodes registered at S (cone NATs)
      yield* waitUntil(
        Effect.map(
          Effect.forEach([a, b], (n) => n.run(Effect.flatMap(UdpEndpoint, (u) => u.nat))),
          (st) => st.every((x) => x.registeredAt.length === 1),
        ),
        "60 seconds",
      )
      // and found each other by gossip: a punched UDP session between them (encrypted packets in the trace)
      const udpPeerAt = (node: SimNode, host: string) =>
        node.run(
          Effect.map(
            Effect.flatMap(Network, (n) => n.peers),
            (ps) => ps.some((p) => p.info.transport === "udp" && p.info.addr.host === host),
          ),
        )
      yield* waitUntil(
        Effect.map(Effect.all([udpPeerAt(a, B_PUBLIC), udpPeerAt(b, A_PUBLIC)]), ([x, y]) => x && y),
        "120 seconds",
      )
      const registrations = yield* s.run(Effect.flatMap(Rendezvous, (r) => r.registrations))
      const balance = yield* a.run(Effect.flatMap(Wallet, (w) => w.balance(1)))
      const tip = toHex((yield* tipOf(s)).hash)
      const hash = createHash("sha256").update(lines.join("\n")).digest("hex")
      return { lines: [...lines], hash, tip, registrations, paid: balance === 5_000_000n }
    }),
  ).pipe(
    Effect.withRandom(Random.make(seed)),
    // microtasks only: Effect's default scheduler defers to a real setTimeout after 2,048 turns, which
    // races the harness's setImmediate turns under load
    Effect.withScheduler(new Scheduler.MixedScheduler(Number.MAX_SAFE_INTEGER)),
    Effect.provide(TestContext.TestContext),
    quiet,
  )

/** firstDifference is the first line where two traces part, for a readable failure. */
const firstDifference = (x: ReadonlyArray<string>, y: ReadonlyArray<string>): string | undefined => {
  for (let i = 0; i < Math.max(x.length, y.length); i++)
    if (x[i] !== y[i]) return `line ${i}:\n  ${x[i] ?? "(end)"}\n  ${y[i] ?? "(end)"}`
  return undefined
}

describe("determinism: a seeded simulated network replays bit for bit", () => {
  it.effect(
    "the same seed gives the same trace hash (mining, a payment, NAT'd nodes at a rendezvous); another seed a different one",
    () =>
      Effect.gen(function* () {
        const first = yield* run(1)
        const again = yield* run(1)
        // the run did what the trace is meant to cover
        expect(first.registrations).toBe(2)
        expect(first.paid).toBe(true)
        const commands = new Set(first.lines.map((l) => l.split(" ")[5]))
        for (const c of ["version", "headers", "block", "tx", "inv", "datagram"])
          expect(commands).toContain(c)
        expect(firstDifference(first.lines, again.lines)).toBeUndefined()
        expect(again.hash).toBe(first.hash)
        expect(again.tip).toBe(first.tip)

        const other = yield* run(2)
        expect(other.registrations).toBe(2)
        expect(other.hash).not.toBe(first.hash)
        expect(other.tip).not.toBe(first.tip)
      }),
    { timeout: 120_000 },
  )

  it.scoped(
    "a node builds its Entropy once (its identity and wallet seed are not the same bytes), and a seed fixes its node key",
    () =>
      quiet(
        Effect.gen(function* () {
          yield* simTime
          const sim = yield* makeSimNetwork({ seed: 3 })
          let builds = 0
          const counted = (seed: number) =>
            Layer.effect(
              Entropy.Entropy,
              Effect.flatMap(
                Effect.sync(() => builds++),
                () => Effect.provide(Entropy.Entropy, Entropy.layerSeeded(seed)),
              ),
            )
          const keyOf = (host: string, seed: number) =>
            Effect.flatMap(
              startNode(sim, simConfig(host), { entropy: counted(seed), identity: NodeIdentity.layerRandom }),
              (node) => node.run(Effect.map(UdpEndpoint, (u) => toHex(u.nodeKey))),
            )
          const first = yield* keyOf("10.0.0.1", 5)
          expect(builds).toBe(1)
          expect(yield* keyOf("10.0.0.2", 5)).toBe(first)
          expect(yield* keyOf("10.0.0.3", 6)).not.toBe(first)
          expect(builds).toBe(3)
        }),
      ),
  )
})
