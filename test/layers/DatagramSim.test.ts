import { describe, expect, it } from "@effect/vitest"
import { Effect, Stream, TestClock } from "effect"
import type { DatagramSocket } from "../../src/layers/Datagram.js"
import { type DatagramSim, makeDatagramSim, type NatType } from "../../src/layers/DatagramSim.js"
import type { Endpoint } from "../../src/layers/Transport.js"

const NAT_PUBLIC = "198.51.100.1"
const ALICE = "192.168.1.2"
const ALICE_NEIGHBOUR = "192.168.1.3"
const SERVER = "203.0.113.5"
const STRANGER = "203.0.113.9"

/** tick advances the TestClock and lets the woken fibers run. */
const tick = (millis = 1) => Effect.andThen(TestClock.adjust(millis), Effect.yieldNow())

/** Inbox is what a socket received so far, as "from-host:port=payload" strings. */
interface Inbox {
  readonly socket: DatagramSocket
  readonly got: Array<string>
}

/** open binds `host:port` on the sim and records every datagram it receives. */
const open = (sim: DatagramSim, host: string, port = 0) =>
  Effect.gen(function* () {
    const socket = yield* sim.service(host).bind({ host: "0.0.0.0", port })
    const got: Array<string> = []
    yield* Effect.forkScoped(
      Stream.runForEach(socket.received, (d) =>
        Effect.sync(() => void got.push(`${d.from.host}:${d.from.port}=${new TextDecoder().decode(d.data)}`)),
      ),
    )
    return { socket, got } satisfies Inbox
  })

const say = (from: Inbox, to: Endpoint, text: string) => from.socket.send(to, new TextEncoder().encode(text))

/** natWorld is Alice behind a NAT of `type`, a server with two ports and a stranger, on a 10 ms network. */
const natWorld = (type: NatType, extra: { hairpinning?: boolean; inboundRefreshes?: boolean } = {}) =>
  Effect.gen(function* () {
    const sim = yield* makeDatagramSim({ seed: 1, defaultLink: { latency: "10 millis" } })
    const nat = yield* sim.addNat({
      publicHost: NAT_PUBLIC,
      type,
      privateHosts: [ALICE, ALICE_NEIGHBOUR],
      mappingTimeout: "30 seconds",
      ...extra,
    })
    const alice = yield* open(sim, ALICE, 5000)
    const server = yield* open(sim, SERVER, 3478)
    const serverAlt = yield* open(sim, SERVER, 3479)
    const stranger = yield* open(sim, STRANGER, 3478)
    return { sim, nat, alice, server, serverAlt, stranger }
  })

/** mappedFrom is the public endpoint a receiver saw the last datagram from. */
const lastFrom = (inbox: Inbox): Endpoint => {
  const last = inbox.got[inbox.got.length - 1] ?? ""
  const [host = "", port = "0"] = last.split("=")[0]?.split(":") ?? []
  return { host, port: Number(port) }
}

