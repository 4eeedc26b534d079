import { describe, expect, it } from "@effect/vitest"
import { Context, Duration, Effect, Layer, Option, Random, TestClock } from "effect"
import * as AddrBookActor from "../../src/actors/AddrBook.js"
import {
  AddrBook,
  type AddrBookConfig,
  type AddrBookService,
  addrTable,
  defaultAddrBookConfig,
  secretKey,
} from "../../src/actors/AddrBook.js"
import { defaultAddrmanParams, maxNewPerGroup, maxNewPerGroupAndSource } from "../../src/actors/addrman.js"
import type { PeerInfo } from "../../src/actors/net.js"
import { defaultUdpAddrParams } from "../../src/actors/udpAddrs.js"
import { ChainStore, type ChainStoreService, makeMemoryStore } from "../../src/layers/ChainStore.js"
import type { Endpoint } from "../../src/layers/Transport.js"
import { peerAddressText } from "../../src/schema/config.js"
import { toHex } from "../../src/schema/hex.js"
import { bytesToHost, endpointKey, hostToBytes } from "../../src/schema/netaddr.js"
import type { AddrEntry, UdpAddrEntry } from "../../src/schema/wire.js"
import { fakePeer } from "../support/peers.js"

/** T0 is the test's wall clock: addresses stamped with it are fresh, not "not seen for 30 days". */
const T0 = 1_700_000_000_000
const nowSeconds = T0 / 1000

const entry = (host: string, port = 8333, time = nowSeconds): AddrEntry => ({
  time,
  services: 1,
  host: hostToBytes(host)!,
  port,
})

const keyOf = (e: AddrEntry): string => endpointKey({ host: bytesToHost(e.host), port: e.port })

/** peer is a handshaken peer connected from `host` (the source of its gossip). */
const peer = (id: number, host: string, info: Partial<PeerInfo> = {}): PeerInfo =>
  fakePeer(id, { addr: { host, port: 40_000 + (id % 20_000) }, ...info }).info

/**
 * withBook runs `f` against an AddrBook actor over `store`, the clock at T0 (unless already later) and
 * a seeded Random; the actor stops when `f` ends.
 */
const withBook = <A, E>(
  f: (book: AddrBookService) => Effect.Effect<A, E>,
  store: ChainStoreService = makeMemoryStore(),
  config: AddrBookConfig = defaultAddrBookConfig,
) =>
  Effect.gen(function* () {
    const t = yield* TestClock.currentTimeMillis
    if (t < T0) yield* TestClock.setTime(T0)
    const context = yield* Layer.build(
      AddrBookActor.layer(config).pipe(Layer.provide(Layer.succeed(ChainStore, store))),
    )
    return yield* f(Context.get(context, AddrBook))
  }).pipe(Effect.scoped, Effect.withRandom(Random.make("addrbook-test")))

/** hostsIn lists `n` distinct hosts of the /16 `prefix` (e.g. "10.5"). */
const hostsIn = (prefix: string, n: number, from = 0): Array<string> =>
  Array.from({ length: n }, (_, i) => `${prefix}.${(i + from) >> 8}.${(i + from) & 0xff}`)

