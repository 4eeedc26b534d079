import { describe, expect, it } from "@effect/vitest"
import {
  Context,
  Effect,
  Either,
  Fiber,
  Layer,
  Metric,
  Option,
  Queue,
  Random,
  Stream,
  TestClock,
} from "effect"
import {
  defaultRendezvousLimits,
  identityDigest,
  layer,
  type PunchResult,
  Rendezvous,
  type RendezvousConfig,
  type RendezvousLimits,
  type RendezvousService,
} from "../../src/actors/Rendezvous.js"
import * as SpamFilter from "../../src/actors/SpamFilter.js"
import { defaultSpamPolicy, type SpamPolicy } from "../../src/actors/spamPolicy.js"
import { layerMemory } from "../../src/layers/ChainStore.js"
import type { DatagramSocket } from "../../src/layers/Datagram.js"
import { type DatagramSim, makeDatagramSim, type NatType } from "../../src/layers/DatagramSim.js"
import { layerUdp } from "../../src/layers/DatagramUdp.js"
import { layerNoble, nobleBackend } from "../../src/layers/Signatures.js"
import type { Endpoint } from "../../src/layers/Transport.js"
import {
  CookieChallenge,
  decodeRendezvous,
  EchoRequest,
  encodeRendezvous,
  IntroduceRequest,
  Introduction,
  NO_COOKIE,
  RegisterRequest,
  type RendezvousMessage,
} from "../../src/schema/rendezvous.js"

const UDP_PORT = 18445
const SERVER = "203.0.113.5"
const SERVER2 = "203.0.113.6"
const PUBLIC_NODE = "203.0.113.20"
const S1: Endpoint = { host: SERVER, port: UDP_PORT }
const S2: Endpoint = { host: SERVER2, port: UDP_PORT }

/** secretKey i is a valid secp256k1 scalar (i > 0), one identity per test node. */
const secretKey = (i: number): Uint8Array => {
  const k = new Uint8Array(32)
  k[0] = 0x11
  k[31] = i
  return k
}
const sessionKey = (i: number): Uint8Array => new Uint8Array(32).fill(i)

let nextIdentity = 1

interface NodeOptions {
  readonly serve?: boolean
  readonly servers?: ReadonlyArray<Endpoint>
  readonly limits?: Partial<RendezvousLimits>
  readonly spam?: Partial<SpamPolicy>
}

/** filters holds each started node's own SpamFilter (over its own memory ChainStore), by its Rendezvous. */
const filters = new WeakMap<RendezvousService, SpamFilter.SpamFilterService>()
const filterOf = (node: RendezvousService): SpamFilter.SpamFilterService => filters.get(node)!

/** startNode runs a Rendezvous actor on `host` of the sim, with its own identity and SpamFilter. */
const startNode = (sim: DatagramSim, host: string, options: NodeOptions = {}) =>
  Effect.gen(function* () {
    const i = nextIdentity++
    const config: RendezvousConfig & { bind: Endpoint } = {
      bind: { host, port: UDP_PORT },
      nodeSecretKey: secretKey(i),
      sessionPublicKey: sessionKey(i),
      servers: options.servers ?? [],
      serve: options.serve ?? false,
      limits: { ...defaultRendezvousLimits, ...options.limits },
    }
    // each node's Random is seeded (its request ids); the sim's own seed fixes the delivery schedule
    const spam = SpamFilter.layer({ ...defaultSpamPolicy, ...options.spam }).pipe(Layer.provide(layerMemory))
    const context = yield* Layer.build(
      layer(config).pipe(Layer.provideMerge(spam), Layer.provide(sim.layer(host)), Layer.provide(layerNoble)),
    ).pipe(Effect.withRandom(Random.make(i)))
    const node = Context.get(context, Rendezvous)
    filters.set(node, Context.get(context, SpamFilter.SpamFilter))
    return node
  })

/**
 * settle runs `effect` while advancing the TestClock in `stepMs` steps (the sim's latency and the
 * actor's timers both run on it), up to `maxMs`; it fails the test if the effect has not finished.
 */
const settle = <A, E>(effect: Effect.Effect<A, E>, maxMs = 60_000, stepMs = 100) =>
  Effect.gen(function* () {
    const fiber = yield* Effect.fork(effect)
    for (let t = 0; t < maxMs; t += stepMs) {
      if (Option.isSome(yield* Fiber.poll(fiber))) break
      yield* TestClock.adjust(stepMs)
    }
    if (Option.isNone(yield* Fiber.poll(fiber))) {
      yield* Fiber.interrupt(fiber)
      return yield* Effect.die(new Error(`not finished after ${maxMs} ms of TestClock`))
    }
    return yield* Fiber.join(fiber)
  })

