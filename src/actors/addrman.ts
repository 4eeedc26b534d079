import { Either } from "effect"
import { sha256 } from "../consensus/hash.js"
import { decodeWith, type Reader, Writer } from "../schema/codec.js"
import { bytesToHost, endpointKey, hostToBytes, isUnspecifiedBytes, subnetOf } from "../schema/netaddr.js"

/**
 * addrman is the AddrBook actor's table of known addresses, after Bitcoin Core's addrman (simplified):
 * pure and synchronous, no Effect services. Time comes in as a number (seconds since the epoch) and
 * randomness from a seeded `Rng`, so the same inputs give the same book. Only the AddrBook fiber holds
 * an instance.
 *
 * Two tables of fixed-size buckets bound the book, and placement is keyed by network group so that no
 * one group can fill it (the eclipse attack of Heilman et al., "Eclipse Attacks on Bitcoin's
 * Peer-to-Peer Network", 2015):
 *
 * - new (addresses heard of): a grid of `newRows × newCols` buckets. The row is a keyed hash of the
 *   address's group, so one /16 reaches at most `newCols` buckets however many peers gossip it; the
 *   column is a keyed hash of the gossiping peer's group (one of `newColsPerSourceGroup` per source
 *   group), so one source group reaches at most `newColsPerSourceGroup × newRows` buckets however many
 *   groups it makes up addresses in.
 * - tried (addresses we completed a handshake with): `triedBuckets` buckets, `triedBucketsPerGroup` of
 *   them per address group.
 *
 * Within a bucket the slot is a keyed hash of the endpoint, probed linearly over `slotProbes` slots (so
 * a handful of addresses sharing a bucket, as on a small network, rarely collide). A newcomer finding
 * all of them taken replaces an occupant only if it is terrible (too old, failed too often); otherwise
 * the newcomer is dropped. The key is a per-book secret, so an attacker cannot aim addresses at chosen
 * slots.
 */

/** AddrmanParams size the tables; the defaults give 65,536 new and 16,384 tried slots. */
export interface AddrmanParams {
  readonly newRows: number
  readonly newCols: number
  readonly newColsPerSourceGroup: number
  readonly triedBuckets: number
  readonly triedBucketsPerGroup: number
  readonly bucketSize: number
  /** slots looked at from an entry's hashed slot (linear probing) before it counts as a collision */
  readonly slotProbes: number
}

export const defaultAddrmanParams: AddrmanParams = {
  newRows: 32,
  newCols: 32,
  newColsPerSourceGroup: 2,
  triedBuckets: 256,
  triedBucketsPerGroup: 8,
  bucketSize: 64,
  slotProbes: 4,
}

/** maxNewPerGroup is the most new-table entries one address group can hold (one row of buckets). */
export const maxNewPerGroup = (p: AddrmanParams): number => p.newCols * p.bucketSize

/** maxNewPerGroupAndSource: the most new-table entries one address group gossiped by one source group gets. */
export const maxNewPerGroupAndSource = (p: AddrmanParams): number => p.newColsPerSourceGroup * p.bucketSize

/** secretBytes is the length of the per-book bucket key. */
export const secretBytes = 32

/** futureSlackSeconds: an address time later than now plus this is clamped (Core's 10 minutes). */
export const futureSlackSeconds = 10 * 60
const horizonSeconds = 30 * 24 * 3600
const retries = 3
const maxFailures = 10
const minFailSeconds = 7 * 24 * 3600
const recentAttemptSeconds = 60
const chanceAttemptSeconds = 10 * 60
const randomPicks = 100

/** Origin says how an address was learned: gossiped by a third party, announced by itself, or a seed. */
export type Origin = "gossip" | "self" | "seed"

/** AddrInfo is one known address; `table`/`bucket`/`slot` say where it sits. Mutated only by Addrman. */
export interface AddrInfo {
  /** endpointKey of host and port */
  readonly key: string
  /** normalized host string */
  readonly host: string
  /** the host's 16-byte wire form */
  readonly bytes: Uint8Array
  readonly port: number
  /** the address group bucketing keys on: IPv4 /16, IPv6 /32 (Core's GetGroup) */
  readonly group: string
  readonly net24: string
  readonly net16: string
  readonly net8: string
  /** the group of the peer that told us (or "seed") */
  source: string
  services: number
  /** seconds; the gossiped time, clamped to now + 10 min */
  lastSeen: number
  /** seconds; 0: never */
  lastAttempt: number
  /** seconds; 0: never */
  lastSuccess: number
  attempts: number
  origin: Origin
  /** we completed a handshake with it (markGood) */
  verified: boolean
  table: "new" | "tried"
  bucket: number
  slot: number
}