describe("AddrBook", () => {
  it.effect("10,000 addresses of one /16 from sources in one /16 fill at most two buckets", () =>
    withBook((book) =>
      Effect.gen(function* () {
        const flood = hostsIn("10.5", 10_000)
        for (let i = 0; i < 10; i++) {
          const from = peer(i + 1, `172.16.${i}.1`)
          yield* book.addGossip(
            from,
            flood.slice(i * 1000, (i + 1) * 1000).map((h) => entry(h)),
          )
        }
        const size = yield* book.size
        expect(maxNewPerGroupAndSource(defaultAddrmanParams)).toBe(128)
        expect(size.new).toBeGreaterThan(0)
        expect(size.new).toBeLessThanOrEqual(128)
        expect(size.tried).toBe(0)
      }),
    ),
  )

  it.effect(
    "10,000 addresses of one /16 from 100 source groups fill one row; other groups still get in",
    () =>
      withBook((book) =>
        Effect.gen(function* () {
          const flood = hostsIn("10.5", 10_000)
          for (let i = 0; i < 100; i++) {
            yield* book.addGossip(
              peer(i + 1, `100.${i}.0.1`),
              flood.slice(i * 100, (i + 1) * 100).map((h) => entry(h)),
            )
          }
          const flooded = (yield* book.size).new
          // one row of new buckets: 32 × 64 slots, 3 % of the new table's 65,536
          expect(maxNewPerGroup(defaultAddrmanParams)).toBe(2048)
          expect(flooded).toBeLessThanOrEqual(2048)
          expect(flooded).toBeGreaterThan(500)

          // afterwards 200 addresses of 200 other /16s, from 20 more sources
          for (let s = 0; s < 20; s++) {
            const others = Array.from({ length: 10 }, (_, i) => entry(`20.${s * 10 + i}.1.1`))
            yield* book.addGossip(peer(1000 + s, `30.${s}.0.1`), others)
          }
          // only groups hashed to the flooded row (1 in 32) can lose out to the flood
          expect((yield* book.size).new - flooded).toBeGreaterThanOrEqual(180)
        }),
      ),
  )

  it.effect("select keeps at most 1 outbound per /24, 2 per /16 and 4 per /8", () =>
    withBook((book) =>
      Effect.gen(function* () {
        const hosts = ["10.1.2.5", "10.1.2.6", "10.1.3.5", "10.2.0.5", "10.3.0.5", "10.4.0.5", "11.0.0.5"]
        yield* book.addGossip(
          peer(1, "172.16.0.1"),
          hosts.map((h) => entry(h)),
        )
        expect((yield* book.size).new).toBe(hosts.length)

        const picks = (current: ReadonlyArray<Endpoint>, exclude: ReadonlySet<string> = new Set()) =>
          Effect.gen(function* () {
            const seen = new Set<string>()
            for (let i = 0; i < 60; i++) {
              const pick = yield* book.select(current, exclude)
              seen.add(Option.isSome(pick) ? pick.value.host : "none")
            }
            return seen
          })
        const at = (host: string): Endpoint => ({ host, port: 8333 })

        // no cap reached: everything is eligible
        expect(yield* picks([])).toEqual(new Set(hosts))
        // one peer in 10.1.2.0/24: nothing more from that /24
        expect(yield* picks([at("10.1.2.1")])).toEqual(
          new Set(["10.1.3.5", "10.2.0.5", "10.3.0.5", "10.4.0.5", "11.0.0.5"]),
        )
        // two peers in 10.1/16: nothing more from 10.1/16
        expect(yield* picks([at("10.1.2.1"), at("10.1.9.1")])).toEqual(
          new Set(["10.2.0.5", "10.3.0.5", "10.4.0.5", "11.0.0.5"]),
        )
        // four peers in 10/8: nothing more from 10/8
        const four = [at("10.1.9.1"), at("10.2.9.1"), at("10.3.9.1"), at("10.4.9.1")]
        expect(yield* picks(four)).toEqual(new Set(["11.0.0.5"]))
        // ... and with 11.0.0.5 excluded (connected), nothing at all
        expect(yield* picks(four, new Set(["11.0.0.5:8333"]))).toEqual(new Set(["none"]))
        // everything excluded
        expect(yield* picks([], new Set(hosts.map((h) => `${h}:8333`)))).toEqual(new Set(["none"]))
      }),
    ),
  )

  it.effect("an unverified self-announcement is never gossiped; after markGood it is", () =>
    withBook((book) =>
      Effect.gen(function* () {
        const inbound = peer(1, "10.7.0.1", { inbound: true, listenPort: 8333 })
        const other = peer(2, "10.9.0.1", { inbound: true })
        yield* book.addSelfAnnounced(inbound)
        // an addr entry carrying the sender's own host is a self-announcement too
        expect(yield* book.addGossip(other, [entry("10.9.0.1", 8333)])).toEqual([])
        expect(yield* book.size).toEqual({ new: 2, tried: 0, udp: 0 })

        // stored (dialable) but neither answered to getaddr nor relayed
        expect(yield* book.getAddr).toEqual([])
        expect(yield* book.addGossip(inbound, [entry("10.7.0.1", 8333)])).toEqual([])
        expect(Option.isSome(yield* book.select([], new Set()))).toBe(true)

        // we dialled it back and the handshake completed: verified, tried, gossipable
        yield* book.markGood({ host: "10.7.0.1", port: 8333 }, 1)
        expect(yield* book.size).toEqual({ new: 1, tried: 1, udp: 0 })
        expect((yield* book.getAddr).map(keyOf)).toEqual(["10.7.0.1:8333"])
        expect((yield* book.addGossip(inbound, [entry("10.7.0.1", 8333)])).map(keyOf)).toEqual([
          "10.7.0.1:8333",
        ])
        // the other self-announcement stays unverified
        expect(yield* book.addGossip(other, [entry("10.9.0.1", 8333)])).toEqual([])
        // while third-party gossip is relayed at once
        expect((yield* book.addGossip(other, [entry("10.8.0.1", 8333)])).map(keyOf)).toEqual([
          "10.8.0.1:8333",
        ])
      }),
    ),
  )

  it.effect("addGossip relays only small, fresh or new, valid messages", () =>
    withBook((book) =>
      Effect.gen(function* () {
        const from = peer(1, "172.16.0.1")
        // port 0, unspecified addresses: ignored
        expect(
          yield* book.addGossip(from, [
            entry("10.1.1.1", 0),
            entry("0.0.0.0"),
            entry("::"),
            entry("10.1.1.2"),
          ]),
        ).toHaveLength(1)
        expect((yield* book.size).new).toBe(1)
        // loopback is an ordinary address here
        expect(yield* book.addGossip(from, [entry("127.0.0.1", 18444)])).toHaveLength(1)
        // known and stale: not relayed; known and fresh (a new announcement): relayed, once only
        const stale = nowSeconds - 3600
        expect(yield* book.addGossip(from, [entry("10.1.1.2", 8333, stale)])).toEqual([])
        expect(yield* book.addGossip(from, [entry("10.1.1.2", 8333, nowSeconds - 60)])).toHaveLength(1)
        expect(yield* book.addGossip(from, [entry("10.1.1.2", 8333, nowSeconds - 60)])).toEqual([])
        expect(yield* book.addGossip(peer(2, "172.17.0.1"), [entry("10.1.1.2")])).toEqual([])
        // new but stale: relayed; more than 10 entries: stored, not relayed
        expect(yield* book.addGossip(from, [entry("10.1.1.3", 8333, stale)])).toHaveLength(1)
        const eleven = Array.from({ length: 11 }, (_, i) => entry(`${30 + i}.2.0.1`))
        expect(yield* book.addGossip(from, eleven)).toEqual([])
        expect((yield* book.size).new).toBe(3 + 11)
      }),
    ),
  )

  it.effect("getAddr answers a sample of at most 23 % (and 1000) of the book, cached for 10 minutes", () =>
    withBook((book) =>
      Effect.gen(function* () {
        for (let s = 0; s < 6; s++) {
          const entries = Array.from({ length: 1000 }, (_, i) =>
            entry(`${1 + s * 20 + (i % 20)}.${i >> 2}.7.1`),
          )
          yield* book.addGossip(peer(s + 1, `172.${16 + s}.0.1`), entries)
        }
        const total = (yield* book.size).new
        expect(total).toBeGreaterThan(5000)

        const first = yield* book.getAddr
        expect(first.length).toBe(1000)
        expect(first.length).toBeLessThanOrEqual(0.23 * total)
        expect(new Set(first.map(keyOf)).size).toBe(first.length)

        yield* TestClock.adjust(Duration.minutes(9))
        expect(yield* book.getAddr).toEqual(first)

        yield* TestClock.adjust(Duration.minutes(2))
        const later = yield* book.getAddr
        expect(later.length).toBe(1000)
        expect(later.map(keyOf)).not.toEqual(first.map(keyOf))
      }),
    ),
  )

  it.effect("getAddr of a smaller book answers at most ceil(23 %) of its gossipable entries", () =>
    withBook((book) =>
      Effect.gen(function* () {
        yield* book.addGossip(
          peer(1, "172.16.0.1"),
          Array.from({ length: 100 }, (_, i) => entry(`${i + 1}.1.1.1`)),
        )
        const total = (yield* book.size).new
        expect(total).toBeGreaterThan(90)
        expect((yield* book.getAddr).length).toBe(Math.ceil(0.23 * total))
      }),
    ),
  )

  it.effect(
    "what the connection's guard admitted is stored in full: the book keeps no second addr limiter",
    () =>
      withBook((book) =>
        Effect.gen(function* () {
          const from = peer(1, "172.16.0.1")
          yield* book.addGossip(
            from,
            Array.from({ length: 1000 }, (_, i) => entry(`${1 + (i % 100)}.${i >> 2}.3.1`)),
          )
          const first = (yield* book.size).new
          expect(first).toBeGreaterThan(900)
          // at once, from the same peer: another full message is taken too (the guard's addr bucket said yes)
          yield* book.addGossip(
            from,
            Array.from({ length: 500 }, (_, i) => entry(`${101 + (i % 100)}.${i >> 2}.4.1`)),
          )
          expect((yield* book.size).new).toBeGreaterThan(first + 450)
        }),
      ),
  )

  it.effect("the book survives a restart over the same store; corrupt rows are skipped and pruned", () =>
    Effect.gen(function* () {
      const store = makeMemoryStore()
      const rows = store.table(addrTable)
      const before = yield* withBook(
        (book) =>
          Effect.gen(function* () {
            yield* book.addGossip(
              peer(1, "172.16.0.1"),
              Array.from({ length: 50 }, (_, i) => entry(`${i + 1}.2.3.4`)),
            )
            yield* book.addSelfAnnounced(peer(2, "10.7.0.1", { inbound: true, listenPort: 8333 }))
            yield* book.markGood({ host: "30.2.3.4", port: 8333 }, 5)
            return yield* book.size
          }),
        store,
      )
      expect(before).toEqual({ new: 50, tried: 1, udp: 0 })
      const secret = Option.getOrThrow(yield* rows.get(secretKey))
      expect((yield* rows.entries).length).toBe(52)

      // corrupt rows: garbage, a truncated row, a valid row under another endpoint's key
      const good = Option.getOrThrow(yield* rows.get("1.2.3.4:8333"))
      yield* rows.put("99.9.9.9:8333", new Uint8Array([1, 2, 3]))
      yield* rows.put("98.9.9.9:8333", good.subarray(0, good.length - 3))
      yield* rows.put("97.9.9.9:8333", good)

      yield* withBook(
        (book) =>
          Effect.gen(function* () {
            expect(yield* book.size).toEqual(before)
            // the verified entry kept its flag, the self-announcement its lack of one
            const all = yield* book.getAddr
            expect(all.length).toBe(Math.ceil(0.23 * 50))
            expect(all.map(keyOf)).not.toContain("10.7.0.1:8333")
          }),
        store,
      )
      expect(Option.getOrThrow(yield* rows.get(secretKey))).toEqual(secret)
      expect(Option.isNone(yield* rows.get("99.9.9.9:8333"))).toBe(true)
      expect(Option.isNone(yield* rows.get("98.9.9.9:8333"))).toBe(true)
      expect(Option.isNone(yield* rows.get("97.9.9.9:8333"))).toBe(true)
      expect((yield* rows.entries).length).toBe(52)
    }),
  )

  it.effect("tried and verified survive a restart: the verified address is gossiped, in tried", () =>
    Effect.gen(function* () {
      const store = makeMemoryStore()
      yield* withBook(
        (book) =>
          Effect.gen(function* () {
            yield* book.addSelfAnnounced(peer(2, "10.7.0.1", { inbound: true, listenPort: 8333 }))
            yield* book.addSelfAnnounced(peer(3, "10.8.0.1", { inbound: true, listenPort: 8333 }))
            yield* book.markGood({ host: "10.8.0.1", port: 8333 }, 5)
          }),
        store,
      )
      yield* withBook(
        (book) =>
          Effect.gen(function* () {
            expect(yield* book.size).toEqual({ new: 1, tried: 1, udp: 0 })
            const answer = yield* book.getAddr
            expect(answer.map(keyOf)).toEqual(["10.8.0.1:8333"])
            expect(answer[0]!.services).toBe(5)
          }),
        store,
      )
    }),
  )
})

