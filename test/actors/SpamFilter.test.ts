import { describe, expect, it } from "@effect/vitest"
import { Effect, Metric, TestClock } from "effect"
import * as SpamFilter from "../../src/actors/SpamFilter.js"
import {
  defaultSpamPolicy,
  Misbehavior,
  type SpamPolicy,
  scoreOf,
  TokenBucket,
} from "../../src/actors/spamPolicy.js"
import { txError } from "../../src/consensus/errors.js"
import {
  ChainStore,
  type ChainStoreService,
  makeMemoryStore,
  type StorageError,
} from "../../src/layers/ChainStore.js"
import type { Endpoint } from "../../src/layers/Transport.js"
import { DecodeError } from "../../src/schema/DecodeError.js"

/**
 * The SpamFilter actor over a memory ChainStore, TestClock time (it starts at the epoch, so ban
 * times below are plain seconds): bans, their persistence and expiry, subnet matching, connection
 * admission and the per-connection guard.
 */

const at = (host: string): Endpoint => ({ host, port: 18444 })

/** startFilter runs a SpamFilter over `store` (a fresh one unless given) in the current scope. */
const startFilter = (policy: Partial<SpamPolicy> = {}, store: ChainStoreService = makeMemoryStore()) =>
  SpamFilter.make({ ...defaultSpamPolicy, ...policy }).pipe(Effect.provideService(ChainStore, store))

/** admitted is the guard of an admitted connection, or a failure naming why it was refused. */
const admitted = (
  filter: SpamFilter.SpamFilterService,
  host: string,
  direction: "inbound" | "outbound" = "inbound",
) =>
  Effect.flatMap(filter.admit(at(host), direction, false), (a) =>
    a._tag === "Admitted" ? Effect.succeed(a.guard) : Effect.dieMessage(`${host} refused: ${a.reason}`),
  )

/** refusal is the reason a connection is refused, or undefined when it is admitted. */
const refusal = (
  filter: SpamFilter.SpamFilterService,
  host: string,
  direction: "inbound" | "outbound" = "inbound",
  isStatic = false,
) =>
  Effect.map(filter.admit(at(host), direction, isStatic), (a) =>
    a._tag === "Refused" ? a.reason : undefined,
  )

const rowsOf = (store: ChainStoreService) =>
  Effect.map(store.table(SpamFilter.BANS_TABLE).entries, (rows) => rows.map(([key]) => key).sort())

/** generous: connection caps and the connection bucket out of the way */
const generous: Partial<SpamPolicy> = {
  connections: { rate: 0, burst: 10_000 },
  maxInboundPerIp: 1_000,
  maxInboundPer24: 1_000,
  maxInboundPer16: 1_000,
}

