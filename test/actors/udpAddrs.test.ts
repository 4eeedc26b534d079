import { describe, expect, it } from "vitest"
import { futureSlackSeconds, makeRng } from "../../src/actors/addrman.js"
import {
  decodeUdpRow,
  encodeUdpRow,
  type UdpAddrInfo,
  type UdpAddrParams,
  UdpAddrTable,
  udpRowKey,
} from "../../src/actors/udpAddrs.js"
import { toHex } from "../../src/schema/hex.js"
import { hostToBytes } from "../../src/schema/netaddr.js"
import type { UdpAddrEntry } from "../../src/schema/wire.js"

/** NOW is the table's clock in seconds; announcements stamped with it are fresh. */
const NOW = 1_700_000_000

const params: UdpAddrParams = {
  maxEntries: 8,
  maxPerServer: 3,
  horizonSeconds: 86_400,
  maxFailures: 3,
  retrySeconds: 60,
}

/** key is node key number `n`: 32 bytes of `n`, so keys sort as their numbers do. */
const key = (n: number): Uint8Array => new Uint8Array(32).fill(n)
const hex = (n: number): string => toHex(key(n))

/** announce is node `n`'s registration at the rendezvous server `host:port`, made at `time`. */
const announce = (n: number, host = "10.0.0.1", port = 9000, time = NOW): UdpAddrEntry => ({
  time,
  services: 1,
  nodeKey: key(n),
  host: hostToBytes(host)!,
  port,
})

const table = (p: Partial<UdpAddrParams> = {}, seed = 1) =>
  new UdpAddrTable({ ...params, ...p }, makeRng(seed))

/** present lists which of the node numbers `ns` the table holds. */
const present = (t: UdpAddrTable, ns: ReadonlyArray<number>): Array<number> =>
  ns.filter((n) => t.get(hex(n)) !== undefined)

/** draws collects what `select` returns over 200 picks ("none" for nothing). */
const draws = (t: UdpAddrTable, own: string, now = NOW, exclude: ReadonlySet<string> = new Set()) => {
  const seen = new Set<string>()
  for (let i = 0; i < 200; i++) seen.add(t.select(exclude, own, now)?.keyHex ?? "none")
  return seen
}