describe("DatagramSim NATs", () => {
  it.scoped("full cone: outbound is rewritten to the NAT's public endpoint, and anyone may send in", () =>
    Effect.gen(function* () {
      const { nat, alice, server, stranger } = yield* natWorld("full-cone")
      yield* say(alice, server.socket.local, "hello")
      yield* tick(10)
      expect(server.got).toEqual([`${NAT_PUBLIC}:20000=hello`])
      const mapped = lastFrom(server)
      expect(yield* nat.mappings).toEqual([
        {
          private: { host: ALICE, port: 5000 },
          public: mapped,
          remote: undefined,
          expiresAt: 30_000,
        },
      ])
      yield* say(server, mapped, "you are 198.51.100.1:20000")
      yield* say(stranger, mapped, "unsolicited")
      yield* tick(10)
      expect(alice.got).toEqual([`${SERVER}:3478=you are 198.51.100.1:20000`, `${STRANGER}:3478=unsolicited`])
    }),
  )

  it.scoped("address-restricted: only hosts Alice sent to get in, from any of their ports", () =>
    Effect.gen(function* () {
      const { alice, server, serverAlt, stranger } = yield* natWorld("address-restricted")
      yield* say(alice, server.socket.local, "hello")
      yield* tick(10)
      const mapped = lastFrom(server)
      yield* say(server, mapped, "a")
      yield* say(serverAlt, mapped, "b")
      yield* say(stranger, mapped, "c")
      yield* tick(10)
      expect(alice.got).toEqual([`${SERVER}:3478=a`, `${SERVER}:3479=b`])
      // Once Alice sends to the stranger, the same mapping lets it in.
      yield* say(alice, stranger.socket.local, "hi")
      yield* tick(10)
      expect(lastFrom(stranger)).toEqual(mapped)
      yield* say(stranger, mapped, "c2")
      yield* tick(10)
      expect(alice.got).toEqual([`${SERVER}:3478=a`, `${SERVER}:3479=b`, `${STRANGER}:3478=c2`])
    }),
  )

  it.scoped("port-restricted: only the exact host:port pairs Alice sent to get in", () =>
    Effect.gen(function* () {
      const { alice, server, serverAlt, stranger } = yield* natWorld("port-restricted")
      yield* say(alice, server.socket.local, "hello")
      yield* tick(10)
      const mapped = lastFrom(server)
      yield* say(server, mapped, "a")
      yield* say(serverAlt, mapped, "b")
      yield* say(stranger, mapped, "c")
      yield* tick(10)
      expect(alice.got).toEqual([`${SERVER}:3478=a`])
      // Sending to the other port (same mapping: endpoint-independent) opens that pair too.
      yield* say(alice, serverAlt.socket.local, "hello again")
      yield* tick(10)
      expect(lastFrom(serverAlt)).toEqual(mapped)
      yield* say(serverAlt, mapped, "b2")
      yield* tick(10)
      expect(alice.got).toEqual([`${SERVER}:3478=a`, `${SERVER}:3479=b2`])
    }),
  )

  it.scoped("symmetric: a new public port per destination, each open only to that destination", () =>
    Effect.gen(function* () {
      const { nat, alice, server, serverAlt, stranger } = yield* natWorld("symmetric")
      yield* say(alice, server.socket.local, "one")
      yield* say(alice, serverAlt.socket.local, "two")
      yield* tick(10)
      const toServer = lastFrom(server)
      const toAlt = lastFrom(serverAlt)
      expect(toServer.host).toBe(NAT_PUBLIC)
      expect(toAlt.host).toBe(NAT_PUBLIC)
      expect(toServer.port).not.toBe(toAlt.port)
      expect((yield* nat.mappings).map((m) => m.remote)).toEqual([
        server.socket.local,
        serverAlt.socket.local,
      ])
      // What the server learned (its echo) is useless to anyone else, even the server's other port.
      yield* say(serverAlt, toServer, "wrong port")
      yield* say(stranger, toServer, "stranger")
      yield* say(server, toServer, "right")
      yield* tick(10)
      expect(alice.got).toEqual([`${SERVER}:3478=right`])
    }),
  )

  it.scoped(
    "a mapping expires after mappingTimeout without outbound traffic; the next send gets a new port",
    () =>
      Effect.gen(function* () {
        const { nat, alice, server } = yield* natWorld("port-restricted")
        yield* say(alice, server.socket.local, "keepalive")
        yield* tick(10)
        const first = lastFrom(server)
        // Outbound traffic refreshes: a keepalive at 25 s holds the mapping past 30 s.
        yield* tick(24_990)
        yield* say(alice, server.socket.local, "keepalive")
        yield* tick(20_000)
        yield* say(server, first, "at 45 s")
        yield* tick(10)
        expect(alice.got).toEqual([`${SERVER}:3478=at 45 s`])
        // Inbound does not refresh (the default): 30 s after the last keepalive the mapping is gone.
        yield* tick(10_000)
        yield* say(server, first, "at 55 s")
        yield* tick(10)
        expect(alice.got).toEqual([`${SERVER}:3478=at 45 s`])
        expect(yield* nat.mappings).toEqual([])
        yield* say(alice, server.socket.local, "back")
        yield* tick(10)
        expect(lastFrom(server).port).not.toBe(first.port)
      }),
  )

  it.scoped("with inboundRefreshes, inbound traffic alone keeps a mapping open (Linux conntrack)", () =>
    Effect.gen(function* () {
      const { alice, server } = yield* natWorld("full-cone", { inboundRefreshes: true })
      yield* say(alice, server.socket.local, "hello")
      yield* tick(10)
      const mapped = lastFrom(server)
      for (let i = 0; i < 5; i++) {
        yield* tick(20_000)
        yield* say(server, mapped, `t${i}`)
      }
      yield* tick(10)
      expect(alice.got).toEqual(["t0", "t1", "t2", "t3", "t4"].map((t) => `${SERVER}:3478=${t}`))
    }),
  )

  it.scoped("private addresses are unreachable from outside; the LAN reaches them directly", () =>
    Effect.gen(function* () {
      const { sim, alice, server } = yield* natWorld("full-cone")
      const neighbour = yield* open(sim, ALICE_NEIGHBOUR, 6000)
      yield* say(server, alice.socket.local, "from outside")
      yield* say(neighbour, alice.socket.local, "from the LAN")
      yield* tick(10)
      expect(alice.got).toEqual([`${ALICE_NEIGHBOUR}:6000=from the LAN`])
    }),
  )

  it.scoped(
    "hairpinning: off drops a send to the own NAT's public endpoint, on delivers it from the mapping",
    () =>
      Effect.gen(function* () {
        for (const hairpinning of [false, true]) {
          const { sim, alice, server } = yield* natWorld("full-cone", { hairpinning })
          const neighbour = yield* open(sim, ALICE_NEIGHBOUR, 6000)
          yield* say(alice, server.socket.local, "register")
          yield* say(neighbour, server.socket.local, "register")
          yield* tick(10)
          const [aliceMapped, neighbourMapped] = server.got.map((line) => {
            const [host = "", port = "0"] = line.split("=")[0]?.split(":") ?? []
            return { host, port: Number(port) }
          })
          expect(aliceMapped?.port).not.toBe(neighbourMapped?.port)
          yield* say(neighbour, aliceMapped as Endpoint, "hairpin")
          yield* tick(10)
          expect(alice.got).toEqual(hairpinning ? [`${NAT_PUBLIC}:${neighbourMapped?.port}=hairpin`] : [])
        }
      }),
  )

  it.scoped(
    "stats count bytes each way per host, by the address each side saw (spoofed injections too)",
    () =>
      Effect.gen(function* () {
        const { sim, alice, server } = yield* natWorld("full-cone")
        yield* say(alice, server.socket.local, "12345")
        yield* tick(10)
        yield* say(server, lastFrom(server), "1234567890")
        yield* sim.inject({ host: "192.0.2.66", port: 1 }, server.socket.local, new Uint8Array(7))
        yield* tick(10)
        const atServer = yield* sim.stats(SERVER)
        expect(atServer.sent).toEqual({ datagrams: 1, bytes: 10 })
        expect(atServer.received).toEqual({ datagrams: 2, bytes: 12 })
        expect(atServer.sentTo.get(NAT_PUBLIC)).toEqual({ datagrams: 1, bytes: 10 })
        expect(atServer.receivedFrom.get(NAT_PUBLIC)).toEqual({ datagrams: 1, bytes: 5 })
        expect(atServer.receivedFrom.get("192.0.2.66")).toEqual({ datagrams: 1, bytes: 7 })
        const atAlice = yield* sim.stats(ALICE)
        expect(atAlice.sentTo.get(SERVER)).toEqual({ datagrams: 1, bytes: 5 })
        expect(atAlice.receivedFrom.get(SERVER)).toEqual({ datagrams: 1, bytes: 10 })
      }),
  )

  it.scoped("a partition loses datagrams across it until heal", () =>
    Effect.gen(function* () {
      const { sim, alice, server } = yield* natWorld("full-cone")
      yield* say(alice, server.socket.local, "before")
      yield* tick(10)
      yield* sim.partition([[NAT_PUBLIC], [SERVER]])
      yield* say(alice, server.socket.local, "during")
      yield* tick(10)
      yield* sim.heal
      yield* say(alice, server.socket.local, "after")
      yield* tick(10)
      expect(server.got.map((line) => line.split("=")[1])).toEqual(["before", "after"])
    }),
  )
})