describe("SpamFilter bans", () => {
  it.scoped("a ban survives a restart: a second filter over the same store sees it", () =>
    Effect.gen(function* () {
      const store = makeMemoryStore()
      yield* Effect.scoped(
        Effect.gen(function* () {
          const filter = yield* startFilter({ banSeconds: 3600 }, store)
          yield* filter.ban("127.0.0.9", { reason: "test ban" })
          yield* TestClock.adjust("1 second")
          yield* filter.ban("10.1.0.0/16", { seconds: 60, reason: "range" })
        }),
      )
      const again = yield* startFilter({ banSeconds: 3600 }, store)
      expect(yield* again.isBanned("127.0.0.9")).toBe(true)
      expect(yield* again.isBanned("10.1.200.3")).toBe(true)
      expect(yield* again.banned).toEqual([
        { subnet: "127.0.0.9/32", createdAt: 0, until: 3600, reason: "test ban" },
        { subnet: "10.1.0.0/16", createdAt: 1, until: 61, reason: "range" },
      ])
    }),
  )

  it.scoped("a ban expires after banSeconds and is then swept from the table", () =>
    Effect.gen(function* () {
      const store = makeMemoryStore()
      const filter = yield* startFilter({ banSeconds: 3600 }, store)
      yield* filter.ban("127.0.0.9", { reason: "test" })
      expect(yield* rowsOf(store)).toEqual(["127.0.0.9/32"])
      yield* TestClock.adjust("3599 seconds")
      expect(yield* filter.isBanned("127.0.0.9")).toBe(true)
      expect(yield* refusal(filter, "127.0.0.9")).toMatch(/banned/)
      yield* TestClock.adjust("1 second")
      expect(yield* filter.isBanned("127.0.0.9")).toBe(false)
      expect(yield* refusal(filter, "127.0.0.9")).toBeUndefined()
      expect(yield* filter.banned).toEqual([])
      expect(yield* rowsOf(store)).toEqual([])
    }),
  )

  it.scoped("expired bans in the store are swept when a filter starts", () =>
    Effect.gen(function* () {
      const store = makeMemoryStore()
      yield* Effect.scoped(
        Effect.flatMap(startFilter({}, store), (f) =>
          Effect.all([
            f.ban("10.0.0.1", { seconds: 10, reason: "short" }),
            f.ban("10.0.0.2", { reason: "long" }),
          ]),
        ),
      )
      yield* TestClock.adjust("11 seconds")
      const again = yield* startFilter({}, store)
      expect(yield* rowsOf(store)).toEqual(["10.0.0.2/32"])
      expect(yield* again.isBanned("10.0.0.1")).toBe(false)
      expect(yield* again.isBanned("10.0.0.2")).toBe(true)
    }),
  )

  it.scoped("a ban of 127.0.0.9 does not touch 127.0.0.1; it covers the IPv4-mapped spelling", () =>
    Effect.gen(function* () {
      const filter = yield* startFilter()
      yield* filter.ban("127.0.0.9", { reason: "test" })
      expect(yield* filter.isBanned("127.0.0.9")).toBe(true)
      expect(yield* filter.isBanned("::ffff:127.0.0.9")).toBe(true)
      expect(yield* filter.isBanned("127.0.0.1")).toBe(false)
      expect(yield* filter.isBanned("127.0.0.10")).toBe(false)
      expect(yield* refusal(filter, "127.0.0.1")).toBeUndefined()
    }),
  )

  it.scoped("a /24 ban covers .0 to .255 of its range and nothing next to it", () =>
    Effect.gen(function* () {
      const filter = yield* startFilter()
      yield* filter.ban("10.1.2.77/24", { reason: "range" })
      expect((yield* filter.banned).map((b) => b.subnet)).toEqual(["10.1.2.0/24"])
      for (const last of [0, 1, 128, 254, 255]) expect(yield* filter.isBanned(`10.1.2.${last}`)).toBe(true)
      expect(yield* filter.isBanned("::ffff:10.1.2.3")).toBe(true)
      for (const host of ["10.1.1.255", "10.1.3.0", "10.2.2.1", "2001:db8::1"])
        expect(yield* filter.isBanned(host)).toBe(false)
    }),
  )

  it.scoped("IPv6 bans: a /32 range, a single address in any spelling, an IPv4-mapped range as IPv4", () =>
    Effect.gen(function* () {
      const filter = yield* startFilter()
      yield* filter.ban("2001:db8::/32", { reason: "v6 range" })
      yield* filter.ban("::1", { reason: "v6 host" })
      yield* filter.ban("::ffff:10.9.0.0/112", { reason: "mapped range" })
      expect((yield* filter.banned).map((b) => b.subnet).sort()).toEqual([
        "10.9.0.0/16",
        "2001:db8::/32",
        "::1/128",
      ])
      expect(yield* filter.isBanned("2001:db8:ffff::1")).toBe(true)
      expect(yield* filter.isBanned("2001:db9::1")).toBe(false)
      expect(yield* filter.isBanned("0:0:0:0:0:0:0:1")).toBe(true)
      expect(yield* filter.isBanned("::2")).toBe(false)
      expect(yield* filter.isBanned("10.9.255.1")).toBe(true)
      expect(yield* filter.isBanned("::ffff:10.9.0.1")).toBe(true)
      expect(yield* filter.isBanned("10.8.0.1")).toBe(false)
    }),
  )

  it.scoped("matches: a host inside the subnet, not outside; an invalid subnet matches nothing", () =>
    Effect.gen(function* () {
      const filter = yield* startFilter()
      const cases: ReadonlyArray<readonly [string, string, boolean]> = [
        ["127.0.0.9", "127.0.0.9", true],
        ["127.0.0.9", "127.0.0.1", false],
        ["127.0.0.9/32", "::ffff:127.0.0.9", true],
        ["10.0.0.0/8", "10.255.1.1", true],
        ["10.0.0.0/8", "11.0.0.1", false],
        ["0.0.0.0/0", "192.168.1.1", true],
        ["0.0.0.0/0", "::1", false],
        ["2001:db8::/32", "2001:db8::5", true],
        ["2001:db8::/32", "10.0.0.1", false],
        ["peer-a", "peer-a", true],
        ["peer-a", "peer-b", false],
        ["not a subnet", "not a subnet", false],
        ["1.2.3.4/33", "1.2.3.4", false],
      ]
      for (const [subnet, host, expected] of cases)
        expect([subnet, host, filter.matches(subnet, host)]).toEqual([subnet, host, expected])
    }),
  )

  it.scoped(
    "ban, unban, clearBanned: -23 for a second exclusive ban, -30 for bad subnets and missing bans",
    () =>
      Effect.gen(function* () {
        const store = makeMemoryStore()
        const filter = yield* startFilter({ banSeconds: 100 }, store)
        const code = <A>(e: Effect.Effect<A, SpamFilter.BanError | StorageError>) =>
          Effect.map(Effect.flip(e), (err) => (err._tag === "BanError" ? err.code : err._tag))
        yield* filter.ban("10.0.0.5", { reason: "first", exclusive: true })
        expect(yield* code(filter.ban("10.0.0.5", { reason: "again", exclusive: true }))).toBe(-23)
        expect(yield* code(filter.ban("999.1.1.1", { reason: "x" }))).toBe(-30)
        expect(yield* code(filter.unban("10.0.0.6"))).toBe(-30)
        expect(yield* code(filter.unban("not/a/subnet"))).toBe(-30)

        // without exclusive: a longer ban extends, a shorter one keeps the longer
        expect((yield* filter.ban("10.0.0.5", { seconds: 500, reason: "longer" })).until).toBe(500)
        expect((yield* filter.ban("10.0.0.5", { seconds: 10, reason: "shorter" })).until).toBe(500)
        // an absolute end; an absurd one is cut to the year 9999 rather than breaking the actor
        expect((yield* filter.ban("10.0.0.7", { until: 1_000, reason: "until" })).until).toBe(1_000)
        expect(
          (yield* filter.ban("10.0.0.8", { seconds: Number.MAX_SAFE_INTEGER, reason: "forever" })).until,
        ).toBe(253_402_300_799)
        expect(yield* filter.isBanned("10.0.0.8")).toBe(true)

        yield* filter.unban("10.0.0.5")
        expect(yield* filter.isBanned("10.0.0.5")).toBe(false)
        expect(yield* rowsOf(store)).toEqual(["10.0.0.7/32", "10.0.0.8/32"])

        // an expired ban is not there to lift
        yield* TestClock.adjust("1001 seconds")
        expect(yield* code(filter.unban("10.0.0.7"))).toBe(-30)

        yield* filter.clearBanned
        expect(yield* filter.banned).toEqual([])
        expect(yield* rowsOf(store)).toEqual([])
        expect(yield* filter.isBanned("10.0.0.8")).toBe(false)
      }),
  )
})