/** udpConfig is a small udp table (8 entries, 3 per rendezvous server, dropped after 3 failed dials). */
const udpConfig: AddrBookConfig = {
  ...defaultAddrBookConfig,
  udp: { ...defaultUdpAddrParams, maxEntries: 8, maxPerServer: 3, maxFailures: 3 },
}

/** nodeKey is node `n`'s x-only key: 32 bytes of `n`, so keys sort as their numbers do. */
const nodeKey = (n: number): Uint8Array => new Uint8Array(32).fill(n)

/** udpEntry announces node `n` registered at the rendezvous server `host:port` at `time`. */
const udpEntry = (n: number, host = "10.0.0.1", port = 9000, time = nowSeconds): UdpAddrEntry => ({
  time,
  services: 1,
  nodeKey: nodeKey(n),
  host: hostToBytes(host)!,
  port,
})

/** udpKeyOf names an announcement as `<node key hex>@server`. */
const udpKeyOf = (e: UdpAddrEntry): string =>
  `${toHex(e.nodeKey)}@${endpointKey({ host: bytesToHost(e.host), port: e.port })}`

describe("AddrBook udp addresses", () => {
  it.effect("addUdpGossip relays a fresh small message once; a message of 11 is stored, not relayed", () =>
    withBook(
      (book) =>
        Effect.gen(function* () {
          const from = peer(1, "172.16.0.1")
          const two = [udpEntry(2), udpEntry(3, "10.0.0.2")]
          expect((yield* book.addUdpGossip(from, two)).map(udpKeyOf)).toEqual(two.map(udpKeyOf))
          expect((yield* book.size).udp).toBe(2)
          // the same announcements again, from the same peer or another: each was relayed once
          expect(yield* book.addUdpGossip(from, two)).toEqual([])
          expect(yield* book.addUdpGossip(peer(2, "172.17.0.1"), two)).toEqual([])
          // a stale announcement is stored, not relayed; an invalid one neither
          expect(yield* book.addUdpGossip(from, [udpEntry(4, "10.0.0.1", 9000, nowSeconds - 3600)])).toEqual(
            [],
          )
          expect(
            yield* book.addUdpGossip(from, [udpEntry(5, "10.0.0.1", 0), udpEntry(6, "0.0.0.0")]),
          ).toEqual([])
          expect((yield* book.size).udp).toBe(3)
          // a time from the future is relayed clamped to now plus 10 minutes
          const future = yield* book.addUdpGossip(from, [udpEntry(7, "10.0.0.3", 9000, nowSeconds + 86_400)])
          expect(future.map((e) => e.time)).toEqual([nowSeconds + 600])
          // a node re-registering elsewhere a minute later is news: relayed
          yield* TestClock.adjust(Duration.minutes(1))
          const moved = [udpEntry(2, "10.0.0.4", 9000, nowSeconds + 60)]
          expect((yield* book.addUdpGossip(from, moved)).map(udpKeyOf)).toEqual(moved.map(udpKeyOf))
          expect((yield* book.size).udp).toBe(4)
        }),
      makeMemoryStore(),
      udpConfig,
    ),
  )

  it.effect("a message of more than 10 entries is stored up to the table's caps and not relayed", () =>
    withBook(
      (book) =>
        Effect.gen(function* () {
          const servers = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
          const eleven = Array.from({ length: 11 }, (_, i) => udpEntry(i + 1, servers[i % 4]!))
          expect(yield* book.addUdpGossip(peer(1, "172.16.0.1"), eleven)).toEqual([])
          // 3 per server at most, 8 in all
          expect((yield* book.size).udp).toBe(8)
          const ten = Array.from({ length: 10 }, (_, i) => udpEntry(i + 20, `10.1.0.${i + 1}`))
          expect(yield* book.addUdpGossip(peer(1, "172.16.0.1"), ten)).toHaveLength(10)
        }),
      makeMemoryStore(),
      udpConfig,
    ),
  )

  it.effect("getUdpAddr is empty until a dial completes; selectUdp picks only keys above ours", () =>
    withBook(
      (book) =>
        Effect.gen(function* () {
          yield* book.addUdpGossip(peer(1, "172.16.0.1"), [udpEntry(2), udpEntry(3, "2001:db8::1", 9001)])
          expect(yield* book.getUdpAddr).toEqual([])
          yield* book.markUdpAttempt(nodeKey(3))
          expect(yield* book.getUdpAddr).toEqual([])

          yield* book.markUdpGood(nodeKey(3))
          const answer = yield* book.getUdpAddr
          expect(answer.map(udpKeyOf)).toEqual([`${toHex(nodeKey(3))}@[2001:db8::1]:9001`])
          expect(answer[0]!.time).toBe(nowSeconds)

          const picks = (exclude: ReadonlySet<string>, own: number) =>
            Effect.gen(function* () {
              const seen = new Set<string>()
              for (let i = 0; i < 40; i++) {
                const pick = yield* book.selectUdp(exclude, nodeKey(own))
                seen.add(Option.isSome(pick) ? peerAddressText(pick.value) : "none")
              }
              return seen
            })
          const two = `udp:${toHex(nodeKey(2))}@10.0.0.1:9000`
          const three = `udp:${toHex(nodeKey(3))}@[2001:db8::1]:9001`
          expect(yield* picks(new Set(), 1)).toEqual(new Set([two, three]))
          expect(yield* picks(new Set([toHex(nodeKey(3))]), 1)).toEqual(new Set([two]))
          // node 2 is dialled by node 1, never the other way round; node 3 dials nobody here
          expect(yield* picks(new Set(), 2)).toEqual(new Set([three]))
          expect(yield* picks(new Set(), 3)).toEqual(new Set(["none"]))
        }),
      makeMemoryStore(),
      udpConfig,
    ),
  )

  it.effect("a failed dial waits a minute; three failures drop the entry from the store too", () =>
    Effect.gen(function* () {
      const store = makeMemoryStore()
      const rows = store.table(addrTable)
      const row = `udp:${toHex(nodeKey(2))}`
      yield* withBook(
        (book) =>
          Effect.gen(function* () {
            yield* book.addUdpGossip(peer(1, "172.16.0.1"), [udpEntry(2)])
            expect(Option.isSome(yield* rows.get(row))).toBe(true)
            yield* book.markUdpAttempt(nodeKey(2))
            expect(Option.isNone(yield* book.selectUdp(new Set(), nodeKey(1)))).toBe(true)
            yield* TestClock.adjust(Duration.minutes(1))
            expect(Option.isSome(yield* book.selectUdp(new Set(), nodeKey(1)))).toBe(true)
            yield* book.markUdpAttempt(nodeKey(2))
            yield* book.markUdpAttempt(nodeKey(2))
            expect((yield* book.size).udp).toBe(0)
            expect(Option.isNone(yield* book.selectUdp(new Set(), nodeKey(1)))).toBe(true)
          }),
        store,
        udpConfig,
      )
      expect(Option.isNone(yield* rows.get(row))).toBe(true)
    }),
  )

  it.effect("udp entries survive a restart over the same store; corrupt udp rows are pruned", () =>
    Effect.gen(function* () {
      const store = makeMemoryStore()
      const rows = store.table(addrTable)
      yield* withBook(
        (book) =>
          Effect.gen(function* () {
            yield* book.addUdpGossip(peer(1, "172.16.0.1"), [
              udpEntry(2),
              udpEntry(3),
              udpEntry(4, "10.0.0.2"),
            ])
            yield* book.markUdpGood(nodeKey(3))
            yield* book.markUdpAttempt(nodeKey(4))
            expect(yield* book.size).toEqual({ new: 0, tried: 0, udp: 3 })
          }),
        store,
        udpConfig,
      )
      // secret and three udp rows
      expect((yield* rows.entries).length).toBe(4)

      // corrupt rows: garbage under a good key, a truncated row, a good row under bad key text
      const good = Option.getOrThrow(yield* rows.get(`udp:${toHex(nodeKey(2))}`))
      yield* rows.put(`udp:${toHex(nodeKey(9))}`, new Uint8Array([1, 2, 3]))
      yield* rows.put(`udp:${toHex(nodeKey(8))}`, good.subarray(0, good.length - 1))
      yield* rows.put(`udp:${"zz".repeat(32)}`, good)
      yield* rows.put(`udp:${toHex(nodeKey(7)).slice(2)}`, good)
      yield* rows.put(`udp:${"ab".repeat(32).toUpperCase()}`, good)

      yield* withBook(
        (book) =>
          Effect.gen(function* () {
            expect(yield* book.size).toEqual({ new: 0, tried: 0, udp: 3 })
            // the reached entry is still gossiped, the others are not
            expect((yield* book.getUdpAddr).map(udpKeyOf)).toEqual([`${toHex(nodeKey(3))}@10.0.0.1:9000`])
            // the failed dial's backoff survived too: node 4 waits, 2 and 3 do not
            const seen = new Set<string>()
            for (let i = 0; i < 40; i++) {
              const pick = yield* book.selectUdp(new Set(), nodeKey(1))
              if (Option.isSome(pick)) seen.add(toHex(pick.value.nodeKey!))
            }
            expect(seen).toEqual(new Set([toHex(nodeKey(2)), toHex(nodeKey(3))]))
          }),
        store,
        udpConfig,
      )
      const keys = (yield* rows.entries).map(([k]) => k).sort()
      expect(keys).toEqual([secretKey, ...[2, 3, 4].map((n) => `udp:${toHex(nodeKey(n))}`)].sort())
    }),
  )
})