/** Rng is the book's random source: `next` is uniform in [0, 1). */
export interface Rng {
  readonly next: () => number
}

/** makeRng is a seeded mulberry32 generator (fast, not cryptographic: bucket keys use the secret). */
export const makeRng = (seed: number): Rng => {
  let a = seed >>> 0
  return {
    next: () => {
      a = (a + 0x6d2b79f5) >>> 0
      let t = a
      t = Math.imul(t ^ (t >>> 15), t | 1)
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296
    },
  }
}

const randomInt = (rng: Rng, n: number): number => Math.floor(rng.next() * n)

/** groupOf is the address group of a normalized host: IPv4 /16, IPv6 /32, a sim name its own group. */
export const groupOf = (host: string): string => (host.includes(":") ? subnetOf(host, 8) : subnetOf(host, 16))

/** Parsed is a host and port fit for the book. */
interface Parsed {
  readonly key: string
  readonly host: string
  readonly bytes: Uint8Array
  readonly port: number
}

/** parseEndpoint accepts an IP literal with a port in 1..65535 that is not the unspecified address. */
export const parseEndpoint = (host: string, port: number): Parsed | undefined => {
  if (!Number.isInteger(port) || port < 1 || port > 0xffff) return undefined
  const bytes = hostToBytes(host)
  if (bytes === undefined || isUnspecifiedBytes(bytes)) return undefined
  const normalized = bytesToHost(bytes)
  return { key: endpointKey({ host: normalized, port }), host: normalized, bytes, port }
}

/** parseWireHost is `parseEndpoint` for a 16-byte wire host. */
export const parseWireHost = (bytes: Uint8Array, port: number): Parsed | undefined => {
  if (bytes.length !== 16) return undefined
  return parseEndpoint(bytesToHost(bytes), port)
}

/**
 * isTerrible (Core's IsTerrible): an entry a newcomer may replace. Never one tried in the last minute;
 * otherwise one from the future, not seen for 30 days, never reached in 3 tries, or failing 10 times
 * over a week.
 */
export const isTerrible = (info: AddrInfo, now: number): boolean => {
  if (info.lastAttempt !== 0 && now - info.lastAttempt < recentAttemptSeconds) return false
  if (info.lastSeen > now + futureSlackSeconds) return true
  if (info.lastSeen === 0 || now - info.lastSeen > horizonSeconds) return true
  if (info.lastSuccess === 0 && info.attempts >= retries) return true
  if (now - info.lastSuccess > minFailSeconds && info.attempts >= maxFailures) return true
  return false
}

/** isGossipable: verified, or heard from a third party. A self-announcement waits for markGood. */
export const isGossipable = (info: AddrInfo): boolean => info.verified || info.origin === "gossip"

/** chanceOf (Core's GetChance): recently tried and often failed addresses are picked less. */
const chanceOf = (info: AddrInfo, now: number): number => {
  let chance = 1
  if (now - info.lastAttempt < chanceAttemptSeconds) chance *= 0.01
  return chance * 0.66 ** Math.min(info.attempts, 8)
}

/** KeySet is a set of strings with O(1) add, delete and uniform random pick. */
class KeySet {
  private readonly items: Array<string> = []
  private readonly index = new Map<string, number>()

  get size(): number {
    return this.items.length
  }
  add(key: string): void {
    if (this.index.has(key)) return
    this.index.set(key, this.items.length)
    this.items.push(key)
  }
  delete(key: string): void {
    const i = this.index.get(key)
    if (i === undefined) return
    const last = this.items.pop()!
    this.index.delete(key)
    if (i < this.items.length) {
      this.items[i] = last
      this.index.set(last, i)
    }
  }
  pick(rng: Rng): string {
    return this.items[randomInt(rng, this.items.length)]!
  }
  at(i: number): string {
    return this.items[i]!
  }
}

/** AddInput is one address offered to the book. */
export interface AddInput {
  readonly host: string
  readonly port: number
  readonly services: number
  /** seconds; clamped to now + 10 min */
  readonly time: number
  readonly origin: Origin
  /** the group of the peer that told us (`groupOf` its host), or "seed" */
  readonly source: string
}