describe("SpamFilter admission", () => {
  it.scoped(
    "refuses a banned address inbound and outbound, but lets a static (configured) outbound through",
    () =>
      Effect.gen(function* () {
        const filter = yield* startFilter()
        yield* filter.ban("10.3.0.0/16", { reason: "test" })
        expect(yield* refusal(filter, "10.3.1.1", "inbound")).toMatch(
          /10\.3\.1\.1 is banned \(10\.3\.0\.0\/16: test\)/,
        )
        expect(yield* refusal(filter, "10.3.1.1", "outbound")).toMatch(/banned/)
        expect(yield* refusal(filter, "10.3.1.1", "outbound", true)).toBeUndefined()
        expect(yield* refusal(filter, "10.4.1.1", "inbound")).toBeUndefined()
      }),
  )

  it.scoped("50 connections from one IP at once pass, the 51st is refused; ten refusals ban the IP", () =>
    Effect.gen(function* () {
      const filter = yield* startFilter({ ...generous, connections: defaultSpamPolicy.connections })
      for (let i = 0; i < 50; i++) yield* admitted(filter, "10.7.0.1")
      expect(yield* refusal(filter, "10.7.0.1")).toBe("10.7.0.1 connects too often")
      // another IP has its own bucket
      yield* admitted(filter, "10.7.0.2")
      // each refusal scores 10: nine more make 100
      for (let i = 0; i < 8; i++) expect(yield* refusal(filter, "10.7.0.1")).toMatch(/too often/)
      expect(yield* filter.isBanned("10.7.0.1")).toBe(false)
      expect(yield* refusal(filter, "10.7.0.1")).toMatch(/too often/)
      expect(yield* filter.banned).toEqual([
        { subnet: "10.7.0.1/32", createdAt: 0, until: 86_400, reason: "connection flood" },
      ])
      expect(yield* refusal(filter, "10.7.0.1")).toMatch(/is banned/)
      expect(yield* refusal(filter, "10.7.0.1", "outbound")).toMatch(/is banned/)
      expect(yield* filter.isBanned("10.7.0.2")).toBe(false)
    }),
  )

  it.scoped("the connection bucket refills at 5 a second: 50 spread over 10 seconds all pass", () =>
    Effect.gen(function* () {
      const filter = yield* startFilter({ ...generous, connections: defaultSpamPolicy.connections })
      for (let i = 0; i < 50; i++) yield* admitted(filter, "10.7.0.5")
      expect(yield* refusal(filter, "10.7.0.5")).toMatch(/too often/)
      yield* TestClock.adjust("1 second")
      for (let i = 0; i < 5; i++) yield* admitted(filter, "10.7.0.5")
      expect(yield* refusal(filter, "10.7.0.5")).toMatch(/too often/)
      // a fresh IP connecting every 200 ms for 10 seconds never runs dry
      for (let i = 0; i < 50; i++) {
        yield* admitted(filter, "10.7.0.6")
        yield* TestClock.adjust("200 millis")
      }
      expect(yield* filter.isBanned("10.7.0.5")).toBe(false)
    }),
  )

  it.scoped(
    "after a connection-flood ban expires, the IP starts over: one refusal does not ban it again",
    () =>
      Effect.gen(function* () {
        const filter = yield* startFilter({
          ...generous,
          connections: { rate: 1, burst: 5 },
          banSeconds: 60,
        })
        for (let i = 0; i < 5; i++) yield* admitted(filter, "10.7.0.3")
        for (let i = 0; i < 10; i++) yield* refusal(filter, "10.7.0.3")
        expect(yield* filter.isBanned("10.7.0.3")).toBe(true)
        yield* TestClock.adjust("61 seconds")
        for (let i = 0; i < 5; i++) yield* admitted(filter, "10.7.0.3")
        expect(yield* refusal(filter, "10.7.0.3")).toMatch(/too often/)
        expect(yield* filter.isBanned("10.7.0.3")).toBe(false)
      }),
  )

  it.scoped("with banSeconds 0 a connection flood is refused but never banned", () =>
    Effect.gen(function* () {
      const filter = yield* startFilter({ ...generous, connections: { rate: 0, burst: 1 }, banSeconds: 0 })
      yield* admitted(filter, "10.7.0.4")
      for (let i = 0; i < 20; i++) expect(yield* refusal(filter, "10.7.0.4")).toMatch(/too often/)
      expect(yield* filter.banned).toEqual([])
    }),
  )

  it.scoped(
    "per-IP, per-/24 and per-/16 inbound caps refuse beyond the cap; release frees the slot once",
    () =>
      Effect.gen(function* () {
        const filter = yield* startFilter({
          connections: { rate: 0, burst: 1_000 },
          maxInboundPerIp: 2,
          maxInboundPer24: 3,
          maxInboundPer16: 4,
        })
        const first = yield* admitted(filter, "10.5.1.1")
        yield* admitted(filter, "10.5.1.1")
        expect(yield* refusal(filter, "10.5.1.1")).toBe("10.5.1.1: too many inbound connections from its IP")
        yield* admitted(filter, "10.5.1.2")
        expect(yield* refusal(filter, "10.5.1.3")).toBe("10.5.1.3: too many inbound connections from its /24")
        yield* admitted(filter, "10.5.2.1")
        expect(yield* refusal(filter, "10.5.3.1")).toBe("10.5.3.1: too many inbound connections from its /16")
        // other /16s, and outbound connections, are not counted
        yield* admitted(filter, "10.6.1.1")
        yield* admitted(filter, "10.5.1.1", "outbound")

        yield* first.release
        yield* admitted(filter, "10.5.1.1")
        // a second release of the same connection frees nothing more
        yield* first.release
        expect(yield* refusal(filter, "10.5.1.1")).toMatch(/its IP/)
        expect(yield* refusal(filter, "10.5.9.9")).toMatch(/its \/16/)
      }),
  )
})

