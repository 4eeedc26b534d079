import { Either } from "effect"
import { decodeWith, type Reader, Writer } from "../schema/codec.js"
import { fromHex, toHex } from "../schema/hex.js"
import { endpointKey } from "../schema/netaddr.js"
import type { UdpAddrEntry } from "../schema/wire.js"
import { futureSlackSeconds, parseWireHost, type Rng } from "./addrman.js"

/**
 * udpAddrs is the address book's table of addresses of kind "udp" (issue 8): nodes behind NATs,
 * each named by its x-only node key and reached through the rendezvous server it registered at
 * (`udp:<key>@<server>`). It is pure (no clock, no I/O): the AddrBook actor owns one, passes `now`
 * in seconds, and writes `takeChanges()` to its table.
 *
 * One entry per node key (the newest announcement's server wins). Bounded in total and per server, so
 * no one can fill it by announcing keys at one made-up server. An entry is gossiped in getaddr answers
 * only once this node reached it (a key anyone can make up is not passed on unproven); fresh small
 * announcements are relayed once, which is how a new registration spreads.
 */

/** UdpAddrParams bound the table and pace redials. */
export interface UdpAddrParams {
  readonly maxEntries: number
  /** entries naming one rendezvous server, at most */
  readonly maxPerServer: number
  /** an entry not announced again for this long is dropped (registrations are short-lived) */
  readonly horizonSeconds: number
  /** an entry never reached in this many dials, or failing this many times since its last success, is dropped */
  readonly maxFailures: number
  /** a failed dial is retried after retrySeconds × 2^(attempts-1), at most a day */
  readonly retrySeconds: number
}

export const defaultUdpAddrParams: UdpAddrParams = {
  maxEntries: 4096,
  maxPerServer: 256,
  horizonSeconds: 3 * 86_400,
  maxFailures: 5,
  retrySeconds: 60,
}

/** UdpAddrInfo is one NAT'd node: its key, its server, and the dial history. */
export interface UdpAddrInfo {
  readonly nodeKey: Uint8Array
  readonly keyHex: string
  /** the rendezvous server: host text, its 16-byte wire form, port */
  host: string
  bytes: Uint8Array
  port: number
  services: number
  lastSeen: number
  lastAttempt: number
  lastSuccess: number
  attempts: number
}

/** udpRowKey is an entry's key in the `addr` table (never an endpoint key: those are `host:port`). */
export const udpRowKey = (keyHex: string): string => `udp:${keyHex}`

/** isUdpRowKey tells the udp rows apart from the endpoint rows of the same table. */
export const isUdpRowKey = (key: string): boolean => key.startsWith("udp:")

const serverKeyOf = (info: { readonly host: string; readonly port: number }) => endpointKey(info)

export type UdpAddResult = "added" | "updated" | "unchanged" | "invalid" | "full"

export class UdpAddrTable {
  private readonly byKey = new Map<string, UdpAddrInfo>()
  private readonly perServer = new Map<string, number>()
  private readonly changes = new Map<string, UdpAddrInfo | undefined>()

  constructor(
    private readonly params: UdpAddrParams,
    private readonly rng: Rng,
  ) {}

  get size(): number {
    return this.byKey.size
  }

  get(keyHex: string): UdpAddrInfo | undefined {
    return this.byKey.get(keyHex)
  }