/** faultyRun sends 500 numbered datagrams over a lossy, duplicating, reordering link and returns what arrived. */
const faultyRun = (seed: number) =>
  Effect.scoped(
    Effect.gen(function* () {
      const sim = yield* makeDatagramSim({
        seed,
        defaultLink: { latency: "20 millis", jitter: "5 millis", loss: 0.1, duplicate: 0.05, reorder: 0.2 },
      })
      const a = yield* open(sim, "10.0.0.1")
      const b = yield* open(sim, "10.0.0.2", 9000)
      for (let i = 0; i < 500; i++) {
        yield* say(a, b.socket.local, String(i))
        if (i % 25 === 24) yield* tick(1)
      }
      yield* tick(1_000)
      return b.got.map((line) => Number(line.split("=")[1]))
    }),
  )

describe("DatagramSim faults", () => {
  it.effect("the same seed gives the same deliveries; loss, duplication and reordering all happen", () =>
    Effect.gen(function* () {
      const first = yield* faultyRun(7)
      const again = yield* faultyRun(7)
      const other = yield* faultyRun(8)
      expect(again).toEqual(first)
      expect(other).not.toEqual(first)
      const distinct = new Set(first)
      expect(distinct.size).toBeGreaterThan(400)
      expect(distinct.size).toBeLessThan(490)
      expect(first.length).toBeGreaterThan(distinct.size) // duplicates
      const outOfOrder = first.filter((n, i) => i > 0 && n < (first[i - 1] ?? 0)).length
      expect(outOfOrder).toBeGreaterThan(10)
    }),
  )

  it.scoped("a send over MAX_DATAGRAM_BYTES fails with too-large and is not counted", () =>
    Effect.gen(function* () {
      const sim = yield* makeDatagramSim({ seed: 1 })
      const a = yield* open(sim, "10.0.0.1")
      const error = yield* Effect.flip(a.socket.send({ host: "10.0.0.2", port: 1 }, new Uint8Array(1_201)))
      expect(error.reason).toBe("too-large")
      expect((yield* sim.stats("10.0.0.1")).sent).toEqual({ datagrams: 0, bytes: 0 })
    }),
  )
})