/** advance moves the TestClock `ms` forward in small steps, so every timer and delivery on the way runs. */
const advance = (ms: number, stepMs = 1_000) =>
  Effect.gen(function* () {
    for (let t = 0; t < ms; t += stepMs) yield* TestClock.adjust(stepMs)
  })

/** world is a seeded sim with 10 ms links and two public rendezvous servers. */
const world = (
  seed = 1,
  serverLimits: Partial<RendezvousLimits> = {},
  serverSpam: Partial<SpamPolicy> = {},
) =>
  Effect.gen(function* () {
    const sim = yield* makeDatagramSim({ seed, defaultLink: { latency: "10 millis" } })
    const s1 = yield* startNode(sim, SERVER, { serve: true, limits: serverLimits, spam: serverSpam })
    const s2 = yield* startNode(sim, SERVER2, { serve: true, limits: serverLimits, spam: serverSpam })
    return { sim, s1, s2 }
  })

/** natted puts `host` behind its own NAT of `type` (public address `publicHost`) and starts a node there. */
const natted = (sim: DatagramSim, host: string, publicHost: string, type: NatType) =>
  Effect.gen(function* () {
    yield* sim.addNat({ publicHost, type, privateHosts: [host] })
    return yield* startNode(sim, host, { servers: [S1, S2] })
  })

/** Raw is a bare socket on the sim that speaks the protocol by hand (a client the tests control). */
interface Raw {
  readonly socket: DatagramSocket
  readonly got: Array<{ readonly from: Endpoint; readonly msg: RendezvousMessage }>
}

const rawSocket = (sim: DatagramSim, host: string, port = 40_000) =>
  Effect.gen(function* () {
    const socket = yield* sim.service(host).bind({ host, port })
    const got: Raw["got"] = []
    yield* Effect.forkScoped(
      Stream.runForEach(socket.received, ({ from, data }) =>
        Effect.sync(() => {
          const decoded = decodeRendezvous(data)
          if (Either.isRight(decoded)) got.push({ from, msg: decoded.right })
        }),
      ),
    )
    const raw: Raw = { socket, got }
    return raw
  })

/** signedIdentity builds an identity for a raw client, signed over `cookie` (and `target`). */
const signedIdentity = (
  i: number,
  kind: "register" | "introduce",
  cookie: Uint8Array,
  timestamp: bigint,
  target?: Uint8Array,
) => {
  const unsigned = {
    nodeKey: nobleBackend.publicKey(secretKey(i)),
    sessionKey: sessionKey(i),
    flags: 0,
    timestamp,
  }
  const sig = nobleBackend.sign(
    identityDigest(kind, unsigned, cookie, target),
    secretKey(i),
    new Uint8Array(32),
  )
  return { ...unsigned, sig }
}

/** cookieOf runs the cookie round trip for a raw client and returns the cookie. */
const cookieOf = (raw: Raw, server: Endpoint) =>
  Effect.gen(function* () {
    yield* raw.socket.send(server, encodeRendezvous(new EchoRequest({ txid: 77, cookie: NO_COOKIE })))
    yield* advance(50, 10)
    const challenge = raw.got.find((g) => g.msg._tag === "cookie")?.msg
    if (!(challenge instanceof CookieChallenge)) return yield* Effect.die(new Error("no cookie challenge"))
    return challenge.cookie
  })