  /** add takes one announcement; a newer one for a known key moves it to the announced server. */
  add(entry: UdpAddrEntry, now: number): UdpAddResult {
    const server = parseWireHost(entry.host, entry.port)
    if (server === undefined || entry.port === 0 || entry.nodeKey.length !== 32) return "invalid"
    const time = Math.min(entry.time, now + futureSlackSeconds)
    if (now - time > this.params.horizonSeconds) return "invalid"
    const keyHex = toHex(entry.nodeKey)
    const known = this.byKey.get(keyHex)
    if (known !== undefined) {
      if (time <= known.lastSeen) return "unchanged"
      const moved = serverKeyOf(known) !== server.key
      if (moved && !this.roomAt(server.key, now, keyHex)) return "full"
      if (moved) this.count(serverKeyOf(known), -1)
      known.host = server.host
      known.bytes = server.bytes
      known.port = server.port
      known.services = entry.services >>> 0
      known.lastSeen = time
      if (moved) this.count(server.key, 1)
      this.changes.set(keyHex, known)
      return "updated"
    }
    if (!this.roomAt(server.key, now, undefined)) return "full"
    if (this.byKey.size >= this.params.maxEntries && !this.evict(undefined, now)) return "full"
    const info: UdpAddrInfo = {
      nodeKey: new Uint8Array(entry.nodeKey),
      keyHex,
      host: server.host,
      bytes: server.bytes,
      port: server.port,
      services: entry.services >>> 0,
      lastSeen: time,
      lastAttempt: 0,
      lastSuccess: 0,
      attempts: 0,
    }
    this.put(info)
    return "added"
  }

  markAttempt(keyHex: string, now: number): void {
    const info = this.byKey.get(keyHex)
    if (info === undefined) return
    info.lastAttempt = now
    info.attempts++
    if (this.isTerrible(info, now)) this.remove(keyHex)
    else this.changes.set(keyHex, info)
  }

  markGood(keyHex: string, now: number): void {
    const info = this.byKey.get(keyHex)
    if (info === undefined) return
    info.lastSuccess = now
    info.lastSeen = Math.max(info.lastSeen, now)
    info.attempts = 0
    this.changes.set(keyHex, info)
  }

  /**
   * select picks a node to dial: not in `exclude` (hex keys: ourselves, connected, being dialled), not
   * waiting out its retry delay, and only keys above `ownHex`: of two nodes that know each other the
   * lower key dials, so a pair never opens two sessions (an inbound session does not name its node).
   * An entry not announced for the horizon is skipped: its registration is long gone.
   */
  select(exclude: ReadonlySet<string>, ownHex: string, now: number): UdpAddrInfo | undefined {
    const candidates: Array<UdpAddrInfo> = []
    for (const info of this.byKey.values()) {
      if (info.keyHex <= ownHex || exclude.has(info.keyHex) || this.isTerrible(info, now)) continue
      if (info.attempts > 0 && now < info.lastAttempt + this.retryDelay(info)) continue
      candidates.push(info)
    }
    if (candidates.length === 0) return undefined
    return candidates[Math.floor(this.rng.next() * candidates.length)]
  }

  /** gossipable: entries this node reached, not stale: what getaddr answers may carry. */
  gossipable(now: number): Array<UdpAddrInfo> {
    return [...this.byKey.values()].filter((i) => i.lastSuccess > 0 && !this.isTerrible(i, now))
  }

  /** restore loads stored entries (at start), dropping stale ones; returns the row keys to delete. */
  restore(infos: ReadonlyArray<UdpAddrInfo>, now: number): Array<string> {
    const lost: Array<string> = []
    for (const info of infos) {
      const server = serverKeyOf(info)
      if (
        this.byKey.has(info.keyHex) ||
        this.isTerrible(info, now) ||
        this.byKey.size >= this.params.maxEntries ||
        (this.perServer.get(server) ?? 0) >= this.params.maxPerServer
      ) {
        lost.push(udpRowKey(info.keyHex))
        continue
      }
      this.byKey.set(info.keyHex, info)
      this.count(server, 1)
    }
    return lost
  }

  /** takeChanges returns the rows changed since the last call (undefined: delete it). */
  takeChanges(): Array<readonly [string, UdpAddrInfo | undefined]> {
    const out = [...this.changes].map(([k, v]) => [udpRowKey(k), v] as const)
    this.changes.clear()
    return out
  }

  private retryDelay(info: UdpAddrInfo): number {
    return Math.min(this.params.retrySeconds * 2 ** Math.min(info.attempts - 1, 20), 86_400)
  }

  private isTerrible(info: UdpAddrInfo, now: number): boolean {
    if (now - info.lastSeen > this.params.horizonSeconds) return true
    return info.attempts >= this.params.maxFailures
  }