/**
 * punch plays the textbook hole punch between Alice behind a NAT of type `left` and Bob behind one of
 * type `right`: both register with a server, which tells each the other's public endpoint; then for
 * five rounds each probes the endpoint it knows, switching to any endpoint it actually heard Bob/Alice
 * from. It is whether Alice and Bob each heard the other.
 */
const punch = (left: NatType, right: NatType) =>
  Effect.scoped(
    Effect.gen(function* () {
      const sim = yield* makeDatagramSim({ seed: 1, defaultLink: { latency: "10 millis" } })
      yield* sim.addNat({ publicHost: "198.51.100.1", type: left, privateHosts: ["192.168.1.2"] })
      yield* sim.addNat({ publicHost: "198.51.100.2", type: right, privateHosts: ["192.168.2.2"] })
      const alice = yield* open(sim, "192.168.1.2", 5000)
      const bob = yield* open(sim, "192.168.2.2", 5000)
      const server = yield* open(sim, SERVER, 3478)
      yield* say(alice, server.socket.local, "register")
      yield* tick(10)
      const aliceSeen = lastFrom(server)
      yield* say(bob, server.socket.local, "register")
      yield* tick(10)
      const bobSeen = lastFrom(server)
      const targets = new Map<Inbox, Endpoint>([
        [alice, bobSeen],
        [bob, aliceSeen],
      ])
      for (let round = 0; round < 5; round++) {
        for (const [side, target] of targets) yield* say(side, target, "probe")
        yield* tick(20)
        for (const side of targets.keys()) if (side.got.length > 0) targets.set(side, lastFrom(side))
      }
      return [alice.got.length > 0, bob.got.length > 0]
    }),
  )

describe("DatagramSim hole punching follows the NAT rules", () => {
  const table: ReadonlyArray<readonly [NatType, NatType, boolean]> = [
    ["full-cone", "full-cone", true],
    ["port-restricted", "port-restricted", true],
    ["address-restricted", "port-restricted", true],
    ["full-cone", "symmetric", true],
    ["address-restricted", "symmetric", true],
    ["port-restricted", "symmetric", false],
    ["symmetric", "symmetric", false],
  ]
  for (const [left, right, works] of table) {
    it.effect(`${left} with ${right}: ${works ? "both sides get through" : "no side gets through"}`, () =>
      Effect.gen(function* () {
        expect(yield* punch(left, right)).toEqual([works, works])
        expect(yield* punch(right, left)).toEqual([works, works])
      }),
    )
  }
})