describe("UdpAddrTable.add", () => {
  it("answers added, unchanged, updated, invalid and full", () => {
    const t = table()
    expect(t.add(announce(1), NOW)).toBe("added")
    // the same announcement again, or an older one: nothing to change
    expect(t.add(announce(1), NOW)).toBe("unchanged")
    expect(t.add(announce(1, "10.0.0.1", 9000, NOW - 60), NOW)).toBe("unchanged")
    // a newer one at the same server refreshes it
    expect(t.add(announce(1, "10.0.0.1", 9000, NOW + 60), NOW + 60)).toBe("updated")
    expect(t.get(hex(1))?.lastSeen).toBe(NOW + 60)
    // a newer one at another server moves the node there
    expect(t.add(announce(1, "10.0.0.2", 9001, NOW + 120), NOW + 120)).toBe("updated")
    expect(t.get(hex(1))).toMatchObject({ host: "10.0.0.2", port: 9001, lastSeen: NOW + 120 })
    expect(t.size).toBe(1)

    // a server whose three entries this node all reached takes no fourth
    for (const n of [2, 3, 4]) expect(t.add(announce(n, "10.0.0.3"), NOW)).toBe("added")
    for (const n of [2, 3, 4]) t.markGood(hex(n), NOW)
    expect(t.add(announce(5, "10.0.0.3"), NOW)).toBe("full")
    // ... nor an entry moving there
    expect(t.add(announce(1, "10.0.0.3", 9000, NOW + 180), NOW + 180)).toBe("full")
    expect(t.get(hex(1))).toMatchObject({ host: "10.0.0.2", port: 9001, lastSeen: NOW + 120 })
    expect(t.get(hex(5))).toBeUndefined()
    expect(t.size).toBe(4)
  })

  it("refuses an unspecified or port-0 server, a short key and a stale announcement", () => {
    const t = table()
    expect(t.add(announce(1, "0.0.0.0"), NOW)).toBe("invalid")
    expect(t.add(announce(1, "::"), NOW)).toBe("invalid")
    expect(t.add(announce(1, "10.0.0.1", 0), NOW)).toBe("invalid")
    expect(t.add({ ...announce(1), nodeKey: new Uint8Array(31) }, NOW)).toBe("invalid")
    expect(t.add({ ...announce(1), host: new Uint8Array(4) }, NOW)).toBe("invalid")
    // older than the horizon: a registration long gone
    expect(t.add(announce(1, "10.0.0.1", 9000, NOW - params.horizonSeconds - 1), NOW)).toBe("invalid")
    expect(t.size).toBe(0)
    expect(t.takeChanges()).toEqual([])
    // just inside the horizon, and an IPv6 server, are fine
    expect(t.add(announce(1, "10.0.0.1", 9000, NOW - params.horizonSeconds), NOW)).toBe("added")
    expect(t.add(announce(2, "2001:db8::1", 9000), NOW)).toBe("added")
    expect(t.get(hex(2))).toMatchObject({ host: "2001:db8::1", port: 9000 })
  })

  it("clamps a time from the future to now plus 10 minutes", () => {
    const t = table()
    expect(t.add(announce(1, "10.0.0.1", 9000, NOW + 86_400), NOW)).toBe("added")
    expect(t.get(hex(1))?.lastSeen).toBe(NOW + futureSlackSeconds)
    // a later far-future claim is clamped to the same time: no update
    expect(t.add(announce(1, "10.0.0.2", 9000, NOW + 2 * 86_400), NOW)).toBe("unchanged")
    expect(t.get(hex(1))?.host).toBe("10.0.0.1")
  })

  it("keeps per-server counts right when entries move: a server refills to its cap, no further", () => {
    const t = table()
    for (const n of [1, 2, 3]) expect(t.add(announce(n, "10.0.0.1", 9000, NOW - 10 * n), NOW)).toBe("added")
    // two of them re-register at another server
    expect(t.add(announce(1, "10.0.0.2", 9000, NOW), NOW)).toBe("updated")
    expect(t.add(announce(2, "10.0.0.2", 9000, NOW), NOW)).toBe("updated")
    // the first server has room for two more without evicting anyone
    expect(t.add(announce(4, "10.0.0.1"), NOW)).toBe("added")
    expect(t.add(announce(5, "10.0.0.1"), NOW)).toBe("added")
    expect(present(t, [1, 2, 3, 4, 5])).toEqual([1, 2, 3, 4, 5])
    // now it is full: the next one there evicts its oldest unreached entry (3), not the moved ones
    expect(t.add(announce(6, "10.0.0.1"), NOW)).toBe("added")
    expect(present(t, [1, 2, 3, 4, 5, 6])).toEqual([1, 2, 4, 5, 6])
    // the second server holds the two moved entries and takes one more before it evicts
    expect(t.add(announce(7, "10.0.0.2", 9000, NOW - 5), NOW)).toBe("added")
    expect(present(t, [1, 2, 7])).toEqual([1, 2, 7])
    expect(t.add(announce(8, "10.0.0.2"), NOW)).toBe("added")
    expect(present(t, [1, 2, 7, 8])).toEqual([1, 2, 8])
    expect(t.size).toBe(6)
  })

  it("a full server evicts its oldest never-reached entry; reached ones are kept", () => {
    const t = table()
    expect(t.add(announce(1, "10.0.0.1", 9000, NOW - 300), NOW)).toBe("added")
    expect(t.add(announce(2, "10.0.0.1", 9000, NOW - 100), NOW)).toBe("added")
    expect(t.add(announce(3, "10.0.0.1", 9000, NOW - 200), NOW)).toBe("added")
    // 1 is the oldest, but this node reached it: 3 goes
    t.markGood(hex(1), NOW)
    expect(t.add(announce(4, "10.0.0.1"), NOW)).toBe("added")
    expect(present(t, [1, 2, 3, 4])).toEqual([1, 2, 4])
    // other servers are not touched by this server's cap
    expect(t.add(announce(5, "10.0.0.9"), NOW)).toBe("added")
    t.markGood(hex(2), NOW)
    t.markGood(hex(4), NOW)
    expect(t.add(announce(6, "10.0.0.1"), NOW)).toBe("full")
    expect(present(t, [1, 2, 4, 5, 6])).toEqual([1, 2, 4, 5])
    // the same host on another port is another server
    expect(t.add(announce(6, "10.0.0.1", 9001), NOW)).toBe("added")
  })

  it("a reached entry not heard of for the horizon is evicted all the same", () => {
    const t = table()
    for (const n of [1, 2, 3]) t.add(announce(n), NOW)
    for (const n of [1, 2, 3]) t.markGood(hex(n), NOW)
    const later = NOW + params.horizonSeconds + 1
    expect(t.add(announce(4, "10.0.0.1", 9000, later), later)).toBe("added")
    expect(t.size).toBe(3)
    expect(t.get(hex(4))).toBeDefined()
  })

  it("the total cap evicts the oldest never-reached entry of any server, and refuses when all were reached", () => {
    const t = table()
    // 8 entries over three servers; 5 is the oldest
    const servers = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    for (let n = 1; n <= 8; n++) {
      const time = n === 5 ? NOW - 500 : NOW - n
      expect(t.add(announce(n, servers[n % 3]!, 9000, time), NOW)).toBe("added")
    }
    expect(t.size).toBe(8)
    expect(t.add(announce(9, "10.0.0.4"), NOW)).toBe("added")
    expect(t.size).toBe(8)
    expect(present(t, [5, 9])).toEqual([9])
    // all reached: a newcomer is refused
    for (const n of [1, 2, 3, 4, 6, 7, 8, 9]) t.markGood(hex(n), NOW)
    expect(t.add(announce(10, "10.0.0.5"), NOW)).toBe("full")
    expect(t.size).toBe(8)
  })
})