/** AddResult: `added` new to the book, `known` already in it, `dropped` its slot is held, `invalid` unusable. */
export type AddResult = "added" | "known" | "dropped" | "invalid"

/** SubnetCaps are the outbound limits select keeps. */
export interface SubnetCaps {
  readonly per24: number
  readonly per16: number
  readonly per8: number
}

/** Addrman is the mutable book; see the module comment. */
export class Addrman {
  private readonly all = new Map<string, AddrInfo>()
  private readonly newSlots: Array<string | undefined>
  private readonly triedSlots: Array<string | undefined>
  private readonly newKeys = new KeySet()
  private readonly triedKeys = new KeySet()
  /** keys put or removed since the last `takeChanges` */
  private readonly changed = new Set<string>()

  constructor(
    readonly params: AddrmanParams,
    private readonly secret: Uint8Array,
    private readonly rng: Rng,
  ) {
    this.newSlots = new Array(params.newRows * params.newCols * params.bucketSize)
    this.triedSlots = new Array(params.triedBuckets * params.bucketSize)
  }

  get size(): { readonly new: number; readonly tried: number } {
    return { new: this.newKeys.size, tried: this.triedKeys.size }
  }

  get(key: string): AddrInfo | undefined {
    return this.all.get(key)
  }

  // -- placement ------------------------------------------------------------------------------------

  private hash32(...parts: ReadonlyArray<string>): number {
    const text = new TextEncoder().encode(parts.join("\u0000"))
    const buf = new Uint8Array(this.secret.length + text.length)
    buf.set(this.secret, 0)
    buf.set(text, this.secret.length)
    const h = sha256(buf)
    return (h[0]! | (h[1]! << 8) | (h[2]! << 16) | (h[3]! << 24)) >>> 0
  }

  /** newBucket: row by address group, column by source group (one of newColsPerSourceGroup). */
  newBucket(group: string, source: string, key: string): number {
    const p = this.params
    const row = this.hash32("new-row", group) % p.newRows
    const pick = this.hash32("new-pick", source, key) % p.newColsPerSourceGroup
    const col = this.hash32("new-col", source, String(pick)) % p.newCols
    return row * p.newCols + col
  }

  /** triedBucket: one of triedBucketsPerGroup buckets of the address group. */
  triedBucket(group: string, key: string): number {
    const p = this.params
    const pick = this.hash32("tried-pick", key) % p.triedBucketsPerGroup
    return this.hash32("tried", group, String(pick)) % p.triedBuckets
  }

  private slotOf(table: "new" | "tried", bucket: number, key: string): number {
    return this.hash32("slot", table, String(bucket), key) % this.params.bucketSize
  }

  private slots(table: "new" | "tried"): Array<string | undefined> {
    return table === "new" ? this.newSlots : this.triedSlots
  }

  private keys(table: "new" | "tried"): KeySet {
    return table === "new" ? this.newKeys : this.triedKeys
  }

  private occupant(table: "new" | "tried", bucket: number, slot: number): AddrInfo | undefined {
    const key = this.slots(table)[bucket * this.params.bucketSize + slot]
    return key === undefined ? undefined : this.all.get(key)
  }

  /**
   * findSlot probes `key`'s slots in `bucket`: the first free one, else the first whose occupant
   * `evictable` allows (returned, for the caller to displace), else undefined.
   */
  private findSlot(
    table: "new" | "tried",
    bucket: number,
    key: string,
    evictable: (held: AddrInfo) => boolean,
  ): { readonly slot: number; readonly held: AddrInfo | undefined } | undefined {
    const size = this.params.bucketSize
    const first = this.slotOf(table, bucket, key)
    const probes = Math.min(Math.max(1, this.params.slotProbes), size)
    for (let i = 0; i < probes; i++) {
      const slot = (first + i) % size
      const held = this.occupant(table, bucket, slot)
      if (held === undefined || held.key === key) return { slot, held: undefined }
    }
    for (let i = 0; i < probes; i++) {
      const slot = (first + i) % size
      const held = this.occupant(table, bucket, slot)!
      if (evictable(held)) return { slot, held }
    }
    return undefined
  }