/** droppedCount reads p2p_datagrams_dropped_total for one reason and kind (metrics are process-wide: compare deltas). */
const droppedCount = (reason: "banned" | "rate", kind: "echo" | "register" | "introduce" | "open") =>
  Effect.map(Metric.value(SpamFilter.datagramsDropped(reason, kind)), (s) => s.count)

describe("SpamFilter datagram admission (rendezvous requests, UDP session opens)", () => {
  it.scoped(
    "one IP's datagrams pass up to the bucket's burst, refill at its rate; excess is counted, not scored",
    () =>
      Effect.gen(function* () {
        const filter = yield* startFilter({ datagrams: { rate: 5, burst: 40 } })
        const before = yield* droppedCount("rate", "echo")
        for (let i = 0; i < 40; i++) expect(yield* filter.admitDatagram("10.8.0.1", "echo")).toBe(true)
        for (let i = 0; i < 100; i++) expect(yield* filter.admitDatagram("10.8.0.1", "echo")).toBe(false)
        expect((yield* droppedCount("rate", "echo")) - before).toBe(100)
        // another IP has its own bucket; one second refills five
        expect(yield* filter.admitDatagram("10.8.0.2", "register")).toBe(true)
        yield* TestClock.adjust("1 second")
        for (let i = 0; i < 5; i++) expect(yield* filter.admitDatagram("10.8.0.1", "open")).toBe(true)
        expect(yield* filter.admitDatagram("10.8.0.1", "open")).toBe(false)
        // a source address can be spoofed: a datagram flood bans nobody
        expect(yield* filter.banned).toEqual([])
      }),
  )

  it.scoped(
    "a banned host or subnet is refused at once (setban silences it), and admitted again when lifted",
    () =>
      Effect.gen(function* () {
        const filter = yield* startFilter()
        expect(yield* filter.admitDatagram("10.8.1.1", "echo")).toBe(true)
        const before = yield* droppedCount("banned", "open")
        yield* filter.ban("10.8.1.1", { reason: "setban" })
        yield* filter.ban("10.9.0.0/16", { reason: "setban" })
        expect(yield* filter.admitDatagram("10.8.1.1", "open")).toBe(false)
        expect(yield* filter.admitDatagram("::ffff:10.8.1.1", "open")).toBe(false)
        expect(yield* filter.admitDatagram("10.9.200.7", "open")).toBe(false)
        expect(yield* filter.admitDatagram("10.8.1.2", "open")).toBe(true)
        expect((yield* droppedCount("banned", "open")) - before).toBe(3)
        yield* filter.unban("10.8.1.1")
        expect(yield* filter.admitDatagram("10.8.1.1", "open")).toBe(true)
        // and a ban that expires lets the range in again
        yield* TestClock.adjust(`${defaultSpamPolicy.banSeconds + 1} seconds`)
        expect(yield* filter.admitDatagram("10.9.200.7", "echo")).toBe(true)
      }),
  )

  it.scoped("a ban stored by an earlier run refuses datagrams from the start", () =>
    Effect.gen(function* () {
      const store = makeMemoryStore()
      yield* Effect.scoped(
        Effect.flatMap(startFilter({}, store), (f) => f.ban("10.8.2.1", { reason: "earlier" })),
      )
      const filter = yield* startFilter({}, store)
      expect(yield* filter.admitDatagram("10.8.2.1", "echo")).toBe(false)
    }),
  )

  it.scoped("the IPs whose buckets it remembers are bounded: the least recently seen is forgotten", () =>
    Effect.gen(function* () {
      const filter = yield* startFilter({ datagrams: { rate: 0, burst: 1 } })
      expect(yield* filter.admitDatagram("10.8.3.1", "echo")).toBe(true)
      expect(yield* filter.admitDatagram("10.8.3.1", "echo")).toBe(false)
      const ip = (i: number) => `10.${100 + (i >> 16)}.${(i >> 8) & 0xff}.${i & 0xff}`
      for (let i = 0; i < SpamFilter.MAX_DATAGRAM_SOURCES - 1; i++) yield* filter.admitDatagram(ip(i), "echo")
      // 10.8.3.1 is still among the remembered (its bucket is empty) until one more IP comes
      expect(yield* filter.admitDatagram("10.8.3.1", "echo")).toBe(false)
      for (let i = 0; i < SpamFilter.MAX_DATAGRAM_SOURCES; i++)
        yield* filter.admitDatagram(ip(SpamFilter.MAX_DATAGRAM_SOURCES + i), "echo")
      expect(yield* filter.admitDatagram("10.8.3.1", "echo")).toBe(true)
    }),
  )

  it.scoped(
    "misbehaveDatagram scores the IP (20 a bad signature) and bans it at 100, as a peer would be",
    () =>
      Effect.gen(function* () {
        const filter = yield* startFilter()
        const bad = Misbehavior.BadSignature({ what: "a rendezvous register" })
        for (let i = 1; i < 5; i++)
          expect(yield* filter.misbehaveDatagram("10.8.4.1", bad)).toEqual({ score: 20 * i, banned: false })
        expect(yield* filter.admitDatagram("10.8.4.1", "register")).toBe(true)
        expect(yield* filter.misbehaveDatagram("10.8.4.1", bad)).toEqual({ score: 100, banned: true })
        expect(yield* filter.banned).toEqual([
          {
            subnet: "10.8.4.1/32",
            createdAt: 0,
            until: 86_400,
            reason: "bad signature on a rendezvous register",
          },
        ])
        expect(yield* filter.admitDatagram("10.8.4.1", "register")).toBe(false)
        // the ban covers the IP's TCP connections too
        expect(yield* refusal(filter, "10.8.4.1")).toMatch(/is banned/)
      }),
  )

  it.scoped("datagram misbehaviour and connection floods add to one per-IP score", () =>
    Effect.gen(function* () {
      const filter = yield* startFilter({ ...generous, connections: { rate: 0, burst: 1 } })
      yield* admitted(filter, "10.8.5.1")
      for (let i = 0; i < 6; i++) yield* refusal(filter, "10.8.5.1")
      const verdict = yield* filter.misbehaveDatagram("10.8.5.1", Misbehavior.BadSignature({ what: "x" }))
      expect(verdict).toEqual({ score: 80, banned: false })
      expect(yield* filter.misbehaveDatagram("10.8.5.1", Misbehavior.BadSignature({ what: "x" }))).toEqual({
        score: 100,
        banned: true,
      })
    }),
  )

  it.scoped("with banSeconds 0 datagram misbehaviour is scored but never banned", () =>
    Effect.gen(function* () {
      const filter = yield* startFilter({ banSeconds: 0 })
      for (let i = 0; i < 10; i++)
        yield* filter.misbehaveDatagram("10.8.6.1", Misbehavior.BadSignature({ what: "x" }))
      expect(yield* filter.banned).toEqual([])
      expect(yield* filter.admitDatagram("10.8.6.1", "echo")).toBe(true)
    }),
  )
})