describe("Rendezvous echo", () => {
  it.scoped(
    "a NAT'd node learns the public endpoint a server sees it at; a public node is seen at its own",
    () =>
      Effect.gen(function* () {
        const { sim } = yield* world()
        const alice = yield* natted(sim, "192.168.1.2", "198.51.100.1", "port-restricted")
        const observed = yield* settle(alice.echo(S1))
        expect(observed.host).toBe("198.51.100.1")
        expect(observed).not.toEqual(alice.local)
        const report = yield* settle(alice.probeNat)
        expect(report.kind).toBe("cone")
        expect(report.observed.map((o) => o.observed)).toEqual([observed, observed])

        const open = yield* startNode(sim, PUBLIC_NODE, { servers: [S1, S2] })
        const openReport = yield* settle(open.probeNat)
        expect(openReport.kind).toBe("open")
        expect(openReport.observed[0]!.observed).toEqual({ host: PUBLIC_NODE, port: UDP_PORT })
      }),
  )

  it.scoped("a symmetric NAT is detected: the two servers see the node at different endpoints", () =>
    Effect.gen(function* () {
      const { sim } = yield* world()
      const alice = yield* natted(sim, "192.168.1.2", "198.51.100.1", "symmetric")
      const report = yield* settle(alice.probeNat)
      expect(report.kind).toBe("symmetric")
      const [a, b] = report.observed
      expect(a!.observed.host).toBe(b!.observed.host)
      expect(a!.observed.port).not.toBe(b!.observed.port)
    }),
  )

  it.scoped("a server that is gone makes a request fail with timeout after its bounded retries", () =>
    Effect.gen(function* () {
      const sim = yield* makeDatagramSim({ seed: 2, defaultLink: { latency: "10 millis" } })
      const alice = yield* startNode(sim, PUBLIC_NODE, { servers: [S1] })
      const result = yield* settle(Effect.either(alice.echo(S1)))
      expect(Either.isLeft(result) && result.left.reason).toBe("timeout")
    }),
  )
})

describe("Rendezvous registration", () => {
  it.scoped(
    "a registration is kept alive by keepalives (through a NAT with a 30 s mapping timeout) and expires without them",
    () =>
      Effect.gen(function* () {
        const { sim, s1 } = yield* world()
        const bob = yield* natted(sim, "192.168.2.2", "198.51.100.2", "port-restricted")
        const alice = yield* natted(sim, "192.168.1.2", "198.51.100.1", "full-cone")
        const registration = yield* settle(bob.register(S1))
        expect(registration.observed.host).toBe("198.51.100.2")
        expect(registration.ttlSeconds).toBe(90)
        expect(yield* s1.registrations).toBe(1)

        // five minutes later (ten NAT mapping timeouts) bob is still registered and still reachable
        yield* advance(300_000)
        expect(yield* s1.registrations).toBe(1)
        const punched = yield* settle(alice.connect(S1, bob.nodeKey))
        expect(punched._tag).toBe("Punched")

        // without refreshes the registration is gone after its ttl, and so are introductions to bob
        yield* bob.unregister(S1)
        yield* advance(95_000)
        expect(yield* s1.registrations).toBe(0)
        const refused = yield* settle(Effect.either(alice.connect(S1, bob.nodeKey)))
        expect(Either.isLeft(refused) && refused.left.detail).toBe("unknown-target")
      }),
  )

  it.scoped(
    "when the NAT gives the node a new public port, its next keepalive moves the registration there",
    () =>
      Effect.gen(function* () {
        const { sim } = yield* world(6)
        // the mapping times out after 10 s idle, half the 20 s keepalive interval
        yield* sim.addNat({
          publicHost: "198.51.100.2",
          type: "port-restricted",
          privateHosts: ["192.168.2.2"],
          mappingTimeout: "10 seconds",
        })
        const bob = yield* startNode(sim, "192.168.2.2", { servers: [S1] })
        const alice = yield* natted(sim, "192.168.1.2", "198.51.100.1", "full-cone")
        const first = yield* settle(bob.register(S1))
        yield* advance(25_000)
        const result = yield* settle(alice.connect(S1, bob.nodeKey))
        expect(result._tag).toBe("Punched")
        if (result._tag === "Punched") {
          expect(result.remote.host).toBe("198.51.100.2")
          expect(result.remote.port).not.toBe(first.observed.port)
        }
      }),
  )

  it.scoped("registrations are capped per IP and in total", () =>
    Effect.gen(function* () {
      const { sim, s1 } = yield* world(3, { maxRegistrations: 6, maxRegistrationsPerIp: 4 })
      // five nodes behind one NAT share its IP: four register, the fifth is refused
      const hosts = ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
      yield* sim.addNat({ publicHost: "198.51.100.50", type: "full-cone", privateHosts: hosts })
      const lan = yield* Effect.forEach(hosts, (h) => startNode(sim, h, { servers: [S1] }))
      const results = yield* settle(Effect.forEach(lan, (n) => Effect.either(n.register(S1))))
      expect(results.filter(Either.isRight)).toHaveLength(4)
      expect(results.filter(Either.isLeft).map((r) => Either.isLeft(r) && r.left.detail)).toEqual([
        "ip-registrations-full",
      ])
      expect(yield* s1.registrations).toBe(4)
      // three public nodes on their own IPs: two fit under the total cap of six, the third does not
      const others = yield* Effect.forEach(["203.0.113.31", "203.0.113.32", "203.0.113.33"], (h) =>
        startNode(sim, h, { servers: [S1] }),
      )
      const more = yield* settle(Effect.forEach(others, (n) => Effect.either(n.register(S1))))
      expect(more.map((r) => (Either.isLeft(r) ? r.left.detail : "ok"))).toEqual([
        "ok",
        "ok",
        "registrations-full",
      ])
      expect(yield* s1.registrations).toBe(6)
    }),
  )

  it.scoped(
    "a registration with a bad signature, a replayed timestamp, or from another address is refused",
    () =>
      Effect.gen(function* () {
        const { sim, s1 } = yield* world()
        const raw = yield* rawSocket(sim, "203.0.113.40")
        const cookie = yield* cookieOf(raw, S1)
        const now = BigInt(yield* TestClock.currentTimeMillis)
        const good = signedIdentity(50, "register", cookie, now)
        const send = (identity: typeof good, c = cookie) =>
          Effect.andThen(
            raw.socket.send(S1, encodeRendezvous(new RegisterRequest({ txid: 1, cookie: c, identity }))),
            advance(50, 10),
          )
        const lastReply = () => raw.got[raw.got.length - 1]!.msg
        yield* send({ ...good, sig: new Uint8Array(64).fill(1) })
        expect(lastReply()).toMatchObject({ _tag: "refused", reason: "bad-signature" })
        yield* send(good)
        expect(lastReply()).toMatchObject({ _tag: "registered" })
        yield* send(good)
        expect(lastReply()).toMatchObject({ _tag: "refused", reason: "stale-timestamp" })
        yield* send(signedIdentity(50, "register", cookie, now + 3_600_000n))
        expect(lastReply()).toMatchObject({ _tag: "refused", reason: "stale-timestamp" })
        // the same signed registration replayed from another address: its cookie is not that address's
        const thief = yield* rawSocket(sim, "203.0.113.41")
        const thiefCookie = yield* cookieOf(thief, S1)
        const replayed = signedIdentity(50, "register", cookie, now + 5n)
        yield* thief.socket.send(
          S1,
          encodeRendezvous(new RegisterRequest({ txid: 2, cookie: thiefCookie, identity: replayed })),
        )
        yield* advance(50, 10)
        expect(thief.got[thief.got.length - 1]!.msg).toMatchObject({
          _tag: "refused",
          reason: "bad-signature",
        })
        expect(yield* s1.registrations).toBe(1)
      }),
  )
})