  /** place puts `info` at its slot in `table`; the slot must be free. */
  private place(info: AddrInfo, table: "new" | "tried", bucket: number, slot: number): void {
    info.table = table
    info.bucket = bucket
    info.slot = slot
    this.slots(table)[bucket * this.params.bucketSize + slot] = info.key
    this.keys(table).add(info.key)
    this.all.set(info.key, info)
    this.changed.add(info.key)
  }

  /** unplace clears `info`'s slot (it stays in `all` until `remove`). */
  private unplace(info: AddrInfo): void {
    const slots = this.slots(info.table)
    const i = info.bucket * this.params.bucketSize + info.slot
    if (slots[i] === info.key) slots[i] = undefined
    this.keys(info.table).delete(info.key)
  }

  private remove(info: AddrInfo): void {
    this.unplace(info)
    this.all.delete(info.key)
    this.changed.add(info.key)
  }

  /** placeNew puts `info` in its new slot: over a terrible occupant, or over any when `force`. */
  private placeNew(info: AddrInfo, now: number, force: boolean): boolean {
    const bucket = this.newBucket(info.group, info.source, info.key)
    const found = this.findSlot("new", bucket, info.key, (held) => force || isTerrible(held, now))
    if (found === undefined) return false
    if (found.held !== undefined) this.remove(found.held)
    this.place(info, "new", bucket, found.slot)
    return true
  }

  // -- commands -------------------------------------------------------------------------------------

  /** add offers one address (gossip, self-announcement or seed) to the new table. */
  add(input: AddInput, now: number): AddResult {
    const parsed = parseEndpoint(input.host, input.port)
    if (parsed === undefined) return "invalid"
    const time = Math.max(0, Math.min(input.time, now + futureSlackSeconds))
    const existing = this.all.get(parsed.key)
    if (existing !== undefined) {
      // Core's update interval: refresh the time at most hourly (daily for addresses not seen today).
      const interval = now - time < 24 * 3600 ? 3600 : 24 * 3600
      let touched = false
      if (existing.lastSeen < time - interval) {
        existing.lastSeen = time
        touched = true
      }
      if ((existing.services | input.services) !== existing.services) {
        existing.services = (existing.services | input.services) >>> 0
        touched = true
      }
      // A seed heard again from a third party is ordinary gossip; a self-announcement stays one.
      if (existing.origin === "seed" && input.origin === "gossip") {
        existing.origin = "gossip"
        touched = true
      }
      if (touched) this.changed.add(existing.key)
      return "known"
    }
    const info = this.fresh(parsed, input.source, input.services, time, input.origin)
    return this.placeNew(info, now, false) ? "added" : "dropped"
  }

  private fresh(p: Parsed, source: string, services: number, lastSeen: number, origin: Origin): AddrInfo {
    return {
      key: p.key,
      host: p.host,
      bytes: p.bytes,
      port: p.port,
      group: groupOf(p.host),
      net24: subnetOf(p.host, 24),
      net16: subnetOf(p.host, 16),
      net8: subnetOf(p.host, 8),
      source,
      services: services >>> 0,
      lastSeen,
      lastAttempt: 0,
      lastSuccess: 0,
      attempts: 0,
      origin,
      verified: false,
      table: "new",
      bucket: -1,
      slot: -1,
    }
  }

  /** markAttempt records a dial of a known address. */
  markAttempt(host: string, port: number, now: number): void {
    const parsed = parseEndpoint(host, port)
    const info = parsed === undefined ? undefined : this.all.get(parsed.key)
    if (info === undefined) return
    info.attempts = Math.min(info.attempts + 1, 0xffff)
    info.lastAttempt = now
    this.changed.add(info.key)
  }

  /**
   * markGood (Core's Good/MakeTried): a handshake with the address completed, so it is verified and
   * moves to the tried table. An entry holding its tried slot goes back to the new table (over whatever
   * holds its new slot, as Core does: it was good once).
   */
  markGood(host: string, port: number, services: number, now: number): void {
    const parsed = parseEndpoint(host, port)
    if (parsed === undefined) return
    let info = this.all.get(parsed.key)
    if (info === undefined) info = this.fresh(parsed, groupOf(parsed.host), services, now, "self")
    else if (info.bucket >= 0) this.unplace(info)
    info.verified = true
    info.services = services >>> 0
    info.lastSeen = now
    info.lastSuccess = now
    info.lastAttempt = now
    info.attempts = 0
    const bucket = this.triedBucket(info.group, info.key)
    const found = this.findSlot("tried", bucket, info.key, () => true)!
    if (found.held !== undefined) {
      this.unplace(found.held)
      this.placeNew(found.held, now, true)
    }
    this.place(info, "tried", bucket, found.slot)
  }