describe("PeerGuard (one connection's buckets and score)", () => {
  it.scoped("messages: excess is dropped and scored 10 each", () =>
    Effect.gen(function* () {
      const filter = yield* startFilter({ messages: { rate: 1, burst: 3 } })
      const guard = yield* admitted(filter, "10.8.0.1")
      for (let i = 0; i < 3; i++) expect(yield* guard.admit("ping", 0)).toBe(true)
      expect(yield* guard.admit("ping", 0)).toBe(false)
      expect(yield* guard.admit("headers", 0)).toBe(false)
      expect(yield* guard.standing).toEqual({ score: 20, banned: false })
      yield* TestClock.adjust("1 second")
      expect(yield* guard.admit("ping", 0)).toBe(true)
    }),
  )

  it.scoped("inv and addr are charged per entry; a refused message spends nothing", () =>
    Effect.gen(function* () {
      const filter = yield* startFilter({ inv: { rate: 0, burst: 100 }, addr: { rate: 0, burst: 10 } })
      const guard = yield* admitted(filter, "10.8.0.2")
      expect(yield* guard.admit("inv", 60)).toBe(true)
      expect(yield* guard.admit("inv", 60)).toBe(false)
      expect(yield* guard.admit("inv", 40)).toBe(true)
      expect(yield* guard.admit("inv", 1)).toBe(false)
      expect(yield* guard.admit("addr", 10)).toBe(true)
      expect(yield* guard.admit("addr", 1)).toBe(false)
      // other messages are not charged to those buckets
      expect(yield* guard.admit("getheaders", 5_000)).toBe(true)
      expect(yield* guard.standing).toEqual({ score: 30, banned: false })
    }),
  )

  it.scoped("tx costs one per message; getdata over maxGetDataItems is dropped", () =>
    Effect.gen(function* () {
      const filter = yield* startFilter({ tx: { rate: 0, burst: 2 }, maxGetDataItems: 1_000 })
      const guard = yield* admitted(filter, "10.8.0.3")
      expect(yield* guard.admit("tx", 1)).toBe(true)
      expect(yield* guard.admit("tx", 1)).toBe(true)
      expect(yield* guard.admit("tx", 1)).toBe(false)
      expect(yield* guard.admit("getdata", 1_000)).toBe(true)
      expect(yield* guard.admit("getdata", 1_001)).toBe(false)
      expect(yield* guard.standing).toEqual({ score: 20, banned: false })
    }),
  )

  it.scoped("unrequested blocks beyond the allowance are dropped and scored; the allowance refills", () =>
    Effect.gen(function* () {
      const filter = yield* startFilter({ unrequestedBlocks: { rate: 1 / 60, burst: 10 } })
      const guard = yield* admitted(filter, "10.8.0.4")
      for (let i = 0; i < 10; i++) expect(yield* guard.unrequested("block")).toBe(true)
      expect(yield* guard.unrequested("block")).toBe(false)
      expect(yield* guard.standing).toEqual({ score: 10, banned: false })
      yield* TestClock.adjust("60 seconds")
      expect(yield* guard.unrequested("block")).toBe(true)
    }),
  )

  it.scoped("throttle answers how long to pause reading once the byte budget is spent", () =>
    Effect.gen(function* () {
      const filter = yield* startFilter({ bytes: { rate: 1_000, burst: 2_000 } })
      const guard = yield* admitted(filter, "10.8.0.5")
      expect(yield* guard.throttle(1_500)).toBe(0)
      expect(yield* guard.throttle(1_500)).toBe(1_000)
      yield* TestClock.adjust("1 second")
      expect(yield* guard.throttle(500)).toBe(500)
      expect(yield* guard.standing).toEqual({ score: 0, banned: false })
    }),
  )

  it.scoped("a score reaching 100 bans the peer's address, once", () =>
    Effect.gen(function* () {
      const filter = yield* startFilter({ banSeconds: 600 })
      const guard = yield* admitted(filter, "127.0.0.7")
      const decode = new DecodeError({ reason: "truncated", what: "inv", offset: 3 })
      expect(yield* guard.misbehave(Misbehavior.BadChecksum())).toEqual({ score: 50, banned: false })
      expect(yield* guard.misbehave(Misbehavior.Malformed({ error: decode }))).toEqual({
        score: 70,
        banned: false,
      })
      expect(yield* guard.misbehave(Misbehavior.ProtocolViolation({ detail: "second version" }))).toEqual({
        score: 90,
        banned: false,
      })
      expect(yield* filter.banned).toEqual([])
      expect(yield* guard.misbehave(Misbehavior.Flood({ bucket: "inv" }))).toEqual({
        score: 100,
        banned: true,
      })
      expect(yield* guard.standing).toEqual({ score: 100, banned: true })
      expect(yield* filter.banned).toEqual([
        { subnet: "127.0.0.7/32", createdAt: 0, until: 600, reason: "flood: inv limit exceeded" },
      ])
      expect(yield* filter.isBanned("127.0.0.1")).toBe(false)
      expect(yield* refusal(filter, "127.0.0.7")).toMatch(/banned/)

      // later misbehaviour does not ban again (the first ban's reason and start stay)
      yield* TestClock.adjust("10 seconds")
      expect(yield* guard.misbehave(Misbehavior.BadChecksum())).toEqual({ score: 150, banned: true })
      expect((yield* filter.banned).map((b) => [b.createdAt, b.reason])).toEqual([
        [0, "flood: inv limit exceeded"],
      ])
    }),
  )

  it.scoped("a flood of dropped messages alone bans after ten", () =>
    Effect.gen(function* () {
      const filter = yield* startFilter({ addr: { rate: 0, burst: 0 } })
      const guard = yield* admitted(filter, "10.8.0.6")
      for (let i = 0; i < 9; i++) yield* guard.admit("addr", 1)
      expect(yield* guard.standing).toEqual({ score: 90, banned: false })
      expect(yield* guard.admit("addr", 1)).toBe(false)
      expect(yield* guard.standing).toEqual({ score: 100, banned: true })
      expect((yield* filter.banned).map((b) => [b.subnet, b.reason])).toEqual([
        ["10.8.0.6/32", "flood: addr limit exceeded"],
      ])
    }),
  )

  it.scoped("with banSeconds 0 the peer is told to go but nothing is banned", () =>
    Effect.gen(function* () {
      const store = makeMemoryStore()
      const filter = yield* startFilter({ banSeconds: 0 }, store)
      const guard = yield* admitted(filter, "10.8.0.7")
      const decode = new DecodeError({ reason: "invalid-value", what: "magic", offset: 0 })
      expect(yield* guard.misbehave(Misbehavior.BadFrame({ error: decode }))).toEqual({
        score: 100,
        banned: true,
      })
      expect(yield* filter.banned).toEqual([])
      expect(yield* filter.isBanned("10.8.0.7")).toBe(false)
      expect(yield* rowsOf(store)).toEqual([])
      expect(yield* refusal(filter, "10.8.0.7")).toBeUndefined()
    }),
  )
})