/** punchBetween registers bob (behind `bobNat`) at S1 and has alice (behind `aliceNat`) connect to him. */
const punchBetween = (aliceNat: NatType, bobNat: NatType, seed: number) =>
  Effect.gen(function* () {
    const { sim } = yield* world(seed)
    const alice = yield* natted(sim, "192.168.1.2", "198.51.100.1", aliceNat)
    const bob = yield* natted(sim, "192.168.2.2", "198.51.100.2", bobNat)
    yield* settle(Effect.all([alice.probeNat, bob.probeNat]))
    yield* settle(bob.register(S1))
    const [aliceResult, bobResult] = yield* settle(
      Effect.all([alice.connect(S1, bob.nodeKey), Queue.take(bob.incoming)], { concurrency: 2 }),
    )
    return { alice, bob, aliceResult, bobResult }
  })

const expectPunched = (result: PunchResult, peer: RendezvousService, publicHost: string) => {
  expect(result._tag).toBe("Punched")
  if (result._tag !== "Punched") return
  expect(result.nodeKey).toEqual(peer.nodeKey)
  expect(result.remote.host).toBe(publicHost)
  expect(result.sessionKey.length).toBe(32)
}

describe("Rendezvous introduction and hole punching", () => {
  const succeed: ReadonlyArray<readonly [NatType, NatType]> = [
    ["full-cone", "full-cone"],
    ["full-cone", "port-restricted"],
    ["address-restricted", "address-restricted"],
    ["address-restricted", "port-restricted"],
    ["port-restricted", "port-restricted"],
    ["port-restricted", "full-cone"],
    ["symmetric", "full-cone"],
    ["full-cone", "symmetric"],
    ["symmetric", "address-restricted"],
  ]
  for (const [aliceNat, bobNat] of succeed) {
    it.scoped(`${aliceNat} to ${bobNat}: both sides punch through and learn each other's session key`, () =>
      Effect.gen(function* () {
        const { alice, bob, aliceResult, bobResult } = yield* punchBetween(aliceNat, bobNat, 11)
        expectPunched(aliceResult, bob, "198.51.100.2")
        expectPunched(bobResult, alice, "198.51.100.1")
        if (aliceResult._tag === "Punched" && bobResult._tag === "Punched") {
          expect(aliceResult.sessionKey).not.toEqual(bobResult.sessionKey)
        }
      }),
    )
  }

  const fail: ReadonlyArray<readonly [NatType, NatType]> = [
    ["symmetric", "port-restricted"],
    ["port-restricted", "symmetric"],
    ["symmetric", "symmetric"],
  ]
  for (const [aliceNat, bobNat] of fail) {
    it.scoped(
      `${aliceNat} to ${bobNat}: punching fails within its bounded rounds and is reported as symmetric`,
      () =>
        Effect.gen(function* () {
          const started = yield* TestClock.currentTimeMillis
          const { aliceResult, bobResult } = yield* punchBetween(aliceNat, bobNat, 12)
          expect(aliceResult).toMatchObject({ _tag: "Failed", reason: "symmetric-nat" })
          expect(bobResult).toMatchObject({ _tag: "Failed", reason: "symmetric-nat" })
          // seven rounds from 200 ms, doubling: about 25 s, never forever
          expect((yield* TestClock.currentTimeMillis) - started).toBeLessThan(40_000)
        }),
    )
  }

  it.scoped("an introduction from anyone but a server we are registered at starts no punch", () =>
    Effect.gen(function* () {
      const { sim } = yield* world()
      const alice = yield* startNode(sim, PUBLIC_NODE, { servers: [S1] })
      const stranger = yield* rawSocket(sim, "203.0.113.77")
      const victim: Endpoint = { host: "192.0.2.99", port: 9999 }
      const intro = new Introduction({
        txid: 0,
        nodeKey: new Uint8Array(32).fill(3),
        sessionKey: new Uint8Array(32).fill(4),
        flags: 0,
        endpoint: victim,
      })
      yield* stranger.socket.send({ host: PUBLIC_NODE, port: UDP_PORT }, encodeRendezvous(intro))
      yield* advance(30_000)
      const stats = yield* sim.stats(PUBLIC_NODE)
      expect(stats.sentTo.get(victim.host)).toBeUndefined()
      expect(yield* Queue.size(alice.incoming)).toBe(0)
    }),
  )

  it.scoped("an introduction to a node nobody registered is refused", () =>
    Effect.gen(function* () {
      const { sim } = yield* world()
      const alice = yield* natted(sim, "192.168.1.2", "198.51.100.1", "full-cone")
      const result = yield* settle(Effect.either(alice.connect(S1, new Uint8Array(32).fill(0x42))))
      expect(Either.isLeft(result) && result.left).toMatchObject({
        reason: "refused",
        detail: "unknown-target",
      })
    }),
  )
})

