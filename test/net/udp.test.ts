import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Option, Queue, TestClock } from "effect"
import { Rendezvous } from "../../src/actors/Rendezvous.js"
import { makeDatagramSim } from "../../src/layers/DatagramSim.js"
import { makeSimNetwork } from "../../src/layers/TransportSim.js"
import { UdpEndpoint } from "../../src/layers/UdpEndpoint.js"
import { toHex } from "../../src/schema/hex.js"
import { quiet, settle, simConfig, simTime, startNode, UDP_PORT, waitUntil } from "../support/simnet.js"
import { pattern, readExactly } from "../support/streams.js"

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
    "a NAT'd node registers at a public node and stays registered; another NAT'd node punches to it and a session carries bytes both ways",
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

          // a UDP session over the punched path, authenticated with A's session key, both ways
          const bSessions = (yield* b.run(UdpEndpoint)).sessions
          const aSessions = (yield* a.run(UdpEndpoint)).sessions
          const outbound = yield* runFor(
            bSessions.connect({ remote: punched.remote, remotePublicKey: punched.sessionKey }),
          )
          const inbound = yield* runFor(Queue.take(aSessions.accepted))
          // each side knows the other's session key: the session is authenticated to it
          expect(toHex(outbound.remotePublicKey)).toBe(toHex(aSessionKey))
          expect(toHex(inbound.remotePublicKey)).toBe(toHex(bSessions.publicKey))
          expect(inbound.remote.host).toBe(B_PUBLIC)
          const toA = pattern(20_000, 1)
          const toB = pattern(20_000, 2)
          yield* outbound.write(toA)
          yield* inbound.write(toB)
          const [atA, atB] = yield* runFor(
            Effect.all([readExactly(inbound, toA.length), readExactly(outbound, toB.length)], {
              concurrency: 2,
            }),
          )
          expect(toHex(atA)).toBe(toHex(toA))
          expect(toHex(atB)).toBe(toHex(toB))
        }),
      ),
    { timeout: 60_000 },
  )
})