  /**
   * select picks an address for an outbound connection (Core's Select, with the subnet caps): tried or
   * new at even odds, a random entry, accepted with its chance (rising 1.2× per refusal); entries in
   * `exclude` or over a cap counted over `current` are skipped. After `randomPicks` draws, a scan from a
   * random start returns the first fitting entry not tried in the last minute (else any fitting one).
   */
  select(
    current: ReadonlyArray<{ readonly host: string; readonly port: number }>,
    exclude: ReadonlySet<string>,
    caps: SubnetCaps,
    now: number,
  ): AddrInfo | undefined {
    if (this.all.size === 0) return undefined
    const count = (bits: 8 | 16 | 24) => {
      const m = new Map<string, number>()
      for (const ep of current) {
        const net = subnetOf(ep.host, bits)
        m.set(net, (m.get(net) ?? 0) + 1)
      }
      return m
    }
    const n24 = count(24)
    const n16 = count(16)
    const n8 = count(8)
    const fits = (info: AddrInfo): boolean =>
      !exclude.has(info.key) &&
      (n24.get(info.net24) ?? 0) < caps.per24 &&
      (n16.get(info.net16) ?? 0) < caps.per16 &&
      (n8.get(info.net8) ?? 0) < caps.per8

    let factor = 1
    for (let i = 0; i < randomPicks; i++) {
      const useTried = this.triedKeys.size > 0 && (this.newKeys.size === 0 || this.rng.next() < 0.5)
      const info = this.all.get((useTried ? this.triedKeys : this.newKeys).pick(this.rng))!
      if (!fits(info)) continue
      if (this.rng.next() < factor * chanceOf(info, now)) return info
      factor *= 1.2
    }
    let fallback: AddrInfo | undefined
    for (const keys of [this.triedKeys, this.newKeys]) {
      const start = randomInt(this.rng, keys.size)
      for (let i = 0; i < keys.size; i++) {
        const info = this.all.get(keys.at((start + i) % keys.size))!
        if (!fits(info)) continue
        if (now - info.lastAttempt >= recentAttemptSeconds) return info
        fallback ??= info
      }
    }
    return fallback
  }

  /**
   * selectUnverified picks a feeler target (Core's feeler connections, new table only): a random
   * unverified entry not in `exclude` and not attempted in the last minute, scanning from a random
   * start; undefined when there is none.
   */
  selectUnverified(exclude: ReadonlySet<string>, now: number): AddrInfo | undefined {
    const keys = this.newKeys
    const start = randomInt(this.rng, keys.size)
    for (let i = 0; i < keys.size; i++) {
      const info = this.all.get(keys.at((start + i) % keys.size))!
      if (info.verified || exclude.has(info.key)) continue
      if (info.lastAttempt !== 0 && now - info.lastAttempt < recentAttemptSeconds) continue
      return info
    }
    return undefined
  }

  /** gossipable lists the entries getaddr may answer with: gossipable and not terrible. */
  gossipable(now: number): Array<AddrInfo> {
    const out: Array<AddrInfo> = []
    for (const info of this.all.values()) if (isGossipable(info) && !isTerrible(info, now)) out.push(info)
    return out
  }

  /** sample picks `n` distinct random entries of `from` (a partial Fisher–Yates shuffle of a copy). */
  sample<A>(from: ReadonlyArray<A>, n: number): Array<A> {
    const pool = [...from]
    const k = Math.min(n, pool.length)
    for (let i = 0; i < k; i++) {
      const j = i + randomInt(this.rng, pool.length - i)
      const t = pool[i]!
      pool[i] = pool[j]!
      pool[j] = t
    }
    return pool.slice(0, k)
  }

  /** takeChanges lists the keys changed since the last call: the entry to store, or undefined to delete. */
  takeChanges(): Array<readonly [string, AddrInfo | undefined]> {
    const out = [...this.changed].map((key) => [key, this.all.get(key)] as const)
    this.changed.clear()
    return out
  }