describe("Rendezvous anti-abuse", () => {
  it.scoped("for every request type, a spoofed (unverified) source gets no more bytes than it sent", () =>
    Effect.gen(function* () {
      const { sim, s1 } = yield* world()
      // a victim host whose address the attacker spoofs; it has a socket, so whatever reaches it counts
      const victim = yield* rawSocket(sim, "192.0.2.66", 4444)
      const now = BigInt(yield* TestClock.currentTimeMillis)
      const requests: ReadonlyArray<RendezvousMessage> = [
        new EchoRequest({ txid: 1, cookie: NO_COOKIE }),
        new EchoRequest({ txid: 2, cookie: new Uint8Array(16).fill(9) }),
        new RegisterRequest({
          txid: 3,
          cookie: NO_COOKIE,
          identity: signedIdentity(60, "register", NO_COOKIE, now),
        }),
        new IntroduceRequest({
          txid: 4,
          cookie: NO_COOKIE,
          target: new Uint8Array(32),
          identity: signedIdentity(60, "introduce", NO_COOKIE, now, new Uint8Array(32)),
        }),
      ]
      for (const request of requests) {
        const before = yield* sim.stats(SERVER)
        const sentBefore = before.sentTo.get(victim.socket.local.host)?.bytes ?? 0
        const data = encodeRendezvous(request)
        yield* sim.inject(victim.socket.local, S1, data)
        yield* advance(50, 10)
        const after = yield* sim.stats(SERVER)
        const sent = (after.sentTo.get(victim.socket.local.host)?.bytes ?? 0) - sentBefore
        expect(sent, request._tag).toBeGreaterThan(0) // the cookie challenge
        expect(sent, request._tag).toBeLessThanOrEqual(data.length)
      }
      expect(victim.got.every((g) => g.msg._tag === "cookie")).toBe(true)
      expect(yield* s1.registrations).toBe(0)
    }),
  )

  it.scoped("a cookie works only for the address it was made for, and only for one to two windows", () =>
    Effect.gen(function* () {
      const { sim } = yield* world()
      const raw = yield* rawSocket(sim, "203.0.113.60")
      const other = yield* rawSocket(sim, "203.0.113.61")
      const cookie = yield* cookieOf(raw, S1)
      const echoWith = (from: Raw, txid: number) =>
        Effect.andThen(
          from.socket.send(S1, encodeRendezvous(new EchoRequest({ txid, cookie }))),
          advance(50, 10),
        )
      yield* echoWith(raw, 1)
      expect(raw.got[raw.got.length - 1]!.msg).toMatchObject({ _tag: "echo-reply", txid: 1 })
      yield* echoWith(other, 2)
      expect(other.got[other.got.length - 1]!.msg).toMatchObject({ _tag: "cookie", txid: 2 })
      // windows are 30 s; a cookie is good in its own and the next, never after
      yield* advance(61_000)
      yield* echoWith(raw, 3)
      expect(raw.got[raw.got.length - 1]!.msg).toMatchObject({ _tag: "cookie", txid: 3 })
    }),
  )

  it.scoped(
    "a flood of spoofed registrations registers nothing and is answered with at most its own bytes",
    () =>
      Effect.gen(function* () {
        const { sim, s1 } = yield* world()
        const now = BigInt(yield* TestClock.currentTimeMillis)
        let injected = 0
        const identity = signedIdentity(61, "register", NO_COOKIE, now)
        for (let i = 0; i < 2_000; i++) {
          const from = { host: `192.0.2.${i % 250}`, port: 1_000 + i }
          const data = encodeRendezvous(
            new RegisterRequest({
              txid: i,
              cookie: new Uint8Array(16).fill(i & 0xff),
              identity,
            }),
          )
          injected += data.length
          yield* sim.inject(from, S1, data)
          if (i % 100 === 99) yield* advance(20, 10)
        }
        yield* advance(1_000, 50)
        const stats = yield* sim.stats(SERVER)
        let answered = 0
        for (const [host, count] of stats.sentTo) if (host.startsWith("192.0.2.")) answered += count.bytes
        expect(answered).toBeGreaterThan(0)
        expect(answered).toBeLessThanOrEqual(injected)
        expect(yield* s1.registrations).toBe(0)
      }),
  )

  it.scoped(
    "one IP's requests are rate-limited by the SpamFilter's datagrams bucket: beyond it they go unanswered and are counted",
    () =>
      Effect.gen(function* () {
        const { sim } = yield* world(4, {}, { datagrams: { rate: 5, burst: 40 } })
        const dropped = Effect.map(Metric.value(SpamFilter.datagramsDropped("rate", "echo")), (s) => s.count)
        const droppedBefore = yield* dropped
        const raw = yield* rawSocket(sim, "203.0.113.50")
        // 500 requests, 10 every 10 ms (paced, so the mailbox's per-IP share is not what limits them)
        for (let i = 0; i < 500; i++) {
          yield* raw.socket.send(S1, encodeRendezvous(new EchoRequest({ txid: i, cookie: NO_COOKIE })))
          if (i % 10 === 9) yield* TestClock.adjust(10)
        }
        yield* advance(1_000, 50)
        // the burst, plus what refilled at 5/s during the half second they arrived over
        expect(raw.got.length).toBeGreaterThanOrEqual(40)
        expect(raw.got.length).toBeLessThanOrEqual(44)
        // every request beyond the bucket is counted as a rate drop
        expect((yield* dropped) - droppedBefore).toBe(500 - raw.got.length)
      }),
  )

  it.scoped(
    "a banned IP's echo and register get no answer, not even a cookie challenge; others are answered",
    () =>
      Effect.gen(function* () {
        const { sim, s1 } = yield* world(7)
        const banned = yield* rawSocket(sim, "203.0.113.70")
        const rangeBanned = yield* rawSocket(sim, "198.18.5.9")
        const other = yield* rawSocket(sim, "203.0.113.71")
        // a cookie from before the ban does not help either
        const cookie = yield* cookieOf(banned, S1)
        yield* filterOf(s1).ban("203.0.113.70", { reason: "setban" })
        yield* filterOf(s1).ban("198.18.0.0/16", { reason: "setban" })
        const droppedBefore = (yield* Metric.value(SpamFilter.datagramsDropped("banned", "register"))).count
        banned.got.length = 0
        const now = BigInt(yield* TestClock.currentTimeMillis)
        for (const raw of [banned, rangeBanned, other]) {
          yield* raw.socket.send(S1, encodeRendezvous(new EchoRequest({ txid: 1, cookie: NO_COOKIE })))
          yield* raw.socket.send(S1, encodeRendezvous(new EchoRequest({ txid: 2, cookie })))
          yield* raw.socket.send(
            S1,
            encodeRendezvous(
              new RegisterRequest({ txid: 3, cookie, identity: signedIdentity(70, "register", cookie, now) }),
            ),
          )
        }
        yield* advance(200, 10)
        expect(banned.got).toEqual([])
        expect(rangeBanned.got).toEqual([])
        expect(other.got.map((g) => g.msg._tag)).toEqual(["cookie", "cookie", "cookie"])
        expect(
          (yield* Metric.value(SpamFilter.datagramsDropped("banned", "register"))).count - droppedBefore,
        ).toBe(2)
        expect(yield* s1.registrations).toBe(0)
        // lifted, the address is answered again
        yield* filterOf(s1).unban("203.0.113.70/32")
        yield* banned.socket.send(S1, encodeRendezvous(new EchoRequest({ txid: 4, cookie })))
        yield* advance(50, 10)
        expect(banned.got.map((g) => g.msg)).toMatchObject([{ _tag: "echo-reply", txid: 4 }])
      }),
  )

  it.scoped(
    "a flood of badly signed registrations from one address bans it through its score (20 each, 100 bans)",
    () =>
      Effect.gen(function* () {
        const { sim, s1 } = yield* world(8)
        const raw = yield* rawSocket(sim, "203.0.113.80")
        const cookie = yield* cookieOf(raw, S1)
        raw.got.length = 0
        const now = BigInt(yield* TestClock.currentTimeMillis)
        const forged = { ...signedIdentity(80, "register", cookie, now), sig: new Uint8Array(64).fill(7) }
        for (let i = 0; i < 20; i++) {
          yield* raw.socket.send(
            S1,
            encodeRendezvous(new RegisterRequest({ txid: i, cookie, identity: forged })),
          )
          yield* advance(20, 10)
        }
        // five refusals, then the address is banned and hears nothing more
        expect(raw.got.map((g) => g.msg)).toEqual(
          Array.from({ length: 5 }, (_, i) =>
            expect.objectContaining({ _tag: "refused", txid: i, reason: "bad-signature" }),
          ),
        )
        expect(yield* filterOf(s1).isBanned("203.0.113.80")).toBe(true)
        expect((yield* filterOf(s1).banned).map((b) => [b.subnet, b.reason])).toEqual([
          ["203.0.113.80/32", "bad signature on a rendezvous register"],
        ])
        yield* raw.socket.send(S1, encodeRendezvous(new EchoRequest({ txid: 99, cookie })))
        yield* advance(50, 10)
        expect(raw.got).toHaveLength(5)
        expect(yield* s1.registrations).toBe(0)
      }),
  )

  it.scoped("while one IP floods the server, another IP is still answered", () =>
    Effect.gen(function* () {
      const { sim } = yield* world(5)
      const flooder = yield* rawSocket(sim, "203.0.113.52")
      const alice = yield* startNode(sim, PUBLIC_NODE, { servers: [S1] })
      const flood = (n: number) =>
        Effect.forEach(
          Array.from({ length: n }, (_, i) => i),
          (i) => flooder.socket.send(S1, encodeRendezvous(new EchoRequest({ txid: i, cookie: NO_COOKIE }))),
          { discard: true },
        )
      // 200 datagrams every 10 ms (20,000 a second) before, during and after alice's echo
      yield* flood(200)
      const echo = yield* Effect.fork(alice.echo(S1))
      for (let t = 0; t < 100 && Option.isNone(yield* Fiber.poll(echo)); t++) {
        yield* flood(200)
        yield* TestClock.adjust(10)
      }
      expect(yield* Fiber.join(echo)).toEqual({ host: PUBLIC_NODE, port: UDP_PORT })
      expect(flooder.got.length).toBeLessThanOrEqual(45)
    }),
  )

  it.scoped("garbage datagrams are dropped and the server keeps serving", () =>
    Effect.gen(function* () {
      const { sim } = yield* world()
      const raw = yield* rawSocket(sim, "203.0.113.51")
      for (let i = 0; i < 300; i++) {
        const junk = Uint8Array.from({ length: (i * 7) % 200 }, (_, j) => (i * 31 + j * 17) & 0xff)
        yield* raw.socket.send(S1, junk)
      }
      yield* advance(500, 50)
      const alice = yield* startNode(sim, PUBLIC_NODE, { servers: [S1] })
      expect(yield* settle(alice.echo(S1))).toEqual({ host: PUBLIC_NODE, port: UDP_PORT })
    }),
  )
})

