import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, Fiber, Layer, Logger, LogLevel, Option, Stream, TestClock } from "effect"
import { Network, type NetworkError } from "../../src/actors/PeerManager.js"
import { regtest } from "../../src/consensus/params.js"
import { type Endpoint, Transport } from "../../src/layers/Transport.js"
import { makeSimNetwork, type SimNetwork } from "../../src/layers/TransportSim.js"
import { netMethods } from "../../src/rpc/netMethods.js"
import type { NodeConfig } from "../../src/schema/config.js"
import { encodeMessage, type FrameEvent, Framer } from "../../src/schema/frame.js"
import { hostToBytes } from "../../src/schema/netaddr.js"
import { type Command, VerackMessage, VersionMessage } from "../../src/schema/wire.js"
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

const NODE = "10.0.0.1"
const at = (host: string): Endpoint => ({ host, port: P2P_PORT })

/** withLimits is `config` with some limits changed. */
const withLimits = (config: NodeConfig, limits: Partial<NodeConfig["limits"]>): NodeConfig => ({
  ...config,
  limits: { ...config.limits, ...limits },
})

const peersOf = (node: SimNode) => node.run(Effect.flatMap(Network, (n) => n.peers))
const countOf = (node: SimNode) => node.run(Effect.flatMap(Network, (n) => n.connectionCount))
/** outboundTo is the node's handshaken outbound connections to `host` (feelers may come and go inbound) */
const outboundTo = (node: SimNode, host: string) =>
  Effect.map(peersOf(node), (ps) => ps.filter((p) => !p.info.inbound && p.info.addr.host === host).length)
const hostsOf = (node: SimNode) => Effect.map(peersOf(node), (ps) => ps.map((p) => p.info.addr.host))

/** Dial is one outbound connect a node's transport attempted. */
interface Dial {
  readonly from: string
  readonly to: Endpoint
  readonly at: number
}

/** counting is `sim` with every node transport recording its connect attempts in `dials`. */
const counting = (sim: SimNetwork, dials: Array<Dial>): SimNetwork => ({
  ...sim,
  layer: (host) => {
    const transport = sim.transport(host)
    return Layer.succeed(Transport, {
      listen: transport.listen,
      connect: (to) =>
        Effect.flatMap(Clock.currentTimeMillis, (t) => {
          dials.push({ from: host, to, at: t })
          return transport.connect(to)
        }),
    })
  },
})

/** during samples `sample` every `step` of simulated time for `span`. */
const during = (span: Duration.DurationInput, step: Duration.DurationInput, sample: Effect.Effect<void>) =>
  Effect.gen(function* () {
    const steps = Math.ceil(Duration.toMillis(span) / Duration.toMillis(step))
    for (let i = 0; i < steps; i++) {
      yield* sample
      yield* TestClock.adjust(step)
      yield* settle
    }
    yield* sample
  })

/** capturing runs `effect` with debug logs recorded in `logs` (and not printed). */
const capturing =
  (logs: Array<string>) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    effect.pipe(
      Effect.provide(
        Logger.replace(
          Logger.defaultLogger,
          Logger.make(({ message }) => {
            logs.push(Array.isArray(message) ? message.join(" ") : String(message))
          }),
        ),
      ),
      Logger.withMinimumLogLevel(LogLevel.Debug),
    )

const RAW: ReadonlySet<Command> = new Set<Command>(["block", "tx"])

/**
 * rawPeer dials the node from `host` and handshakes by hand (no listen port: it announces nothing),
 * then reads and drops whatever it is sent. `open` is false once the node closed the connection.
 */
const rawPeer = (sim: SimNetwork, host: string, nonce: bigint) =>
  Effect.gen(function* () {
    const conn = yield* sim.transport(host).connect(at(NODE))
    const framer = new Framer(regtest.magic, RAW)
    const received: Array<FrameEvent> = []
    const reader = yield* Effect.fork(
      Stream.runForEach(conn.read, (chunk) =>
        Effect.sync(() => void received.push(...framer.push(chunk))),
      ).pipe(Effect.either),
    )
    const version = new VersionMessage({
      protocolVersion: 1,
      services: 1,
      bestHeight: 0,
      userAgent: "/raw:0.1/",
      nonce,
      listenPort: 0,
      theirAddress: { host: hostToBytes(NODE)!, port: P2P_PORT },
    })
    yield* conn.write(encodeMessage(regtest.magic, version))
    yield* conn.write(encodeMessage(regtest.magic, new VerackMessage()))
    return { host, conn, received, open: Effect.map(Fiber.poll(reader), Option.isNone) }
  })

