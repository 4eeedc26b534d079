import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, Either, Exit, Fiber, Queue, Random, Scope, Stream, TestClock } from "effect"
import { type Connection, layerTcp, Transport } from "../../src/layers/Transport.js"
import { type LinkOptions, makeSimNetwork } from "../../src/layers/TransportSim.js"
import { pattern, readAll, readExactly } from "../support/streams.js"

const loopback = { host: "127.0.0.1", port: 0 }

/** writeInPieces writes `bytes` in seeded random-sized writes (1 B to 64 KiB). */
const writeInPieces = (conn: Connection, bytes: Uint8Array, seed: number) =>
  Effect.gen(function* () {
    const rng = Random.make(seed)
    let at = 0
    while (at < bytes.length) {
      const size = yield* rng.nextIntBetween(1, 65_536)
      yield* conn.write(bytes.subarray(at, at + size))
      at += size
    }
  })

describe("Transport over TCP", () => {
  it.scopedLive(
    "carries 1 MB each way in order between correct endpoints, and a close ends the peer's read",
    () =>
      Effect.gen(function* () {
        const transport = yield* Transport
        const listener = yield* transport.listen(loopback)
        expect(listener.local.host).toBe("127.0.0.1")
        expect(listener.local.port).toBeGreaterThan(0)
        const client = yield* transport.connect(listener.local)
        const server = yield* Queue.take(listener.accepted)

        expect(client.direction).toBe("outbound")
        expect(server.direction).toBe("inbound")
        expect(client.remote).toEqual(listener.local)
        expect(server.local).toEqual(listener.local)
        expect(server.remote).toEqual(client.local)

        const up = pattern(1_000_000, 1)
        const down = pattern(1_000_000, 2)
        const [, , atServer, atClient] = yield* Effect.all(
          [
            writeInPieces(client, up, 3),
            writeInPieces(server, down, 4),
            readExactly(server, up.length),
            readExactly(client, down.length),
          ],
          { concurrency: "unbounded" },
        )
        expect(atServer).toEqual(up)
        expect(atClient).toEqual(down)
        const rest = yield* Effect.fork(readAll(server))
        yield* client.close
        expect((yield* Fiber.join(rest)).length).toBe(0)
        const error = yield* Effect.flip(client.write(new Uint8Array(1)))
        expect(error.reason).toBe("closed")
      }).pipe(Effect.provide(layerTcp)),
  )

  it.scopedLive(
    "connecting to a port nobody listens on fails with refused; the listener is freed with its scope",
    () =>
      Effect.gen(function* () {
        const transport = yield* Transport
        const listenerScope = yield* Scope.make()
        const listener = yield* Scope.extend(transport.listen(loopback), listenerScope)
        const client = yield* transport.connect(listener.local)
        const server = yield* Queue.take(listener.accepted)
        yield* server.write(new Uint8Array([1, 2, 3]))
        const inboundRead = yield* Effect.fork(readAll(client))
        const local = listener.local
        yield* Scope.close(listenerScope, Exit.void)
        // The accepted connection closed with the listener: the client's read ends after the bytes sent.
        expect(yield* Fiber.join(inboundRead)).toEqual(new Uint8Array([1, 2, 3]))
        const error = yield* Effect.flip(transport.connect(local))
        expect(error.reason).toBe("refused")
      }).pipe(Effect.provide(layerTcp)),
  )

  it.scopedLive(
    "a peer that does not read builds a write backlog instead of our memory, and abort resets it",
    () =>
      Effect.gen(function* () {
        const transport = yield* Transport
        const listener = yield* transport.listen(loopback)
        const client = yield* transport.connect(listener.local)
        const server = yield* Queue.take(listener.accepted)
        const chunk = new Uint8Array(65_536)
        for (let i = 0; i < 1024; i++) yield* client.write(chunk) // 64 MiB, never read
        yield* Effect.sleep("100 millis")
        expect(yield* client.pendingWriteBytes).toBeGreaterThan(16 * 1024 * 1024)
        yield* client.abort
        // The server's read ends: Linux may report an RST that lands on unread data as a plain end.
        const result = yield* Effect.either(Stream.runDrain(server.read))
        if (Either.isLeft(result)) expect(result.left.reason).toBe("reset")
        expect(yield* client.pendingWriteBytes).toBe(0)
      }).pipe(Effect.provide(layerTcp)),
  )
})