describe("scoreOf (the one misbehaviour-to-score mapping)", () => {
  const decode = new DecodeError({ reason: "length-exceeds-cap", what: "block", offset: 24 })
  const table: ReadonlyArray<readonly [string, Misbehavior, number]> = [
    ["wrong magic or oversized frame", Misbehavior.BadFrame({ error: decode }), 100],
    ["bad checksum", Misbehavior.BadChecksum(), 50],
    ["undecodable payload", Misbehavior.Malformed({ error: decode }), 20],
    ["message before the handshake", Misbehavior.ProtocolViolation({ detail: "inv before version" }), 20],
    ["provably invalid tx", Misbehavior.Invalid({ error: txError("bad-txns-vin-empty") }), 100],
    [
      "tx spending what we lack",
      Misbehavior.Invalid({ error: txError("bad-txns-inputs-missingorspent", "", 0) }),
      0,
    ],
    ["tx rule with a partial score", Misbehavior.Invalid({ error: txError("some-rule", "", 10) }), 10],
    ["messages flood", Misbehavior.Flood({ bucket: "messages" }), 10],
    ["inv flood", Misbehavior.Flood({ bucket: "inv" }), 10],
    ["addr flood", Misbehavior.Flood({ bucket: "addr" }), 10],
    ["tx flood", Misbehavior.Flood({ bucket: "tx" }), 10],
    ["getdata too large", Misbehavior.Flood({ bucket: "getdata" }), 10],
    ["unrequested-blocks flood", Misbehavior.Flood({ bucket: "unrequestedBlocks" }), 10],
    ["unrequested block", Misbehavior.Unrequested({ command: "block" }), 10],
    ["badly signed datagram request", Misbehavior.BadSignature({ what: "a rendezvous register" }), 20],
  ]
  it.each(table.map(([name, m, score]) => ({ name, m, score })))("$name scores $score", ({ m, score }) => {
    expect(scoreOf(m)).toBe(score)
  })
})

