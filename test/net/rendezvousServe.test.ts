import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import { Rendezvous } from "../../src/actors/Rendezvous.js"
import { SpamFilter } from "../../src/actors/SpamFilter.js"
import { makeDatagramSim } from "../../src/layers/DatagramSim.js"
import { makeSimNetwork } from "../../src/layers/TransportSim.js"
import { UdpEndpoint } from "../../src/layers/UdpEndpoint.js"
import { advance, quiet, simConfig, simTime, startNode, UDP_PORT, waitUntil } from "../support/simnet.js"

/**
 * A public node that has rendezvous servers configured serves rendezvous itself once its NAT probe
 * says it is reachable, under the caps of its node.json (`spam.maxRegistrationsPerIp`), and its one
 * SpamFilter (the PeerManager's) governs the datagrams too: a setban silences the banned IP.
 */

const SERVER = "203.0.113.1"
const PUBLIC = "203.0.113.2"
const LAN_PUBLIC = "198.51.100.7"
const LAN = ["192.168.7.10", "192.168.7.11"]

describe("a public node with rendezvous servers configured (TestClock, simulated NATs)", () => {
  it.scoped(
    "serves registrations once its probe says open, capped per IP from node.json; a ban in its SpamFilter silences that IP's datagrams",
    () =>
      quiet(
        Effect.gen(function* () {
          yield* simTime
          const tcp = yield* makeSimNetwork({ seed: 21, defaultLink: { latency: "20 millis" } })
          const udp = yield* makeDatagramSim({ seed: 21, defaultLink: { latency: "20 millis" } })
          const server = { host: SERVER, port: UDP_PORT }
          const publicUdp = { host: PUBLIC, port: UDP_PORT }
          yield* udp.addNat({ publicHost: LAN_PUBLIC, type: "full-cone", privateHosts: LAN })
          yield* startNode(tcp, simConfig(SERVER), { datagramSim: udp })
          const p = yield* startNode(
            tcp,
            { ...simConfig(PUBLIC), rendezvous: [server], spam: { maxRegistrationsPerIp: 1 } },
            { datagramSim: udp },
          )
          // before its probe answers, it does not serve
          expect(yield* p.run(Effect.flatMap(Rendezvous, (r) => r.serving))).toBe(false)
          yield* waitUntil(
            Effect.map(p.run(Effect.flatMap(UdpEndpoint, (u) => u.nat)), (n) => n.kind !== "unknown"),
            "30 seconds",
          )
          expect((yield* p.run(Effect.flatMap(UdpEndpoint, (u) => u.nat))).kind).toBe("open")
          expect(yield* p.run(Effect.flatMap(Rendezvous, (r) => r.serving))).toBe(true)

          // two nodes behind one NAT use the public node as their server: one registration per IP
          const lan = yield* Effect.forEach(LAN, (host) =>
            startNode(tcp, { ...simConfig(host), rendezvous: [publicUdp] }, { datagramSim: udp }),
          )
          const registrations = p.run(Effect.flatMap(Rendezvous, (r) => r.registrations))
          yield* waitUntil(
            Effect.map(registrations, (n) => n >= 1),
            "60 seconds",
          )
          const natOf = (i: number) => lan[i]!.run(Effect.flatMap(UdpEndpoint, (u) => u.nat))
          yield* waitUntil(
            Effect.map(Effect.all([natOf(0), natOf(1)]), (ns) => ns.every((n) => n.kind === "cone")),
            "60 seconds",
          )
          // the second one's registration is refused (ip-registrations-full) however often it retries
          yield* advance("20 seconds", "100 millis")
          expect(yield* registrations).toBe(1)
          const registered = yield* Effect.all([natOf(0), natOf(1)])
          expect(registered.map((n) => n.registeredAt.length).sort()).toEqual([0, 1])

          // the operator bans the NAT's public IP at the public node: its echo goes unanswered
          yield* p.run(Effect.flatMap(SpamFilter, (f) => f.ban(LAN_PUBLIC, { reason: "setban" })))
          const echo = yield* lan[0]!.run(
            Effect.fork(Effect.either(Effect.flatMap(Rendezvous, (r) => r.echo(publicUdp)))),
          )
          yield* waitUntil(
            Effect.map(echo.poll, (o) => o._tag === "Some"),
            "30 seconds",
          )
          const outcome = yield* echo.await
          expect(
            outcome._tag === "Success" && Either.isLeft(outcome.value) && outcome.value.left.reason,
          ).toBe("timeout")
          // another IP is still served
          const other = yield* startNode(
            tcp,
            { ...simConfig("203.0.113.9"), rendezvous: [publicUdp] },
            {
              datagramSim: udp,
            },
          )
          const seen = yield* other.run(Effect.fork(Effect.flatMap(Rendezvous, (r) => r.echo(publicUdp))))
          yield* waitUntil(
            Effect.map(seen.poll, (o) => o._tag === "Some"),
            "30 seconds",
          )
          expect(yield* seen.await).toMatchObject({ _tag: "Success", value: { host: "203.0.113.9" } })
        }),
      ),
    120_000,
  )
})