/** trace records each received chunk's arrival time and bytes. */
const traceReads = (conn: Connection) =>
  Effect.gen(function* () {
    const trace: Array<string> = []
    const fiber = yield* Effect.fork(
      Stream.runForEach(conn.read, (chunk) =>
        Effect.map(Clock.currentTimeMillis, (t) => void trace.push(`${t}:${chunk.join(",")}`)),
      ),
    )
    return { trace, fiber }
  })

/** tick advances the TestClock and lets the woken fibers run. */
const tick = (millis: number) => Effect.andThen(TestClock.adjust(millis), Effect.yieldNow())

/** pairOver connects a → b:8333 over a fresh sim network (the connect takes one round trip). */
const pairOver = (link: LinkOptions, seed = 1, receiveBufferChunks?: number) =>
  Effect.gen(function* () {
    const network = yield* makeSimNetwork(
      receiveBufferChunks === undefined ? { seed } : { seed, receiveBufferChunks },
    )
    yield* network.setLink("a", "b", link)
    const listener = yield* network.transport("b").listen({ host: "b", port: 8333 })
    const connecting = yield* Effect.fork(network.transport("a").connect(listener.local))
    yield* tick(2 * 1000)
    const client = yield* Fiber.join(connecting)
    const server = yield* Queue.take(listener.accepted)
    return { network, listener, client, server }
  })