describe("parseSubnet", () => {
  const canonical: ReadonlyArray<readonly [string, string]> = [
    ["127.0.0.9", "127.0.0.9/32"],
    [" 10.1.2.3/16 ", "10.1.0.0/16"],
    ["10.1.2.3/24", "10.1.2.0/24"],
    ["10.0.0.0/255.255.0.0", "10.0.0.0/16"],
    ["0.0.0.0/0", "0.0.0.0/0"],
    ["::1", "::1/128"],
    ["0:0:0:0:0:0:0:1", "::1/128"],
    ["2001:DB8:0:0::1/32", "2001:db8::/32"],
    ["2001:db8::/64", "2001:db8::/64"],
    ["::ffff:1.2.3.4", "1.2.3.4/32"],
    ["::ffff:10.1.0.0/112", "10.1.0.0/16"],
    ["peer-a", "peer-a"],
  ]
  it.each(canonical)("reads %s as %s", (text, key) => {
    expect(SpamFilter.parseSubnet(text)?.key).toBe(key)
  })

  const rejected = [
    "",
    "1.2.3.4/33",
    "::1/129",
    "1.2.3.4/24/1",
    "1.2.3.4/-1",
    "1.2.3.4/ab",
    "1.2.3.4/",
    "10.0.0.0/255.0.255.0",
    "127.1",
    "010.0.0.1",
    "3232235777",
    "999.1.1.1",
    "1.2.3.4.5",
    "fe80::1%eth0",
    "abc/24",
    "two words",
  ]
  it.each(rejected)("rejects %j", (text) => {
    expect(SpamFilter.parseSubnet(text)).toBeUndefined()
  })
})

describe("TokenBucket", () => {
  it("refills at its rate up to its burst", () => {
    const b = new TokenBucket({ rate: 2, burst: 4 }, 0)
    expect(b.take(4, 0)).toBe(true)
    expect(b.take(1, 0)).toBe(false)
    expect(b.take(1, 500)).toBe(true)
    expect(b.take(1, 500)).toBe(false)
    expect(b.take(4, 10_000)).toBe(true)
    expect(b.take(1, 10_000)).toBe(false)
  })
})