  /**
   * restore puts stored entries back in their slots (tried first; a tried entry whose slot is held goes
   * to the new table); answers the keys that found no slot, for the caller to delete.
   */
  restore(rows: ReadonlyArray<AddrInfo>, now: number): Array<string> {
    const lost: Array<string> = []
    const asStored = new Set<string>()
    const ordered = [...rows.filter((r) => r.table === "tried"), ...rows.filter((r) => r.table === "new")]
    for (const info of ordered) {
      if (this.all.has(info.key)) continue
      const stored = info.table
      if (info.table === "tried") {
        const bucket = this.triedBucket(info.group, info.key)
        const found = this.findSlot("tried", bucket, info.key, () => false)
        if (found !== undefined) this.place(info, "tried", bucket, found.slot)
      }
      if (info.bucket < 0 && !this.placeNew(info, now, false)) lost.push(info.key)
      if (info.table === stored) asStored.add(info.key)
    }
    // What sits as stored needs no write; moved entries and displaced occupants do.
    for (const key of asStored) if (this.all.get(key)?.table !== undefined) this.changed.delete(key)
    return lost
  }
}

// ---------------------------------------------------------------------------------------------------
// Rows: one stored entry, `version ‖ host16 ‖ port u32 ‖ services u32 ‖ lastSeen u32 ‖ lastAttempt u32 ‖
// lastSuccess u32 ‖ attempts u32 ‖ flags u8 ‖ source varbytes`.

const rowVersion = 1
const maxSourceBytes = 128
const maxRowBytes = 1 + 16 + 6 * 4 + 1 + 3 + maxSourceBytes
const origins: ReadonlyArray<Origin> = ["gossip", "self", "seed"]

/** encodeRow serializes an entry for the `addr` table. */
export const encodeRow = (info: AddrInfo): Uint8Array => {
  const source = new TextEncoder().encode(info.source).subarray(0, maxSourceBytes)
  const w = new Writer(1 + 16 + 6 * 4 + 1 + (source.length < 0xfd ? 1 : 3) + source.length)
  w.u8(rowVersion)
  w.raw(info.bytes)
  for (const v of [
    info.port,
    info.services,
    info.lastSeen,
    info.lastAttempt,
    info.lastSuccess,
    info.attempts,
  ]) {
    w.u32(Math.max(0, Math.min(v, 0xffffffff)) >>> 0)
  }
  w.u8(origins.indexOf(info.origin) | (info.verified ? 4 : 0) | (info.table === "tried" ? 8 : 0))
  w.varBytes(source)
  return w.finish()
}

const readRow = (r: Reader) => {
  const version = r.u8("addr.version")
  if (version !== rowVersion) r.fail("invalid-value", "addr.version")
  const bytes = r.bytesN(16, "addr.host")
  const [port, services, lastSeen, lastAttempt, lastSuccess, attempts] = [0, 1, 2, 3, 4, 5].map(() =>
    r.u32("addr.field"),
  ) as [number, number, number, number, number, number]
  const flags = r.u8("addr.flags")
  const source = new TextDecoder("utf-8", { fatal: true }).decode(r.varBytes("addr.source", maxSourceBytes))
  return { bytes, port, services, lastSeen, lastAttempt, lastSuccess, attempts, flags, source }
}

const decodeRowBytes = decodeWith("addr row", maxRowBytes, readRow)

/** decodeRow reads a stored entry; undefined for anything corrupt or not stored under its own key. */
export const decodeRow = (key: string, value: Uint8Array): AddrInfo | undefined => {
  let decoded: ReturnType<typeof decodeRowBytes>
  try {
    decoded = decodeRowBytes(value)
  } catch {
    return undefined
  }
  if (Either.isLeft(decoded)) return undefined
  const row = decoded.right
  const origin = origins[row.flags & 3]
  if (origin === undefined || row.flags > 15) return undefined
  const parsed = parseWireHost(row.bytes, row.port)
  if (parsed === undefined || parsed.key !== key) return undefined
  return {
    key: parsed.key,
    host: parsed.host,
    bytes: parsed.bytes,
    port: parsed.port,
    group: groupOf(parsed.host),
    net24: subnetOf(parsed.host, 24),
    net16: subnetOf(parsed.host, 16),
    net8: subnetOf(parsed.host, 8),
    source: row.source,
    services: row.services,
    lastSeen: row.lastSeen,
    lastAttempt: row.lastAttempt,
    lastSuccess: row.lastSuccess,
    attempts: row.attempts,
    origin,
    verified: (row.flags & 4) !== 0,
    table: (row.flags & 8) !== 0 ? "tried" : "new",
    bucket: -1,
    slot: -1,
  }
}
