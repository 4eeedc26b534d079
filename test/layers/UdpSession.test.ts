import { describe, expect, it } from "@effect/vitest"
import {
  Chunk,
  Duration,
  Effect,
  Either,
  Fiber,
  Mailbox,
  Metric,
  Option,
  Random,
  type Scope,
  Stream,
  TestClock,
} from "effect"
import * as SpamFilter from "../../src/actors/SpamFilter.js"
import { defaultSpamPolicy } from "../../src/actors/spamPolicy.js"
import { ChainStore, makeMemoryStore } from "../../src/layers/ChainStore.js"
import {
  DatagramError,
  type DatagramSocket,
  MAX_DATAGRAM_BYTES,
  RECEIVE_BUFFER_DATAGRAMS,
  type ReceivedDatagram,
} from "../../src/layers/Datagram.js"
import { type DatagramLinkOptions, makeDatagramSim } from "../../src/layers/DatagramSim.js"
import { makeUdp } from "../../src/layers/DatagramUdp.js"
import type { Endpoint, TransportError } from "../../src/layers/Transport.js"
import {
  generateSessionKeys,
  IDLE_TIMEOUT,
  makeSessionEndpoint,
  RECEIVE_WINDOW_BYTES,
  type SessionEndpoint,
  sessionKeysFromSecret,
  type UdpConnection,
} from "../../src/layers/UdpSession.js"
import {
  decodeFrames,
  decodeSessionHeader,
  encodeFrames,
  SESSION_OPEN,
  type SessionFrame,
} from "../../src/schema/session.js"
import { pattern, readAll, readExactly } from "../support/streams.js"

/** Faults apply to each datagram independently: dropped, delivered twice, held back behind the next one, or one byte flipped. */
interface Faults {
  readonly loss?: number
  readonly duplicate?: number
  readonly reorder?: number
  readonly corrupt?: number
}

/**
 * LossyNet is a zero-latency in-memory datagram network with seeded faults. Zero latency keeps a
 * 10 MB transfer fast under TestClock (no sleep per datagram); time only matters for the sessions'
 * own timers. `spoofAs` makes a socket's datagrams arrive from another address.
 */
interface LossyNet {
  readonly bind: (at: Endpoint, spoofAs?: Endpoint) => Effect.Effect<DatagramSocket>
  readonly setFaults: (faults: Faults) => void
  readonly setDown: (down: boolean) => void
  readonly largest: () => number
  readonly delivered: () => number
  /** tap sees every datagram sent (before faults) */
  readonly tap: (f: (from: Endpoint, to: Endpoint, data: Uint8Array) => void) => void
  /** inject delivers a datagram as if sent from `from` */
  readonly inject: (from: Endpoint, to: Endpoint, data: Uint8Array) => void
}

const key = (e: Endpoint) => `${e.host}:${e.port}`

const makeLossyNet = (seed: number, initial: Faults): Effect.Effect<LossyNet> =>
  Effect.sync(() => {
    const rng = Random.make(seed)
    const roll = (p: number | undefined) => (p === undefined || p <= 0 ? false : Effect.runSync(rng.next) < p)
    const inboxes = new Map<string, Mailbox.Mailbox<ReceivedDatagram>>()
    let faults = initial
    let down = false
    let largest = 0
    let delivered = 0
    let tap: ((from: Endpoint, to: Endpoint, data: Uint8Array) => void) | undefined
    const held = new Map<string, { to: Endpoint; datagram: ReceivedDatagram }>()
    const arrive = (to: Endpoint, datagram: ReceivedDatagram) => {
      const inbox = inboxes.get(key(to))
      if (inbox?.unsafeOffer(datagram)) delivered++
    }
    const bind = (at: Endpoint, spoofAs?: Endpoint) =>
      Effect.gen(function* () {
        const inbox = yield* Mailbox.make<ReceivedDatagram>({
          capacity: RECEIVE_BUFFER_DATAGRAMS,
          strategy: "dropping",
        })
        inboxes.set(key(at), inbox)
        const socket: DatagramSocket = {
          local: at,
          send: (to, data) =>
            Effect.suspend(() => {
              if (data.length > MAX_DATAGRAM_BYTES) {
                return Effect.fail(new DatagramError({ reason: "too-large", detail: `${data.length} bytes` }))
              }
              largest = Math.max(largest, data.length)
              tap?.(spoofAs ?? at, to, data.slice())
              if (down || roll(faults.loss)) return Effect.void
              let bytes = data.slice()
              if (roll(faults.corrupt)) {
                const at = Math.floor(Effect.runSync(rng.next) * bytes.length)
                bytes = bytes.slice()
                bytes[at] = bytes[at]! ^ (1 + Math.floor(Effect.runSync(rng.next) * 255))
              }
              const datagram = { from: spoofAs ?? at, data: bytes }
              const lane = `${key(at)}>${key(to)}`
              if (!held.has(lane) && roll(faults.reorder)) {
                held.set(lane, { to, datagram })
                return Effect.void
              }
              arrive(to, datagram)
              if (roll(faults.duplicate)) arrive(to, datagram)
              const late = held.get(lane)
              if (late !== undefined) {
                held.delete(lane)
                arrive(late.to, late.datagram)
              }
              return Effect.void
            }),
          received: Mailbox.toStream(inbox),
          close: inbox.shutdown,
        }
        return socket
      })
    return {
      bind,
      setFaults: (next) => {
        faults = next
      },
      setDown: (next) => {
        down = next
      },
      largest: () => largest,
      delivered: () => delivered,
      tap: (f) => {
        tap = f
      },
      inject: (from, to, data) => arrive(to, { from, data }),
    }
  })

