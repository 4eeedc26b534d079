import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { type EvictionCandidate, selectEviction } from "../../src/actors/eviction.js"

/** cand is inbound peer `id` at `host`, connected at `id` seconds, with no ping, tx or block yet. */
const cand = (id: number, host: string, overrides: Partial<EvictionCandidate> = {}): EvictionCandidate => ({
  id,
  host,
  connectedAt: id * 1000,
  pingMs: undefined,
  lastBlockAt: 0,
  lastTxAt: 0,
  ...overrides,
})

/** distinct is `n` candidates with distinct /16s, pings, last tx and block times and connection times. */
const distinct = (n: number): Array<EvictionCandidate> =>
  Array.from({ length: n }, (_, i) =>
    cand(i + 1, `10.${i + 1}.0.1`, {
      pingMs: 10 + ((i * 7) % n),
      lastTxAt: 1_000 + ((i * 3) % n),
      lastBlockAt: 2_000 + ((i * 5) % n),
    }),
  )

/** sameSubnet is `n` candidates all in 10.1/16, ids 1..n, the later the younger. */
const sameSubnet = (n: number): Array<EvictionCandidate> =>
  Array.from({ length: n }, (_, i) => cand(i + 1, `10.1.${i}.1`))

describe("selectEviction (Core's inbound eviction)", () => {
  it("evicts nobody when every candidate is protected: 4 by group + 8 by ping + 4 by tx + 4 by block = 20", () => {
    expect(selectEviction([])).toBeUndefined()
    for (let n = 1; n <= 20; n++) {
      expect(selectEviction(distinct(n)), `${n} distinct candidates`).toBeUndefined()
      expect(selectEviction(sameSubnet(n)), `${n} candidates of one /16`).toBeUndefined()
    }
    // the 21st is unprotected (half of one is none): someone goes
    expect(selectEviction(distinct(21))).toBeDefined()
    expect(selectEviction(sameSubnet(21))).toBe(21)
  })

  it("half of what is left after the fixed protections is kept by connection time (the oldest)", () => {
    // 30 of one /16: 20 protected by the fixed rules (lowest ids on ties), 10 left, the 5 oldest kept
    expect(selectEviction(sameSubnet(30))).toBe(30)
    // the youngest peer is the one dropped: reverse the connection times and the victim follows
    const reversed = sameSubnet(30).map((c) => ({ ...c, connectedAt: (100 - c.id) * 1000 }))
    // ids 1..20 protected by the fixed rules; of 21..30 the oldest half (26..30) kept; youngest of 21..25 is 21
    expect(selectEviction(reversed)).toBe(21)
  })

  it("drops the youngest peer of the most represented /16, not the youngest peer overall", () => {
    const crowd = Array.from({ length: 20 }, (_, i) =>
      cand(i + 1, `10.1.${i}.1`, { pingMs: 101 + i, connectedAt: (i + 1) * 1000 }),
    )
    const diverse = Array.from({ length: 10 }, (_, i) =>
      cand(21 + i, `10.${100 + i}.0.1`, { pingMs: 31 + i, connectedAt: (21 + i) * 500 }),
    )
    // two very young, slow peers of another /16: left over to the end, but their group is smaller
    const pair = [
      cand(31, "10.2.0.1", { pingMs: 1000, connectedAt: 1_000_000 }),
      cand(32, "10.2.0.2", { pingMs: 1000, connectedAt: 1_000_001 }),
    ]
    const victim = selectEviction([...crowd, ...diverse, ...pair])
    // protected: 21..24 by group, 25..30 and 1, 2 by ping, 3..6 by tx, 7..10 by block, 11..16 by age;
    // left 17..20 (10.1/16) and 31, 32 (10.2/16): the youngest of 10.1/16 goes
    expect(victim).toBe(20)
    // shuffling the input does not change the choice
    expect(selectEviction([...pair, ...[...diverse].reverse(), ...[...crowd].reverse()])).toBe(20)
  })

  it("never picks one of the 8 lowest-latency peers, nor the 4 latest tx or block givers (property)", () => {
    const arbCandidates = fc
      .uniqueArray(fc.integer({ min: 1, max: 1_000_000 }), { minLength: 0, maxLength: 60 })
      .chain((pings) =>
        fc.tuple(
          fc.constant(pings),
          fc.array(fc.integer({ min: 0, max: 5 }), { minLength: pings.length, maxLength: pings.length }),
          fc.uniqueArray(fc.integer({ min: 1, max: 1_000_000 }), {
            minLength: pings.length * 3,
            maxLength: pings.length * 3,
          }),
        ),
      )
      .map(([pings, groups, times]) =>
        pings.map((pingMs, i) =>
          cand(i + 1, `10.${groups[i]}.${i >> 8}.${i & 0xff}`, {
            pingMs,
            connectedAt: times[3 * i]!,
            lastTxAt: times[3 * i + 1]!,
            lastBlockAt: times[3 * i + 2]!,
          }),
        ),
      )
    fc.assert(
      fc.property(arbCandidates, (candidates) => {
        const victim = selectEviction(candidates)
        if (candidates.length <= 20) return victim === undefined
        if (victim === undefined) return false
        const top = (key: (c: EvictionCandidate) => number, n: number) =>
          [...candidates]
            .sort((a, b) => key(a) - key(b))
            .slice(0, n)
            .map((c) => c.id)
        const protectedIds = new Set([
          ...top((c) => c.pingMs!, 8),
          ...top((c) => -c.lastTxAt, 4),
          ...top((c) => -c.lastBlockAt, 4),
        ])
        return !protectedIds.has(victim)
      }),
      { numRuns: 300 },
    )
  })

  it("between equally represented /16s, the one with the youngest peer loses it", () => {
    // 30 peers, each in its own /16: after the protections 26..30 are left, one per /16
    const lone = Array.from({ length: 30 }, (_, i) => cand(i + 1, `10.${i + 1}.0.1`))
    expect(selectEviction(lone)).toBe(30)
    expect(selectEviction([...lone].reverse())).toBe(30)
    // 4 lone /16s (kept by group), 20 of 10.1/16 (16 kept by ping/tx/block, 4 by age), then two /16s of
    // two peers each, interleaved: left over 10.2 {25, 27} and 10.3 {26, 28}; 10.3 holds the youngest
    const tied = [
      ...[61, 62, 63, 64].map((b, i) => cand(i + 1, `10.${b}.0.1`)),
      ...Array.from({ length: 20 }, (_, i) => cand(i + 5, `10.1.${i}.1`)),
      cand(25, "10.2.0.1"),
      cand(26, "10.3.0.1"),
      cand(27, "10.2.0.2"),
      cand(28, "10.3.0.2"),
    ]
    expect(selectEviction(tied)).toBe(28)
  })

  it("a peer that recently gave us a block or a transaction is protected", () => {
    // without either, the youngest of 30 peers of one /16 is the victim
    expect(selectEviction(sameSubnet(30))).toBe(30)
    const gaveTx = sameSubnet(30).map((c) => (c.id === 30 ? { ...c, lastTxAt: 5_000 } : c))
    const byTx = selectEviction(gaveTx)
    expect(byTx).toBeDefined()
    expect(byTx).not.toBe(30)
    const gaveBlock = sameSubnet(30).map((c) => (c.id === 30 ? { ...c, lastBlockAt: 5_000 } : c))
    const byBlock = selectEviction(gaveBlock)
    expect(byBlock).toBeDefined()
    expect(byBlock).not.toBe(30)
    // four recent tx givers and four recent block givers among the youngest: none of them goes
    const givers = sameSubnet(30).map((c) =>
      c.id > 26 ? { ...c, lastTxAt: c.id } : c.id > 22 ? { ...c, lastBlockAt: c.id } : c,
    )
    const victim = selectEviction(givers)
    expect(victim).toBeDefined()
    expect(victim).toBeLessThanOrEqual(22)
  })

  it("a peer with a measured ping is preferred over one without (no pong sorts as slowest)", () => {
    // 21 of one /16: ids 1..4 protected by group; the youngest (21) is the only one with a ping
    const list = sameSubnet(21).map((c) => (c.id === 21 ? { ...c, pingMs: 500 } : c))
    const victim = selectEviction(list)
    expect(victim).toBeDefined()
    expect(victim).not.toBe(21)
  })
})