describe("Rendezvous server role", () => {
  it.scoped(
    "a node that does not serve answers nobody; switched on it serves registrations; switched off it forgets them",
    () =>
      Effect.gen(function* () {
        const sim = yield* makeDatagramSim({ seed: 9, defaultLink: { latency: "10 millis" } })
        const publicHost: Endpoint = { host: PUBLIC_NODE, port: UDP_PORT }
        const pub = yield* startNode(sim, PUBLIC_NODE, { servers: [S1] })
        const bob = yield* startNode(sim, "203.0.113.91", { servers: [publicHost] })
        expect(yield* pub.serving).toBe(false)
        const silent = yield* settle(Effect.either(bob.register(publicHost)))
        expect(Either.isLeft(silent) && silent.left.reason).toBe("timeout")
        expect(yield* pub.registrations).toBe(0)

        yield* pub.setServing(true)
        expect(yield* pub.serving).toBe(true)
        const registration = yield* settle(bob.register(publicHost))
        expect(registration.observed).toEqual({ host: "203.0.113.91", port: UDP_PORT })
        expect(yield* pub.registrations).toBe(1)

        yield* pub.setServing(false)
        expect(yield* pub.registrations).toBe(0)
        const again = yield* settle(Effect.either(bob.echo(publicHost)))
        expect(Either.isLeft(again) && again.left.reason).toBe("timeout")
      }),
  )
})