const A = { host: "127.0.0.1", port: 4001 }
const B = { host: "127.0.0.2", port: 4002 }
const M = { host: "127.0.0.3", port: 4003 }

const secret = (n: number) => new Uint8Array(32).fill(n)
const keysA = sessionKeysFromSecret(secret(1))
const keysB = sessionKeysFromSecret(secret(2))

/** writeAll writes `bytes` in 16 KiB pieces (write never waits). */
const writeAll = (conn: UdpConnection, bytes: Uint8Array) =>
  Effect.gen(function* () {
    for (let at = 0; at < bytes.length; at += 16_384) yield* conn.write(bytes.subarray(at, at + 16_384))
  })

/** runUntilDone advances the TestClock in steps until `fiber` ends (bounded: at most `maxSteps`). */
const runUntilDone = <A, E>(
  fiber: Fiber.RuntimeFiber<A, E>,
  step: Duration.DurationInput,
  maxSteps: number,
) =>
  Effect.gen(function* () {
    for (let i = 0; i < maxSteps; i++) {
      if ((yield* Fiber.poll(fiber))._tag === "Some") break
      yield* TestClock.adjust(step)
    }
    return yield* Fiber.join(fiber)
  })

interface Pair {
  readonly net: LossyNet
  readonly a: SessionEndpoint
  readonly b: SessionEndpoint
  readonly client: UdpConnection
  readonly server: UdpConnection
}

/** pair binds endpoints A and B on a lossy net and opens a session A→B. */
const pair = (seed: number, faults: Faults): Effect.Effect<Pair, TransportError, Scope.Scope> =>
  Effect.gen(function* () {
    const net = yield* makeLossyNet(seed, faults)
    const a = yield* makeSessionEndpoint(yield* net.bind(A), { keys: keysA })
    const b = yield* makeSessionEndpoint(yield* net.bind(B), { keys: keysB })
    const connecting = yield* Effect.fork(a.connect({ remote: B, remotePublicKey: keysB.publicKey }))
    const client = yield* runUntilDone(connecting, "100 millis", 200)
    const server = yield* b.accepted.take
    return { net, a, b, client, server }
  })