describe("UdpAddrTable.select", () => {
  it("returns only keys above our own, never excluded ones, and every candidate over many draws", () => {
    const t = table()
    for (const n of [1, 2, 3, 4, 5, 6]) t.add(announce(n, `10.0.${n}.1`), NOW)
    // our own key (gossiped back to us) and the lower keys are never picked: they dial us
    expect(draws(t, hex(3))).toEqual(new Set([hex(4), hex(5), hex(6)]))
    expect(draws(t, hex(3), NOW, new Set([hex(5)]))).toEqual(new Set([hex(4), hex(6)]))
    expect(draws(t, hex(3), NOW, new Set([hex(4), hex(5), hex(6)]))).toEqual(new Set(["none"]))
    expect(draws(t, hex(6))).toEqual(new Set(["none"]))
    // a key between ours and the next counts too
    expect(draws(t, toHex(new Uint8Array(32).fill(5).fill(4, 31)))).toEqual(new Set([hex(5), hex(6)]))
    // the lowest own key sees everyone
    expect(draws(t, toHex(new Uint8Array(32)))).toEqual(new Set([1, 2, 3, 4, 5, 6].map(hex)))
  })

  it("waits retrySeconds × 2^(attempts-1) after a failed dial", () => {
    const t = table({ maxFailures: 10 })
    t.add(announce(2), NOW)
    const own = hex(1)
    t.markAttempt(hex(2), NOW)
    expect(t.select(new Set(), own, NOW + 59)).toBeUndefined()
    expect(t.select(new Set(), own, NOW + 60)?.keyHex).toBe(hex(2))
    t.markAttempt(hex(2), NOW + 60)
    expect(t.select(new Set(), own, NOW + 60 + 119)).toBeUndefined()
    expect(t.select(new Set(), own, NOW + 60 + 120)?.keyHex).toBe(hex(2))
    t.markAttempt(hex(2), NOW + 180)
    expect(t.select(new Set(), own, NOW + 180 + 239)).toBeUndefined()
    expect(t.select(new Set(), own, NOW + 180 + 240)?.keyHex).toBe(hex(2))
    // a success clears the backoff
    t.markGood(hex(2), NOW + 420)
    expect(t.select(new Set(), own, NOW + 420)?.keyHex).toBe(hex(2))
  })

  it("the delay is capped at a day", () => {
    const t = table({ maxFailures: 100, horizonSeconds: 365 * 86_400 })
    t.add(announce(2), NOW)
    for (let i = 0; i < 30; i++) t.markAttempt(hex(2), NOW)
    expect(t.select(new Set(), hex(1), NOW + 86_399)).toBeUndefined()
    expect(t.select(new Set(), hex(1), NOW + 86_400)?.keyHex).toBe(hex(2))
  })

  it("never picks an entry not announced for the horizon", () => {
    const t = table()
    t.add(announce(2), NOW)
    expect(t.select(new Set(), hex(1), NOW + params.horizonSeconds)?.keyHex).toBe(hex(2))
    expect(t.select(new Set(), hex(1), NOW + params.horizonSeconds + 1)).toBeUndefined()
  })
})