describe("Rendezvous over real UDP (loopback)", () => {
  /** startUdp runs a Rendezvous actor on a loopback UDP socket (port 0: any free port). */
  const startUdp = (options: { serve?: boolean; servers?: ReadonlyArray<Endpoint> } = {}) =>
    Effect.gen(function* () {
      const i = nextIdentity++
      const context = yield* Layer.build(
        layer({
          bind: { host: "127.0.0.1", port: 0 },
          nodeSecretKey: secretKey(i),
          sessionPublicKey: sessionKey(i),
          servers: options.servers ?? [],
          serve: options.serve ?? false,
          limits: defaultRendezvousLimits,
        }).pipe(
          Layer.provide(layerUdp),
          Layer.provide(layerNoble),
          Layer.provide(SpamFilter.layer(defaultSpamPolicy).pipe(Layer.provide(layerMemory))),
        ),
      )
      return Context.get(context, Rendezvous)
    })

  it.scopedLive("echo, registration and a punch between two nodes work on node:dgram sockets", () =>
    Effect.gen(function* () {
      const server = yield* startUdp({ serve: true })
      const alice = yield* startUdp({ servers: [server.local] })
      const bob = yield* startUdp({ servers: [server.local] })
      expect(yield* alice.echo(server.local)).toEqual(alice.local)
      expect((yield* alice.probeNat).kind).toBe("open")
      const registration = yield* bob.register(server.local)
      expect(registration.observed).toEqual(bob.local)
      expect(yield* server.registrations).toBe(1)
      const [aliceResult, bobResult] = yield* Effect.all(
        [alice.connect(server.local, bob.nodeKey), Queue.take(bob.incoming)],
        { concurrency: 2 },
      ).pipe(Effect.timeout("10 seconds"))
      expect(aliceResult).toMatchObject({ _tag: "Punched", remote: bob.local })
      expect(bobResult).toMatchObject({ _tag: "Punched", remote: alice.local })
    }),
  )
})
