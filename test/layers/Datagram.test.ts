import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Exit, Fiber, Scope, Stream, TestClock } from "effect"
import {
  type DatagramService,
  type DatagramSocket,
  MAX_DATAGRAM_BYTES,
  RECEIVE_BUFFER_DATAGRAMS,
  type ReceivedDatagram,
} from "../../src/layers/Datagram.js"
import { makeDatagramSim } from "../../src/layers/DatagramSim.js"
import { makeUdp, type UdpDatagramSocket } from "../../src/layers/DatagramUdp.js"
import type { Endpoint } from "../../src/layers/Transport.js"

/**
 * Harness is one Datagram layer under the contract: two hosts' services, the address to bind on each,
 * and `settle`, which lets datagrams in flight arrive (real time over UDP, the TestClock in the sim).
 */
interface Harness {
  readonly a: DatagramService
  readonly b: DatagramService
  readonly bindAt: { readonly a: Endpoint; readonly b: Endpoint }
  readonly settle: Effect.Effect<void>
  /** dropped is how many datagrams arrived at `socket` (host b) while its buffer was full */
  readonly dropped: (socket: DatagramSocket) => Effect.Effect<number>
}

interface Layer {
  readonly name: string
  readonly test: typeof it.scopedLive
  readonly make: Effect.Effect<Harness, never, Scope.Scope>
}

const loopback = { host: "127.0.0.1", port: 0 }

const layers: ReadonlyArray<Layer> = [
  {
    name: "UDP on loopback",
    test: it.scopedLive,
    make: Effect.succeed({
      a: makeUdp(),
      b: makeUdp(),
      bindAt: { a: loopback, b: loopback },
      settle: Effect.sleep("100 millis"),
      dropped: (socket) => (socket as UdpDatagramSocket).dropped,
    }),
  },
  {
    name: "the sim",
    test: it.scoped,
    make: Effect.map(makeDatagramSim({ seed: 1, defaultLink: { latency: "5 millis" } }), (sim) => ({
      a: sim.service("10.0.0.1"),
      b: sim.service("10.0.0.2"),
      bindAt: { a: { host: "10.0.0.1", port: 0 }, b: { host: "10.0.0.2", port: 0 } },
      settle: Effect.andThen(TestClock.adjust("100 millis"), Effect.yieldNow()),
      dropped: () => Effect.map(sim.stats("10.0.0.2"), (stats) => stats.dropped.datagrams),
    })),
  },
]

/** takeN reads `n` datagrams from a socket. */
const takeN = (socket: DatagramSocket, n: number): Effect.Effect<ReadonlyArray<ReceivedDatagram>> =>
  Effect.map(Stream.runCollect(Stream.take(socket.received, n)), Chunk.toReadonlyArray)

const bytes = (...values: Array<number>) => new Uint8Array(values)

for (const layer of layers) {
  describe(`Datagram over ${layer.name}`, () => {
    layer.test(
      "binding port 0 gets a real port; datagrams arrive whole with the sender's address as from",
      () =>
        Effect.gen(function* () {
          const h = yield* layer.make
          const a = yield* h.a.bind(h.bindAt.a)
          const b = yield* h.b.bind(h.bindAt.b)
          expect(a.local.port).toBeGreaterThan(0)
          expect(b.local.port).toBeGreaterThan(0)
          const atB = yield* Effect.fork(takeN(b, 2))
          const atA = yield* Effect.fork(takeN(a, 1))
          yield* a.send(b.local, bytes(1, 2, 3))
          const full = new Uint8Array(MAX_DATAGRAM_BYTES).fill(7)
          yield* a.send(b.local, full)
          yield* h.settle
          yield* b.send(a.local, bytes(9))
          yield* h.settle
          const got = yield* Fiber.join(atB)
          expect(got.map((d) => d.from)).toEqual([a.local, a.local])
          expect(got.map((d) => Array.from(d.data))).toEqual([[1, 2, 3], Array.from(full)])
          expect(yield* Fiber.join(atA)).toEqual([{ from: b.local, data: bytes(9) }])
        }),
    )

    layer.test("a bound port is in use until its scope closes, then free again", () =>
      Effect.gen(function* () {
        const h = yield* layer.make
        const scope = yield* Scope.make()
        const first = yield* Scope.extend(h.a.bind(h.bindAt.a), scope)
        const taken = yield* Effect.flip(h.a.bind(first.local))
        expect(taken.reason).toBe("in-use")
        yield* Scope.close(scope, Exit.void)
        const again = yield* h.a.bind(first.local)
        expect(again.local).toEqual(first.local)
      }),
    )

    layer.test("a datagram over MAX_DATAGRAM_BYTES is refused with too-large, before anything is sent", () =>
      Effect.gen(function* () {
        const h = yield* layer.make
        const a = yield* h.a.bind(h.bindAt.a)
        const b = yield* h.b.bind(h.bindAt.b)
        const error = yield* Effect.flip(a.send(b.local, new Uint8Array(MAX_DATAGRAM_BYTES + 1)))
        expect(error.reason).toBe("too-large")
        yield* a.send(b.local, bytes(42))
        yield* h.settle
        // Only the small one arrives.
        expect(yield* takeN(b, 1)).toEqual([{ from: a.local, data: bytes(42) }])
      }),
    )

    layer.test("close ends received, is idempotent, and a send on a closed socket fails with closed", () =>
      Effect.gen(function* () {
        const h = yield* layer.make
        const a = yield* h.a.bind(h.bindAt.a)
        const b = yield* h.b.bind(h.bindAt.b)
        const reader = yield* Effect.fork(Stream.runCollect(b.received))
        yield* a.send(b.local, bytes(1))
        yield* h.settle
        yield* b.close
        yield* b.close
        const got = Chunk.toReadonlyArray(yield* Fiber.join(reader))
        expect(got.map((d) => Array.from(d.data))).toEqual([[1]])
        const error = yield* Effect.flip(b.send(a.local, bytes(2)))
        expect(error.reason).toBe("closed")
        // Sending to the closed socket is not an error (UDP has no connection), it is just lost.
        yield* a.send(b.local, bytes(3))
      }),
    )

    layer.test("an unread socket keeps at most RECEIVE_BUFFER_DATAGRAMS and drops the rest", () =>
      Effect.gen(function* () {
        const h = yield* layer.make
        const a = yield* h.a.bind(h.bindAt.a)
        const b = yield* h.b.bind(h.bindAt.b)
        const sent = 3 * RECEIVE_BUFFER_DATAGRAMS
        const payload = new Uint8Array(100)
        for (let i = 0; i < sent; i++) {
          payload[0] = i & 0xff
          yield* a.send(b.local, payload)
          if (i % 256 === 255) yield* h.settle
        }
        yield* h.settle
        yield* b.close
        const kept = Chunk.toReadonlyArray(yield* Stream.runCollect(b.received))
        expect(kept.length).toBeLessThanOrEqual(RECEIVE_BUFFER_DATAGRAMS)
        expect(kept.length).toBeGreaterThan(RECEIVE_BUFFER_DATAGRAMS / 2)
        // The first ones are kept: a full buffer drops new arrivals, it does not evict.
        expect(kept[0]?.data[0]).toBe(0)
        // Over UDP the OS buffer may drop some first; what reached us beyond the bound was counted.
        const dropped = yield* h.dropped(b)
        expect(dropped).toBeGreaterThan(0)
        expect(kept.length + dropped).toBeLessThanOrEqual(sent)
      }),
    )
  })
}