describe("UdpAddrTable dial history", () => {
  it("drops an entry after maxFailures failed dials; a success resets the count", () => {
    const t = table()
    t.add(announce(1), NOW)
    t.add(announce(2), NOW)
    t.takeChanges()
    t.markAttempt(hex(1), NOW)
    t.markAttempt(hex(1), NOW + 100)
    expect(t.get(hex(1))).toMatchObject({ attempts: 2, lastAttempt: NOW + 100 })
    t.markAttempt(hex(1), NOW + 300)
    expect(t.get(hex(1))).toBeUndefined()
    expect(t.size).toBe(1)
    expect(t.takeChanges()).toEqual([[udpRowKey(hex(1)), undefined]])

    t.markAttempt(hex(2), NOW)
    t.markAttempt(hex(2), NOW)
    t.markGood(hex(2), NOW + 10)
    t.markAttempt(hex(2), NOW + 20)
    t.markAttempt(hex(2), NOW + 30)
    expect(t.get(hex(2))).toMatchObject({ attempts: 2, lastSuccess: NOW + 10 })
    // unknown keys are ignored
    t.markAttempt(hex(9), NOW)
    t.markGood(hex(9), NOW)
    expect(t.size).toBe(1)
  })

  it("gossips only entries this node reached, and not once stale", () => {
    const t = table()
    t.add(announce(1), NOW)
    t.add(announce(2), NOW)
    expect(t.gossipable(NOW)).toEqual([])
    t.markAttempt(hex(1), NOW)
    expect(t.gossipable(NOW)).toEqual([])
    t.markGood(hex(1), NOW + 5)
    expect(t.gossipable(NOW + 5).map((i) => i.keyHex)).toEqual([hex(1)])
    // markGood counts as hearing of it: the horizon runs from the success
    expect(t.gossipable(NOW + 5 + params.horizonSeconds).map((i) => i.keyHex)).toEqual([hex(1)])
    expect(t.gossipable(NOW + 6 + params.horizonSeconds)).toEqual([])
  })

  it("takeChanges hands out each changed row once", () => {
    const t = table()
    t.add(announce(1), NOW)
    t.add(announce(2), NOW)
    const first = t.takeChanges()
    expect(first.map(([k]) => k).sort()).toEqual([udpRowKey(hex(1)), udpRowKey(hex(2))].sort())
    expect(t.takeChanges()).toEqual([])
    t.add(announce(1), NOW)
    expect(t.takeChanges()).toEqual([])
    t.markGood(hex(2), NOW)
    expect(t.takeChanges()).toEqual([[udpRowKey(hex(2)), t.get(hex(2))]])
  })

  it("restore keeps fresh entries within the caps and names the rows it dropped", () => {
    const source = table({ maxPerServer: 8 })
    for (let n = 1; n <= 5; n++) source.add(announce(n), NOW)
    source.add(announce(6, "10.0.0.2", 9000, NOW - params.horizonSeconds), NOW)
    const infos = [...source.takeChanges()].map(([, i]) => i!)
    const t = table()
    const later = NOW + 1
    // a duplicate too
    const lost = t.restore([...infos, infos[0]!], later)
    expect(t.size).toBe(3)
    expect(present(t, [1, 2, 3, 4, 5, 6])).toEqual([1, 2, 3])
    expect(lost.sort()).toEqual([4, 5, 6, 1].map((n) => udpRowKey(hex(n))).sort())
    // restoring writes nothing back, and the counts are right: the server is full
    expect(t.takeChanges()).toEqual([])
    t.markGood(hex(1), later)
    t.markGood(hex(2), later)
    t.markGood(hex(3), later)
    expect(t.add(announce(7), later)).toBe("full")
  })
})