  /** roomAt: the server has room for one more entry (evicting its worst one if need be). */
  private roomAt(server: string, now: number, keeping: string | undefined): boolean {
    if ((this.perServer.get(server) ?? 0) < this.params.maxPerServer) return true
    return this.evict(server, now, keeping)
  }

  /**
   * evict drops the worst entry (of `server`, or of the whole table): a terrible one, else the one
   * seen longest ago among those never reached. False when every candidate was reached (kept).
   */
  private evict(server: string | undefined, now: number, keeping?: string): boolean {
    let worst: UdpAddrInfo | undefined
    for (const info of this.byKey.values()) {
      if (info.keyHex === keeping || (server !== undefined && serverKeyOf(info) !== server)) continue
      if (this.isTerrible(info, now)) {
        worst = info
        break
      }
      if (info.lastSuccess > 0) continue
      if (worst === undefined || info.lastSeen < worst.lastSeen) worst = info
    }
    if (worst === undefined) return false
    this.remove(worst.keyHex)
    return true
  }

  private put(info: UdpAddrInfo): void {
    this.byKey.set(info.keyHex, info)
    this.count(serverKeyOf(info), 1)
    this.changes.set(info.keyHex, info)
  }

  private remove(keyHex: string): void {
    const info = this.byKey.get(keyHex)
    if (info === undefined) return
    this.byKey.delete(keyHex)
    this.count(serverKeyOf(info), -1)
    this.changes.set(keyHex, undefined)
  }

  private count(server: string, delta: number): void {
    const n = (this.perServer.get(server) ?? 0) + delta
    if (n > 0) this.perServer.set(server, n)
    else this.perServer.delete(server)
  }
}

// ---------------------------------------------------------------------------------------------------
// Rows of the `addr` table under `udp:<key>`: version, server host (16) and port, services, times, attempts.

const rowVersion = 1
const rowBytes = 1 + 16 + 2 + 5 * 4

/** encodeUdpRow serializes an entry (its key is the row key). */
export const encodeUdpRow = (info: UdpAddrInfo): Uint8Array => {
  const w = new Writer(rowBytes)
  w.u8(rowVersion)
  w.raw(info.bytes)
  w.u8(info.port >>> 8)
  w.u8(info.port & 0xff)
  for (const v of [info.services, info.lastSeen, info.lastAttempt, info.lastSuccess, info.attempts]) {
    w.u32(Math.max(0, Math.min(v, 0xffffffff)) >>> 0)
  }
  return w.finish()
}

const readRow = (r: Reader) => {
  if (r.u8("udpaddr.version") !== rowVersion) r.fail("invalid-value", "udpaddr.version")
  const host = r.bytesN(16, "udpaddr.host")
  const port = (r.u8("udpaddr.port") << 8) | r.u8("udpaddr.port")
  const [services, lastSeen, lastAttempt, lastSuccess, attempts] = [0, 1, 2, 3, 4].map(() =>
    r.u32("udpaddr.field"),
  ) as [number, number, number, number, number]
  return { host, port, services, lastSeen, lastAttempt, lastSuccess, attempts }
}

const decodeRowBytes = decodeWith("udpaddr row", rowBytes, readRow)

/** decodeUdpRow reads a stored entry; undefined for anything corrupt. */
export const decodeUdpRow = (key: string, value: Uint8Array): UdpAddrInfo | undefined => {
  const nodeKey = isUdpRowKey(key) ? fromHex(key.slice(4)) : undefined
  // only the key text udpRowKey writes (lower-case hex): another spelling would leave a second row behind
  if (nodeKey === undefined || nodeKey.length !== 32 || udpRowKey(toHex(nodeKey)) !== key) return undefined
  const decoded = decodeRowBytes(value)
  if (Either.isLeft(decoded)) return undefined
  const row = decoded.right
  const server = parseWireHost(row.host, row.port)
  if (server === undefined || row.port === 0) return undefined
  return {
    nodeKey,
    keyHex: toHex(nodeKey),
    host: server.host,
    bytes: server.bytes,
    port: server.port,
    services: row.services,
    lastSeen: row.lastSeen,
    lastAttempt: row.lastAttempt,
    lastSuccess: row.lastSuccess,
    attempts: row.attempts,
  }
}