describe("Transport over the sim network", () => {
  it.scoped("delivers bytes in order after the link latency, not before", () =>
    Effect.gen(function* () {
      const { client, server } = yield* pairOver({ latency: "100 millis" })
      expect(client.remote).toEqual({ host: "b", port: 8333 })
      expect(server.remote).toEqual(client.local)
      const { trace } = yield* traceReads(server)
      const start = yield* Clock.currentTimeMillis
      for (let i = 0; i < 5; i++) yield* client.write(new Uint8Array([i]))
      yield* tick(99)
      expect(trace).toEqual([])
      expect(yield* client.pendingWriteBytes).toBe(5)
      yield* tick(1)
      expect(trace.join(",")).toBe([0, 1, 2, 3, 4].map((i) => `${start + 100}:${i}`).join(","))
      expect(yield* client.pendingWriteBytes).toBe(0)
    }),
  )

  it.scoped("a connect takes one round trip; with no listener it is refused", () =>
    Effect.gen(function* () {
      const network = yield* makeSimNetwork({ seed: 1, defaultLink: { latency: "50 millis" } })
      const connecting = yield* Effect.fork(
        Effect.flip(network.transport("a").connect({ host: "b", port: 1 })),
      )
      yield* tick(99)
      expect(connecting.unsafePoll()).toBeNull()
      yield* tick(1)
      expect((yield* Fiber.join(connecting)).reason).toBe("refused")
    }),
  )

  it.scoped("bandwidth delays a large write in proportion to its size", () =>
    Effect.gen(function* () {
      const { client, server } = yield* pairOver({ latency: "10 millis", bandwidthBytesPerSecond: 1000 })
      const { trace } = yield* traceReads(server)
      const start = yield* Clock.currentTimeMillis
      yield* client.write(new Uint8Array(500))
      yield* client.write(new Uint8Array(1000))
      yield* tick(509)
      expect(trace).toHaveLength(0)
      yield* tick(1)
      expect(trace).toHaveLength(1)
      yield* tick(999)
      expect(trace).toHaveLength(1)
      yield* tick(1)
      expect(trace.map((line) => Number(line.split(":")[0]) - start)).toEqual([510, 1510])
    }),
  )

  it.scoped("a partition resets live connections and makes new ones unreachable until heal", () =>
    Effect.gen(function* () {
      const { network, listener, client, server } = yield* pairOver({ latency: "10 millis" })
      const serverRead = yield* Effect.fork(Effect.flip(Stream.runDrain(server.read)))
      const clientRead = yield* Effect.fork(Effect.flip(Stream.runDrain(client.read)))
      yield* client.write(new Uint8Array([1]))
      yield* network.partition([["a"], ["b"]])
      expect((yield* Fiber.join(serverRead)).reason).toBe("reset")
      expect((yield* Fiber.join(clientRead)).reason).toBe("reset")
      expect((yield* Effect.flip(client.write(new Uint8Array([2])))).reason).toBe("reset")

      const across = yield* Effect.fork(Effect.flip(network.transport("a").connect(listener.local)))
      yield* tick(20)
      expect((yield* Fiber.join(across)).reason).toBe("unreachable")

      yield* network.heal
      const again = yield* Effect.fork(network.transport("a").connect(listener.local))
      yield* tick(20)
      const healed = yield* Fiber.join(again)
      const inbound = yield* Queue.take(listener.accepted)
      const { trace } = yield* traceReads(inbound)
      yield* healed.write(new Uint8Array([3]))
      yield* tick(10)
      expect(trace.map((line) => line.split(":")[1])).toEqual(["3"])
    }),
  )

  it.scoped("closing one side ends the other's read after the bytes in flight", () =>
    Effect.gen(function* () {
      const { client, server } = yield* pairOver({ latency: "10 millis" })
      const received = yield* Effect.fork(readAll(server))
      yield* client.write(new Uint8Array([7, 8]))
      yield* client.close
      yield* tick(10)
      expect(yield* Fiber.join(received)).toEqual(new Uint8Array([7, 8]))
    }),
  )

  it.scoped("an unread connection stalls the link and shows as write backlog; abort resets the peer", () =>
    Effect.gen(function* () {
      const { client, server } = yield* pairOver({ latency: "1 millis" }, 1, 4)
      for (let i = 0; i < 10; i++) yield* client.write(new Uint8Array(100))
      yield* tick(10)
      expect(yield* client.pendingWriteBytes).toBe(600)
      yield* client.abort
      expect(yield* client.pendingWriteBytes).toBe(0)
      const error = yield* Effect.flip(Stream.runDrain(server.read))
      expect(error.reason).toBe("reset")
    }),
  )

  /** faultyRun sends 100 one-byte writes over a lossy, duplicating, reordering link; returns the receive trace. */
  const faultyRun = (seed: number) =>
    Effect.scoped(
      Effect.gen(function* () {
        const { client, server } = yield* pairOver(
          { latency: "10 millis", loss: 0.1, duplicate: 0.1, reorder: 0.1 },
          seed,
        )
        const start = yield* Clock.currentTimeMillis
        const { trace } = yield* traceReads(server)
        for (let i = 0; i < 100; i++) {
          yield* client.write(new Uint8Array([i]))
          yield* tick(1)
        }
        yield* tick(100)
        return trace.map((line) => {
          const [t, bytes] = line.split(":")
          return `${Number(t) - start}:${bytes}`
        })
      }),
    )

  it.scoped("the same seed gives the same delivery schedule under loss, duplication and reordering", () =>
    Effect.gen(function* () {
      const first = yield* faultyRun(7)
      const second = yield* faultyRun(7)
      const other = yield* faultyRun(8)
      expect(second).toEqual(first)
      expect(other).not.toEqual(first)
      const bytes = first.map((line) => Number(line.split(":")[1]))
      expect(bytes).not.toEqual([...Array(100).keys()]) // the faults did happen
      expect(new Set(bytes).size).toBeLessThan(100) // some writes were lost
      expect(bytes.length).toBeGreaterThan(new Set(bytes).size) // some were duplicated
    }),
  )
})