describe("udp address rows", () => {
  const info = (host: string): UdpAddrInfo => ({
    nodeKey: key(7),
    keyHex: hex(7),
    host,
    bytes: hostToBytes(host)!,
    port: 9000,
    services: 0xffff_fffe,
    lastSeen: NOW,
    lastAttempt: NOW - 60,
    lastSuccess: NOW - 3600,
    attempts: 2,
  })

  it("round-trip an IPv4 and an IPv6 server", () => {
    for (const host of ["10.1.2.3", "2001:db8::7"]) {
      const row = encodeUdpRow(info(host))
      expect(decodeUdpRow(udpRowKey(hex(7)), row)).toEqual(info(host))
    }
  })

  it("a table entry survives encode and decode unchanged", () => {
    const t = table()
    t.add(announce(3, "10.9.8.7", 1234), NOW)
    t.markAttempt(hex(3), NOW + 1)
    const [[rowKey, entry]] = t.takeChanges() as [[string, UdpAddrInfo]]
    expect(decodeUdpRow(rowKey, encodeUdpRow(entry))).toEqual(entry)
  })

  it("a corrupt row decodes to undefined", () => {
    const good = encodeUdpRow(info("10.1.2.3"))
    const k = udpRowKey(hex(7))
    expect(decodeUdpRow(k, good)).toBeDefined()
    // wrong version
    const v2 = Uint8Array.from(good)
    v2[0] = 2
    expect(decodeUdpRow(k, v2)).toBeUndefined()
    // short, long, empty
    expect(decodeUdpRow(k, good.subarray(0, good.length - 1))).toBeUndefined()
    expect(decodeUdpRow(k, Uint8Array.from([...good, 0]))).toBeUndefined()
    expect(decodeUdpRow(k, new Uint8Array(0))).toBeUndefined()
    // port 0, unspecified server
    const port0 = Uint8Array.from(good)
    port0[17] = 0
    port0[18] = 0
    expect(decodeUdpRow(k, port0)).toBeUndefined()
    expect(decodeUdpRow(k, encodeUdpRow(info("0.0.0.0")))).toBeUndefined()
    // bad key text: not hex, odd length, 31 bytes, 33 bytes, upper case, no prefix, an endpoint key
    expect(decodeUdpRow(`udp:${"zz".repeat(32)}`, good)).toBeUndefined()
    expect(decodeUdpRow(`udp:${hex(7).slice(1)}`, good)).toBeUndefined()
    expect(decodeUdpRow(`udp:${hex(7).slice(2)}`, good)).toBeUndefined()
    expect(decodeUdpRow(`udp:${hex(7)}07`, good)).toBeUndefined()
    expect(decodeUdpRow(`udp:${"ab".repeat(32).toUpperCase()}`, good)).toBeUndefined()
    expect(decodeUdpRow(hex(7), good)).toBeUndefined()
    expect(decodeUdpRow("udp:", good)).toBeUndefined()
    expect(decodeUdpRow("10.1.2.3:9000", good)).toBeUndefined()
  })
})