describe("UDP session", () => {
  it.scoped(
    "a 10 MB stream over 5% loss, duplication and reordering arrives intact and in order, in packets of at most 1,200 bytes",
    () =>
      Effect.gen(function* () {
        const { net, client, server } = yield* pair(1, { loss: 0.05, duplicate: 0.05, reorder: 0.05 })
        const data = pattern(10_000_000, 7)
        const started = performance.now()
        const transfer = yield* Effect.fork(
          Effect.all([writeAll(client, data), readExactly(server, data.length)], { concurrency: 2 }),
        )
        const [, received] = yield* runUntilDone(transfer, "200 millis", 5_000)
        const seconds = (performance.now() - started) / 1000
        expect(received.length).toBe(data.length)
        expect(Buffer.compare(received, data)).toBe(0)
        const stats = yield* client.stats
        console.log(
          `10 MB over 5% loss/dup/reorder: ${seconds.toFixed(2)} s real, ${(10 / seconds).toFixed(2)} MB/s; ` +
            `${stats.packetsSent} packets sent, ${stats.packetsRetransmitted} retransmitted, cwnd ${Math.round(stats.congestionWindowBytes)} B`,
        )
        expect(stats.packetsRetransmitted).toBeGreaterThan(0)
        expect((yield* server.stats).duplicatesReceived).toBeGreaterThan(0) // duplicates were suppressed, not delivered
        expect(stats.largestDatagramBytes).toBeLessThanOrEqual(MAX_DATAGRAM_BYTES)
        expect(net.largest()).toBeLessThanOrEqual(MAX_DATAGRAM_BYTES)
        expect(net.largest()).toBeGreaterThan(MAX_DATAGRAM_BYTES - 50)
        expect(seconds).toBeLessThan(30)
      }),
    120_000,
  )

  it.scoped("carries both directions at once over a lossy link", () =>
    Effect.gen(function* () {
      const { client, server } = yield* pair(2, { loss: 0.05, duplicate: 0.02, reorder: 0.05 })
      const up = pattern(1_000_000, 1)
      const down = pattern(1_000_000, 2)
      const transfer = yield* Effect.fork(
        Effect.all(
          [
            writeAll(client, up),
            writeAll(server, down),
            readExactly(server, up.length),
            readExactly(client, down.length),
          ],
          { concurrency: "unbounded" },
        ),
      )
      const [, , atServer, atClient] = yield* runUntilDone(transfer, "50 millis", 5_000)
      expect(Buffer.compare(atServer, up)).toBe(0)
      expect(Buffer.compare(atClient, down)).toBe(0)
      expect(client.direction).toBe("outbound")
      expect(server.direction).toBe("inbound")
      expect([client.transport, server.transport]).toEqual(["udp", "udp"])
      expect(server.remote).toEqual(A)
      expect(server.remotePublicKey).toEqual(keysA.publicKey)
      expect(client.sessionId).toBe(server.sessionId)
    }),
  )

  it.scoped(
    "a receiver that stops reading makes the sender's pendingWriteBytes grow; nothing is lost once it reads",
    () =>
      Effect.gen(function* () {
        const { client, server } = yield* pair(3, { loss: 0.02 })
        const data = pattern(2_000_000, 3)
        yield* writeAll(client, data)
        for (let i = 0; i < 100; i++) yield* TestClock.adjust("50 millis")
        // The receiver buffers at most its window; the rest waits at the sender.
        const pending = yield* client.pendingWriteBytes
        expect(pending).toBeGreaterThanOrEqual(data.length - RECEIVE_WINDOW_BYTES)
        expect(pending).toBeLessThan(data.length)
        const buffered = (yield* server.stats).receiveBufferedBytes
        expect(buffered).toBeGreaterThan(RECEIVE_WINDOW_BYTES / 2)
        expect(buffered).toBeLessThanOrEqual(RECEIVE_WINDOW_BYTES)
        const reading = yield* Effect.fork(readExactly(server, data.length))
        const received = yield* runUntilDone(reading, "50 millis", 2_000)
        expect(Buffer.compare(received, data)).toBe(0)
        for (let i = 0; i < 10 && (yield* client.pendingWriteBytes) > 0; i++)
          yield* TestClock.adjust("100 millis")
        expect(yield* client.pendingWriteBytes).toBe(0)
      }),
  )

  // Seed 304 once finished a session on the FIN's ACK while earlier data was still unacked and lost.
  it.effect.each([4, 304, 504])(
    "close delivers everything written before it, then the remote's read ends (seed %i)",
    (seed) =>
      Effect.scoped(
        Effect.gen(function* () {
          const { client, server, a, b } = yield* pair(seed, { loss: 0.05, reorder: 0.05 })
          const data = pattern(300_000, seed)
          const reading = yield* Effect.fork(readAll(server))
          yield* writeAll(client, data)
          yield* client.close
          // our own read ended at once; writes after close fail
          expect(Chunk.size(yield* Stream.runCollect(client.read))).toBe(0)
          expect((yield* Effect.flip(client.write(new Uint8Array(1)))).reason).toBe("closed")
          const received = yield* runUntilDone(reading, "50 millis", 2_000)
          expect(Buffer.compare(received, data)).toBe(0)
          // the server closes too; both sessions finish and are forgotten after the linger
          yield* server.close
          for (let i = 0; i < 40; i++) yield* TestClock.adjust("1 second")
          expect((yield* a.stats).sessions).toBe(0)
          expect((yield* b.stats).sessions).toBe(0)
        }),
      ),
  )

  it.scoped("abort makes the remote's read fail with reset", () =>
    Effect.gen(function* () {
      const { client, server } = yield* pair(5, { loss: 0.05 })
      yield* client.write(pattern(10_000, 5))
      const reading = yield* Effect.fork(Effect.either(readAll(server)))
      yield* TestClock.adjust("100 millis")
      yield* client.abort
      const result = yield* runUntilDone(reading, "50 millis", 200)
      expect(Either.isLeft(result) && result.left.reason).toBe("reset")
      expect((yield* Effect.flip(server.write(new Uint8Array(1)))).reason).toBe("reset")
      expect((yield* Effect.flip(client.write(new Uint8Array(1)))).reason).toBe("closed")
    }),
  )

  it.scoped(
    "tampered packets and packets sealed with a foreign key are dropped and counted; the session survives",
    () =>
      Effect.gen(function* () {
        const { net, b, client, server } = yield* pair(6, {})
        net.setFaults({ corrupt: 0.05, loss: 0.01 })
        const data = pattern(500_000, 6)
        const transfer = yield* Effect.fork(
          Effect.all([writeAll(client, data), readExactly(server, data.length)], { concurrency: 2 }),
        )
        const [, received] = yield* runUntilDone(transfer, "50 millis", 2_000)
        expect(Buffer.compare(received, data)).toBe(0)
        const afterTamper = yield* b.stats
        expect(afterTamper.authFailures + afterTamper.malformed + afterTamper.unknownSession).toBeGreaterThan(
          0,
        )
        expect(afterTamper.authFailures).toBeGreaterThan(0)

        // Mallory, spoofing A's address, opens "A's" session id with her own key: refused as a foreign key.
        net.setFaults({})
        const mallory = yield* makeSessionEndpoint(yield* net.bind(M, A), { keys: generateSessionKeys() })
        const attempt = yield* Effect.fork(
          Effect.either(
            mallory.connect({ remote: B, remotePublicKey: keysB.publicKey, sessionId: client.sessionId }),
          ),
        )
        const outcome = yield* runUntilDone(attempt, "1 second", 30)
        expect(Either.isLeft(outcome) && outcome.left.reason).toBe("timeout")
        expect((yield* b.stats).authFailures).toBeGreaterThan(afterTamper.authFailures)
        // and the real session still works both ways
        const after = yield* Effect.fork(
          Effect.all([client.write(pattern(1_000, 9)), readExactly(server, 1_000)], { concurrency: 2 }),
        )
        const [, tail] = yield* runUntilDone(after, "50 millis", 100)
        expect(tail).toEqual(pattern(1_000, 9))
        expect(yield* b.accepted.size).toBe(0)
      }),
  )

  it.scoped(
    "keepalives hold an idle session open; when the remote goes silent, reads fail with timeout",
    () =>
      Effect.gen(function* () {
        const { net, client, server } = yield* pair(7, {})
        const sentBefore = (yield* client.stats).packetsSent + (yield* server.stats).packetsSent
        const clientRead = yield* Effect.fork(Effect.either(readAll(client)))
        const serverRead = yield* Effect.fork(Effect.either(readAll(server)))
        for (let i = 0; i < 30; i++) yield* TestClock.adjust("10 seconds") // 5 minutes of silence from the owners
        expect(Option.isNone(yield* Fiber.poll(clientRead))).toBe(true)
        const sentAfter = (yield* client.stats).packetsSent + (yield* server.stats).packetsSent
        expect(sentAfter - sentBefore).toBeGreaterThanOrEqual(20) // a PING (and its ACK) every 15 s
        net.setDown(true)
        yield* TestClock.adjust(Duration.sum(IDLE_TIMEOUT, "1 second"))
        const [c, s] = [yield* Fiber.join(clientRead), yield* Fiber.join(serverRead)]
        expect(Either.isLeft(c) && c.left.reason).toBe("timeout")
        expect(Either.isLeft(s) && s.left.reason).toBe("timeout")
      }),
  )

  it.scoped(
    "a replayed OPEN from a spoofed address gets no more bytes back than it carried (no amplifier)",
    () =>
      Effect.gen(function* () {
        const net = yield* makeLossyNet(10, {})
        const opens: Array<Uint8Array> = []
        net.tap((_from, _to, data) => {
          if (data[0] === SESSION_OPEN) opens.push(data)
        })
        const a = yield* makeSessionEndpoint(yield* net.bind(A), { keys: keysA })
        const b = yield* makeSessionEndpoint(yield* net.bind(B), { keys: keysB })
        const connecting = yield* Effect.fork(a.connect({ remote: B, remotePublicKey: keysB.publicKey }))
        yield* runUntilDone(connecting, "100 millis", 200)
        expect(opens.length).toBeGreaterThan(0)
        const victim = yield* net.bind(M)
        let bytesToVictim = 0
        yield* Effect.forkScoped(
          Stream.runForEach(victim.received, (d) =>
            Effect.sync(() => {
              bytesToVictim += d.data.length
            }),
          ),
        )
        let bytesFromVictim = 0
        for (const open of opens) {
          net.inject(M, B, open)
          bytesFromVictim += open.length
        }
        yield* TestClock.adjust("10 millis")
        expect((yield* b.stats).sessions).toBe(2) // the phantom session was accepted (the OPEN authenticates)...
        for (let i = 0; i < 18; i++) yield* TestClock.adjust("10 seconds")
        expect(bytesToVictim).toBeGreaterThan(0) // ...and answered with an ACK...
        expect(bytesToVictim).toBeLessThanOrEqual(bytesFromVictim) // ...but never with more than it received...
        expect((yield* b.stats).sessions).toBe(1) // ...and it idled out
      }),
  )

  it.scoped(
    "OPENs pass the SpamFilter's datagram admission: a banned IP gets no session, one IP's OPENs are capped by its bucket, established sessions' data is not charged",
    () =>
      Effect.gen(function* () {
        const net = yield* makeLossyNet(11, {})
        // one OPEN per IP, never refilled: whatever more A's session carries must not be charged
        const filter = yield* SpamFilter.make({
          ...defaultSpamPolicy,
          datagrams: { rate: 0, burst: 1 },
        }).pipe(Effect.provideService(ChainStore, makeMemoryStore()))
        yield* filter.ban(M.host, { reason: "setban" })
        const b = yield* makeSessionEndpoint(yield* net.bind(B), {
          keys: keysB,
          admitOpen: (from) => filter.admitDatagram(from.host, "open"),
        })
        const connect = (from: SessionEndpoint) =>
          Effect.gen(function* () {
            const attempt = yield* Effect.fork(
              Effect.either(from.connect({ remote: B, remotePublicKey: keysB.publicKey })),
            )
            return yield* runUntilDone(attempt, "1 second", 30)
          })
        const bannedBefore = (yield* Metric.value(SpamFilter.datagramsDropped("banned", "open"))).count

        const a = yield* makeSessionEndpoint(yield* net.bind(A), { keys: keysA })
        const first = yield* connect(a)
        if (Either.isLeft(first)) return yield* Effect.die(first.left)
        const server = yield* b.accepted.take
        const data = pattern(200_000, 3)
        const transfer = yield* Effect.fork(
          Effect.all([writeAll(first.right, data), readExactly(server, data.length)], { concurrency: 2 }),
        )
        const [, received] = yield* runUntilDone(transfer, "100 millis", 600)
        expect(Buffer.compare(received, data)).toBe(0)

        // a second session from A's IP: its bucket is empty, the OPEN is dropped before any key agreement
        const second = yield* connect(a)
        expect(Either.isLeft(second) && second.left.reason).toBe("timeout")
        // the banned IP gets nothing either
        const m = yield* makeSessionEndpoint(yield* net.bind(M), { keys: sessionKeysFromSecret(secret(3)) })
        const banned = yield* connect(m)
        expect(Either.isLeft(banned) && banned.left.reason).toBe("timeout")
        expect((yield* Metric.value(SpamFilter.datagramsDropped("banned", "open"))).count).toBeGreaterThan(
          bannedBefore,
        )
        const stats = yield* b.stats
        expect(stats.refusedOpens).toBeGreaterThanOrEqual(2)
        expect(stats.authFailures).toBe(0)
        // another IP still opens its session
        const c = yield* makeSessionEndpoint(yield* net.bind({ host: "127.0.0.4", port: 4004 }), {
          keys: sessionKeysFromSecret(secret(4)),
        })
        expect(Either.isRight(yield* connect(c))).toBe(true)
      }),
  )

  it.scoped("connect to a silent endpoint times out", () =>
    Effect.gen(function* () {
      const net = yield* makeLossyNet(8, {})
      const a = yield* makeSessionEndpoint(yield* net.bind(A), { keys: keysA })
      yield* net.bind(B) // bound, but nobody serves sessions there
      const attempt = yield* Effect.fork(
        Effect.either(a.connect({ remote: B, remotePublicKey: keysB.publicKey })),
      )
      const outcome = yield* runUntilDone(attempt, "1 second", 30)
      expect(Either.isLeft(outcome) && outcome.left.reason).toBe("timeout")
    }),
  )

  it.scoped("datagrams that are not session packets go to `other` (the rendezvous protocol's view)", () =>
    Effect.gen(function* () {
      const net = yield* makeLossyNet(9, {})
      const a = yield* makeSessionEndpoint(yield* net.bind(A), { keys: keysA })
      const raw = yield* net.bind(B)
      yield* raw.send(A, Uint8Array.from([0x01, 2, 3]))
      yield* raw.send(A, Uint8Array.from([0x40, 1])) // a session type byte, but no valid packet
      yield* raw.send(A, Uint8Array.from([0x90]))
      const got = yield* Stream.runCollect(Stream.take(a.other.received, 2))
      expect(Chunk.toReadonlyArray(got).map((d) => [...d.data])).toEqual([[0x01, 2, 3], [0x90]])
      expect((yield* a.stats).malformed).toBe(1)
    }),
  )
})