describe("PeerManager on a simulated network", () => {
  it.scoped("never holds more than maxInbound inbound connections; with few peers all are protected", () =>
    quiet(
      Effect.gen(function* () {
        yield* simTime
        const sim = yield* makeSimNetwork({ seed: 1, defaultLink: { latency: "10 millis" } })
        const node = yield* startNode(sim, withLimits(simConfig(NODE), { maxInbound: 2, maxOutbound: 0 }))
        const dialers: Array<SimNode> = []
        for (let i = 0; i < 4; i++) dialers.push(yield* startNode(sim, simConfig(`10.${i + 1}.0.1`, [NODE])))
        let most = 0
        yield* during(
          "30 seconds",
          "100 millis",
          Effect.map(countOf(node), (c) => {
            most = Math.max(most, c.inbound)
          }),
        )
        expect(most).toBe(2)
        expect((yield* countOf(node)).inbound).toBe(2)
        // two dialers got in and stayed; the other two keep being refused (2 candidates are all protected)
        const connected = yield* Effect.forEach(dialers, (d) => outboundTo(d, NODE))
        expect(connected.filter((n) => n === 1)).toHaveLength(2)
        expect(connected.filter((n) => n === 0)).toHaveLength(2)
      }),
    ),
  )

  it.scoped("when every inbound slot is taken, a newcomer gets in by evicting per selectEviction", () =>
    quiet(
      Effect.gen(function* () {
        yield* simTime
        const sim = yield* makeSimNetwork({ seed: 2 })
        const node = yield* startNode(sim, withLimits(simConfig(NODE), { maxInbound: 26, maxOutbound: 0 }))
        // connection order (ids 1..26): 4 lone /16s, 21 peers of 10.50/16, one more lone /16 (the youngest)
        const hosts = [
          ...[61, 62, 63, 64].map((b) => `10.${b}.0.1`),
          ...Array.from({ length: 21 }, (_, k) => `10.50.${k}.1`),
          "10.65.0.1",
        ]
        const raw = []
        for (const [i, host] of hosts.entries()) {
          raw.push(yield* rawPeer(sim, host, BigInt(1000 + i)))
          yield* waitUntil(
            Effect.map(countOf(node), (c) => c.inbound === i + 1),
            "2 seconds",
          )
          yield* TestClock.adjust("1 second") // distinct connection times
        }
        expect((yield* countOf(node)).inbound).toBe(26)
        // protected: the 4 lone /16s by group, the next 16 by ping/tx/block (ties: oldest), then the
        // older half of the 6 left; of 10.50.19.1, 10.50.20.1 and 10.65.0.1 the biggest /16's youngest goes
        const newcomer = yield* rawPeer(sim, "10.70.0.1", 9999n)
        yield* waitUntil(
          Effect.map(hostsOf(node), (hs) => hs.includes("10.70.0.1")),
          "5 seconds",
        )
        yield* settle
        const after = yield* hostsOf(node)
        expect(after).toHaveLength(26)
        expect(after).not.toContain("10.50.20.1")
        expect(after).toContain("10.65.0.1")
        expect((yield* countOf(node)).inbound).toBe(26)
        const open = yield* Effect.forEach(raw, (r) => r.open)
        expect(hosts.filter((_, i) => !open[i])).toEqual(["10.50.20.1"])
        expect(yield* newcomer.open).toBe(true)
      }),
    ),
  )

  it.scoped("a node told to connect to itself detects it once and does not redial itself", () =>
    Effect.gen(function* () {
      yield* simTime
      const logs: Array<string> = []
      const dials: Array<Dial> = []
      const sim = counting(yield* makeSimNetwork({ seed: 3 }), dials)
      const node = yield* capturing(logs)(startNode(sim, simConfig(NODE, [NODE])))
      yield* waitUntil(
        Effect.sync(() => logs.some((l) => l.includes("disconnecting: connected to self"))),
        "5 seconds",
      )
      let most = 0
      yield* during(
        "60 seconds",
        "1 second",
        Effect.map(peersOf(node), (p) => {
          most = Math.max(most, p.length)
        }),
      )
      expect(most).toBe(0)
      // the dialled address is known to be this node
      expect(logs.some((l) => l.includes(`${NODE}:${P2P_PORT} is this node`))).toBe(true)
      expect(dials.filter((d) => d.to.host === NODE)).toHaveLength(1)
    }),
  )

  it.scoped(
    "a configured peer that is down is retried with doubling backoff, and connects once it is up",
    () =>
      quiet(
        Effect.gen(function* () {
          yield* simTime
          const dials: Array<Dial> = []
          const sim = counting(yield* makeSimNetwork({ seed: 4 }), dials)
          const start = yield* Clock.currentTimeMillis
          const a = yield* startNode(sim, simConfig(NODE, ["10.0.0.2"]))
          yield* during("125 seconds", "1 second", Effect.void)
          const times = dials.filter((d) => d.to.host === "10.0.0.2").map((d) => (d.at - start) / 1000)
          const gaps = times.slice(1).map((t, i) => t - times[i]!)
          // retryBase 1 s doubling per failure (2, 4, 8, 16, 32 s), capped at retryMax 60 s; ticks are 1 s
          expect(gaps).toHaveLength(6)
          for (const [i, gap] of gaps.entries()) {
            const expected = Math.min(2 ** (i + 1), 60)
            expect(gap).toBeGreaterThanOrEqual(expected)
            expect(gap).toBeLessThanOrEqual(expected + 1)
          }
          const b = yield* startNode(sim, withLimits(simConfig("10.0.0.2"), { maxOutbound: 0 }))
          yield* waitUntil(
            Effect.map(outboundTo(a, "10.0.0.2"), (n) => n === 1),
            "62 seconds",
            "500 millis",
          )
          expect((yield* peersOf(b)).filter((p) => p.info.addr.host === NODE)[0]?.info.inbound).toBe(true)
          // a dropped connection to a configured peer is redialled after retryBase
          const [fromA] = (yield* peersOf(b)).filter((p) => p.info.addr.host === NODE)
          yield* b.run(Effect.flatMap(Network, (n) => n.disconnectNode(fromA!.info.addr)))
          yield* waitUntil(
            Effect.map(outboundTo(a, "10.0.0.2"), (n) => n === 0),
            "2 seconds",
          )
          const dropped = yield* waitUntil(
            Effect.map(outboundTo(a, "10.0.0.2"), (n) => n === 1),
            "5 seconds",
          )
          expect(dropped).toBeLessThanOrEqual(2_100)
        }),
      ),
  )

  it.scoped("addnode add/remove/onetry and disconnectnode, with bitcoind's error codes", () =>
    quiet(
      Effect.gen(function* () {
        yield* simTime
        const sim = yield* makeSimNetwork({ seed: 5, defaultLink: { latency: "50 millis" } })
        const a = yield* startNode(sim, withLimits(simConfig(NODE), { maxOutbound: 0 }))
        const b = yield* startNode(sim, withLimits(simConfig("10.0.0.2"), { maxOutbound: 0 }))
        const net = yield* a.run(Network)
        const B = at("10.0.0.2")
        const code = <A>(effect: Effect.Effect<A, NetworkError>) =>
          Effect.map(Effect.flip(effect), (e) => e.code)
        const connected = Effect.map(outboundTo(a, "10.0.0.2"), (n) => n === 1)
        const disconnected = Effect.map(outboundTo(a, "10.0.0.2"), (n) => n === 0)
        /** stays checks that `condition` holds throughout `span` */
        const stays = (condition: Effect.Effect<boolean>, span: Duration.DurationInput) => {
          let ok = true
          return Effect.zipRight(
            during(
              span,
              "500 millis",
              Effect.map(condition, (c) => {
                ok &&= c
              }),
            ),
            Effect.sync(() => ok),
          )
        }

        // add: connected and kept connected
        yield* net.addNode(B, "add")
        yield* waitUntil(connected, "2 seconds")
        yield* waitUntil(
          Effect.map(peersOf(b), (ps) => ps.some((p) => p.info.inbound && p.info.addr.host === NODE)),
          "1 second",
        )
        expect(yield* code(net.addNode(B, "add"))).toBe(-23)
        expect(yield* code(net.addNode(at("10.0.0.9"), "remove"))).toBe(-24)
        expect(yield* code(net.disconnectNode(at("10.0.0.9")))).toBe(-29)

        // getpeerinfo and addnode through the RPC handlers
        const rpc = (name: string, params: ReadonlyArray<unknown>) =>
          a.run(
            netMethods("test")
              .find((m) => m.name === name)!
              .invoke(params),
          )
        const all = (yield* rpc("getpeerinfo", [])) as ReadonlyArray<Record<string, unknown>>
        const info = all.filter((p) => p.inbound === false)
        expect(info).toHaveLength(1)
        expect(info[0]).toMatchObject({
          addr: "10.0.0.2:18444",
          inbound: false,
          version: 1,
          // a full node: SERVICE_FULL | SERVICE_FILTERS (it runs the compact filter index)
          services: 9,
          startingheight: 0,
          pingtime: null,
          banscore: 0,
        })
        expect(info[0]!.subver).toMatch(/^\/fibercoin:/)
        expect(info[0]!.bytessent).toBeGreaterThan(0)
        expect(info[0]!.conntime).toBe(Math.floor((yield* Clock.currentTimeMillis) / 1000))
        const rpcError = yield* Effect.flip(rpc("addnode", ["10.0.0.2:18444", "add"]))
        expect(rpcError.code).toBe(-23)

        // disconnectnode on an added peer: it is redialled
        yield* net.disconnectNode(B)
        yield* waitUntil(disconnected, "1 second")
        yield* waitUntil(connected, "5 seconds")

        // remove: disconnected and not redialled
        yield* net.addNode(B, "remove")
        yield* waitUntil(disconnected, "1 second")
        expect(yield* stays(disconnected, "20 seconds")).toBe(true)
        expect(yield* code(net.addNode(B, "remove"))).toBe(-24)
        expect(yield* code(net.disconnectNode(B))).toBe(-29)

        // onetry: dialled once; not removable, and not redialled once disconnected
        yield* net.addNode(B, "onetry")
        yield* waitUntil(connected, "2 seconds")
        expect(yield* code(net.addNode(B, "remove"))).toBe(-24)
        yield* net.disconnectNode(B)
        yield* waitUntil(disconnected, "1 second")
        expect(yield* stays(disconnected, "20 seconds")).toBe(true)

        // remove while the connection is still being made (connect takes a 100 ms round trip)
        yield* net.addNode(B, "add")
        yield* net.addNode(B, "remove")
        expect(yield* stays(disconnected, "20 seconds")).toBe(true)
      }),
    ),
  )
})