describe("UDP session on DatagramSim (latency, NAT)", () => {
  const NAT_PUBLIC = "198.51.100.1"
  const ALICE = "192.168.1.10"
  const SERVER = "203.0.113.5"

  /** natPair is Alice behind a port-restricted NAT (30 s mappings, outbound refresh only) with a session to a public server. */
  const natPair = (link: DatagramLinkOptions) =>
    Effect.gen(function* () {
      const sim = yield* makeDatagramSim({ seed: 11, defaultLink: link })
      yield* sim.addNat({
        publicHost: NAT_PUBLIC,
        type: "port-restricted",
        privateHosts: [ALICE],
        mappingTimeout: "30 seconds",
      })
      const alice = yield* makeSessionEndpoint(yield* sim.service(ALICE).bind({ host: ALICE, port: 5000 }), {
        keys: keysA,
      })
      const server = yield* makeSessionEndpoint(
        yield* sim.service(SERVER).bind({ host: SERVER, port: 18445 }),
        {
          keys: keysB,
        },
      )
      const connecting = yield* Effect.fork(
        alice.connect({ remote: server.local, remotePublicKey: keysB.publicKey }),
      )
      const client = yield* runUntilDone(connecting, "100 millis", 200)
      const inbound = yield* server.accepted.take
      return { sim, client, inbound }
    })

  it.scoped("300 kB each way through a NAT over a 20 ms link with jitter, 2% loss and reordering", () =>
    Effect.gen(function* () {
      const { client, inbound } = yield* natPair({
        latency: "20 millis",
        jitter: "5 millis",
        loss: 0.02,
        reorder: 0.02,
      })
      expect(inbound.remote.host).toBe(NAT_PUBLIC)
      const up = pattern(300_000, 21)
      const down = pattern(300_000, 22)
      const started = performance.now()
      const transfer = yield* Effect.fork(
        Effect.all(
          [
            writeAll(client, up),
            writeAll(inbound, down),
            readExactly(inbound, up.length),
            readExactly(client, down.length),
          ],
          { concurrency: "unbounded" },
        ),
      )
      const [, , atServer, atClient] = yield* runUntilDone(transfer, "100 millis", 6_000)
      expect(Buffer.compare(atServer, up)).toBe(0)
      expect(Buffer.compare(atClient, down)).toBe(0)
      const stats = yield* client.stats
      console.log(
        `2 x 300 kB through a NAT, 20 ms one way: ${((performance.now() - started) / 1000).toFixed(2)} s real; ` +
          `srtt ${stats.smoothedRttMillis.toFixed(1)} ms, rto ${stats.rtoMillis.toFixed(0)} ms`,
      )
      // RTT estimate tracks the path: 40 ms round trip plus jitter and ack delay
      expect(stats.smoothedRttMillis).toBeGreaterThan(35)
      expect(stats.smoothedRttMillis).toBeLessThan(120)
    }),
  )

  it.scoped("keepalives hold the NAT mapping open through 5 idle minutes (30 s mapping timeout)", () =>
    Effect.gen(function* () {
      const { client, inbound } = yield* natPair({ latency: "10 millis" })
      for (let i = 0; i < 30; i++) yield* TestClock.adjust("10 seconds")
      const exchange = yield* Effect.fork(
        Effect.all(
          [
            inbound.write(pattern(50_000, 1)),
            client.write(pattern(50_000, 2)),
            readExactly(client, 50_000),
            readExactly(inbound, 50_000),
          ],
          { concurrency: "unbounded" },
        ),
      )
      const [, , atClient, atServer] = yield* runUntilDone(exchange, "100 millis", 100)
      expect(atClient).toEqual(pattern(50_000, 1))
      expect(atServer).toEqual(pattern(50_000, 2))
    }),
  )
})

describe("UDP session over real UDP on loopback", () => {
  it.scopedLive("carries 2 MB in order between two sockets on 127.0.0.1", () =>
    Effect.gen(function* () {
      const udp = makeUdp()
      const a = yield* makeSessionEndpoint(yield* udp.bind({ host: "127.0.0.1", port: 0 }), { keys: keysA })
      const b = yield* makeSessionEndpoint(yield* udp.bind({ host: "127.0.0.1", port: 0 }), { keys: keysB })
      const client = yield* a.connect({ remote: b.local, remotePublicKey: keysB.publicKey })
      const server = yield* b.accepted.take
      const data = pattern(2_000_000, 31)
      const started = performance.now()
      const [, received] = yield* Effect.all([writeAll(client, data), readExactly(server, data.length)], {
        concurrency: 2,
      })
      console.log(`2 MB over loopback UDP: ${((performance.now() - started) / 1000).toFixed(2)} s`)
      expect(Buffer.compare(received, data)).toBe(0)
      const reading = yield* Effect.fork(readAll(server))
      yield* client.close
      expect((yield* Fiber.join(reading)).length).toBe(0)
    }),
  )
})

describe("session packet format", () => {
  it("frames round-trip, and random or truncated input is a DecodeError, never a throw", () => {
    const frames: Array<SessionFrame> = [
      {
        _tag: "Ack",
        ranges: [
          { lo: 90, hi: 100 },
          { lo: 10, hi: 80 },
          { lo: 0, hi: 0 },
        ],
        delayMillis: 3,
        window: 1 << 40,
      },
      { _tag: "Stream", offset: 2 ** 40, data: pattern(1_000, 1), fin: false },
      { _tag: "Stream", offset: 5, data: new Uint8Array(0), fin: true },
      { _tag: "Ping" },
      { _tag: "Reset" },
    ]
    const bytes = encodeFrames(frames)
    expect(Either.getOrThrow(decodeFrames(bytes))).toEqual(frames)
    for (let cut = 0; cut < bytes.length; cut += 7) {
      const r = decodeFrames(bytes.subarray(0, cut))
      if (cut > 0) expect(Either.isLeft(r) || Either.getOrThrow(r).length < frames.length).toBe(true)
    }
    const rng = pattern(200_000, 3)
    for (let i = 0; i + 200 <= rng.length; i += 200) {
      expect(() => decodeFrames(rng.subarray(i, i + 200))).not.toThrow()
      expect(() => decodeSessionHeader(rng.subarray(i, i + 100))).not.toThrow()
    }
    // an ACK whose ranges run below packet 0 is refused
    const bad = Uint8Array.from([0x02, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 6])
    expect(Either.isLeft(decodeFrames(bad))).toBe(true)
  })
})
