import { Clock, Context, Deferred, Effect, Layer, Metric, Option, Schema, type Scope } from "effect"
import ipaddr from "ipaddr.js"
import { ChainStore, type KeyedTable, type StorageError } from "../layers/ChainStore.js"
import type { Endpoint } from "../layers/Transport.js"
import { normalizeHost, subnetOf } from "../schema/netaddr.js"
import type { Command } from "../schema/wire.js"
import * as Actor from "./Actor.js"
import {
  type DatagramKind,
  describe,
  FLOOD_SCORE,
  type FloodBucket,
  Misbehavior,
  type SpamPolicy,
  scoreOf,
  TokenBucket,
} from "./spamPolicy.js"

/**
 * BanEntry is one banned address or subnet, as listbanned shows it: `subnet` in CIDR form
 * (`127.0.0.9/32`), times in seconds since the epoch.
 */
export interface BanEntry {
  readonly subnet: string
  readonly createdAt: number
  readonly until: number
  readonly reason: string
}

/** BanError is a refused setban (bitcoind's codes: -23 already banned, -30 invalid subnet or not banned). */
export class BanError extends Schema.TaggedError<BanError>()("BanError", {
  code: Schema.Literal(-23, -30),
  message: Schema.String,
}) {}

/** Admission is the SpamFilter's answer to a new connection: its guard, or why it is refused. */
export type Admission =
  | { readonly _tag: "Admitted"; readonly guard: PeerGuard }
  | { readonly _tag: "Refused"; readonly reason: string }

/** Verdict is a peer's standing after a misbehaviour: its score, and whether it must go (it was banned). */
export interface Verdict {
  readonly score: number
  readonly banned: boolean
}

/**
 * PeerGuard is the SpamFilter's agent on one connection: the peer's buckets and misbehaviour score.
 * Its buckets are charged by the connection's Peer fiber only (synchronously, before a message is
 * handled); `misbehave` may be called by any actor that caught the peer out (Sync, Relay).
 */
export interface PeerGuard {
  /**
   * admit charges one message to the message bucket and its entries to its type's bucket (inv, addr,
   * tx, getdata); false: the message must be dropped unread (it has been scored).
   */
  readonly admit: (command: Command, entries: number) => Effect.Effect<boolean>
  /** throttle charges received bytes; the answer is how many ms the reader must pause (0: none) */
  readonly throttle: (bytes: number) => Effect.Effect<number>
  /** unrequested charges one block nobody asked for; false: drop it (scored) */
  readonly unrequested: (command: Command) => Effect.Effect<boolean>
  /** admitFilters charges a compact filter request's blocks to the filters bucket; false: drop it (scored) */
  readonly admitFilters: (blocks: number) => Effect.Effect<boolean>
  /** misbehave adds the score of `m`; at the threshold the peer's address is banned (`banned: true`) */
  readonly misbehave: (m: Misbehavior) => Effect.Effect<Verdict>
  /** standing is the peer's misbehaviour score so far, and whether it reached the ban threshold */
  readonly standing: Effect.Effect<Verdict>
  /** release frees the connection's inbound slot; call once when the connection closes */
  readonly release: Effect.Effect<void>
}

/** SpamFilterService is the SpamFilter actor as the PeerManager, the Peers and the RPC see it. */
export interface SpamFilterService {
  readonly policy: SpamPolicy
  /**
   * admit decides on a new connection. Inbound: refused when the IP is banned, connects too often, or
   * its IP, /24 or /16 holds its share of inbound slots. Outbound: refused when banned, unless the
   * peer is configured (`static`: the operator asked for it, as Core's manual connections).
   */
  readonly admit: (
    remote: Endpoint,
    direction: "inbound" | "outbound",
    isStatic: boolean,
  ) => Effect.Effect<Admission>
  readonly isBanned: (host: string) => Effect.Effect<boolean>
  /**
   * admitDatagram decides on one datagram request from `host` (a rendezvous echo, register or
   * introduce, a UDP session OPEN; never the data of an established session): false when the host is
   * banned, or when its IP's `datagrams` bucket is empty; the caller drops the datagram unanswered.
   * Counted in `p2p_datagrams_dropped_total{reason, kind}`, never scored: a datagram's source address
   * can be spoofed, and a flood in a victim's name must not ban the victim.
   *
   * It is the filter's synchronous fast path, callable from any fiber (the Rendezvous actor, the UDP
   * session demux): no actor round trip per datagram. It only reads the actor's bans (between two of
   * the actor's commands, as JavaScript runs one fiber at a time) and charges per-IP buckets that the
   * actor never touches (at most MAX_DATAGRAM_SOURCES IPs, the least recently seen forgotten).
   */
  readonly admitDatagram: (host: string, kind: DatagramKind) => Effect.Effect<boolean>
  /**
   * misbehaveDatagram adds the score of `m` to `host`'s per-IP score (the one inbound connection
   * floods add to); at `banThreshold` the IP is banned for `banSeconds`, as a peer would be. Only for
   * a source that proved it receives at its address (a cookie round trip): a spoofed one must not be
   * able to get a victim banned.
   */
  readonly misbehaveDatagram: (host: string, m: Misbehavior) => Effect.Effect<Verdict>
  /**
   * ban adds (or extends) a ban of `subnet` (an IP or CIDR) for `seconds` (default banSeconds), or
   * until `until` (seconds since the epoch); `exclusive` fails with -23 when it is already banned
   */
  readonly ban: (
    subnet: string,
    options: {
      readonly seconds?: number
      readonly until?: number
      readonly reason: string
      readonly exclusive?: boolean
    },
  ) => Effect.Effect<BanEntry, BanError | StorageError>
  /** unban lifts a ban of exactly `subnet`; -30 when there is none */
  readonly unban: (subnet: string) => Effect.Effect<void, BanError | StorageError>
  /** banned lists the bans in force, oldest first (expired ones are swept) */
  readonly banned: Effect.Effect<ReadonlyArray<BanEntry>, StorageError>
  readonly clearBanned: Effect.Effect<void, StorageError>
  /** matches is true when `host` lies in `subnet` (for disconnecting the peers of a new ban) */
  readonly matches: (subnet: string, host: string) => boolean
}

export class SpamFilter extends Context.Tag("fibercoin/SpamFilter")<SpamFilter, SpamFilterService>() {}

/** p2pBans counts bans issued (by the filter for misbehaviour or connection floods, or by setban). */
export const p2pBans = Metric.counter("p2p_bans_total", { description: "addresses and subnets banned" })
/** p2pBanned is the number of bans in force. */
export const p2pBanned = Metric.gauge("p2p_banned", { description: "bans in force" })
/** p2pDropped counts peer messages dropped unread for exceeding a bucket, by bucket. */
export const p2pDropped = Metric.counter("p2p_messages_dropped_total", {
  description: "peer messages dropped for exceeding a spam-filter bucket",
})
/** p2pDatagramsDropped counts datagram requests the filter dropped, by reason (banned, rate) and kind. */
export const p2pDatagramsDropped = Metric.counter("p2p_datagrams_dropped_total", {
  description: "datagram requests (rendezvous, UDP session opens) dropped by the spam filter",
})
/** datagramsDropped is p2pDatagramsDropped for one reason and kind (the filter counts in it; tests and dashboards read it). */
export const datagramsDropped = (reason: "banned" | "rate", kind: DatagramKind) =>
  Metric.tagged(Metric.tagged(p2pDatagramsDropped, "reason", reason), "kind", kind)
/** p2pRefused counts connections the filter refused, by reason (banned, rate, cap). */
export const p2pRefused = Metric.counter("p2p_connections_refused_total", {
  description: "connections refused by the spam filter",
})

// ---------------------------------------------------------------------------------------------------
// Subnets

/** Subnet is a parsed ban target: an IP range, or (simulated hosts that are not IPs) one exact name. */
type Subnet =
  | {
      readonly _tag: "Range"
      readonly key: string
      readonly addr: ipaddr.IPv4 | ipaddr.IPv6
      readonly bits: number
    }
  | { readonly _tag: "Name"; readonly key: string }

/**
 * parseSubnet reads an operator's ban target into a canonical CIDR key: `1.2.3.4`, `1.2.3.0/24`,
 * `10.0.0.0/255.255.0.0`, `::1`, `2001:db8::/32`, and IPv4-mapped forms (`::ffff:1.2.3.4`,
 * `::ffff:10.1.0.0/112`) as the IPv4 range they name. IPv4 must be four decimal parts: inet_aton's
 * shorthands (`127.1`, octal `010.0.0.1`, `3232235777`) are refused rather than read as a surprising
 * address. A plain name with a letter in it (a simulated host) is banned as that exact name.
 * Anything else (extra `/`, prefix past the family's width, a non-contiguous mask) is undefined.
 */
export const parseSubnet = (text: string): Subnet | undefined => {
  const s = text.trim()
  const parts = s.split("/")
  if (parts.length > 2) return undefined
  const [addrText = "", bitsText] = parts
  const isV4 = ipaddr.IPv4.isValidFourPartDecimal(addrText)
  if (!isV4 && !ipaddr.IPv6.isValid(addrText)) {
    const isName = /^[a-zA-Z0-9._-]+$/.test(s) && /[a-zA-Z]/.test(s) && !ipaddr.isValid(s)
    return isName ? { _tag: "Name", key: s } : undefined
  }
  try {
    let addr: ipaddr.IPv4 | ipaddr.IPv6 = isV4 ? ipaddr.IPv4.parse(addrText) : ipaddr.IPv6.parse(addrText)
    if (addr.kind() === "ipv6" && (addr as ipaddr.IPv6).zoneId !== undefined) return undefined
    let bits = addr.kind() === "ipv4" ? 32 : 128
    if (bitsText !== undefined) {
      if (/^\d{1,3}$/.test(bitsText)) {
        if (Number(bitsText) > bits) return undefined
        bits = Number(bitsText)
      } else if (addr.kind() === "ipv4" && ipaddr.IPv4.isValidFourPartDecimal(bitsText)) {
        const fromMask = ipaddr.IPv4.parse(bitsText).prefixLengthFromSubnetMask()
        if (fromMask === null) return undefined
        bits = fromMask
      } else {
        return undefined
      }
    }
    if (addr.kind() === "ipv6" && (addr as ipaddr.IPv6).isIPv4MappedAddress() && bits >= 96) {
      addr = (addr as ipaddr.IPv6).toIPv4Address()
      bits -= 96
    }
    const network =
      addr.kind() === "ipv4"
        ? ipaddr.IPv4.networkAddressFromCIDR(`${addr.toString()}/${bits}`)
        : ipaddr.IPv6.networkAddressFromCIDR(`${addr.toString()}/${bits}`)
    const shown = network.kind() === "ipv6" ? (network as ipaddr.IPv6).toRFC5952String() : network.toString()
    return { _tag: "Range", key: `${shown}/${bits}`, addr: network, bits }
  } catch {
    return undefined
  }
}

/**
 * inSubnetOf parses `host` once (IPv4-mapped IPv6 as IPv4) and answers, for any number of subnets,
 * whether it lies in them: a ban lookup scans every range ban with one parse.
 */
const inSubnetOf = (host: string): ((subnet: Subnet) => boolean) => {
  const h = normalizeHost(host)
  let addr = ipaddr.isValid(h) ? ipaddr.parse(h) : undefined
  if (addr?.kind() === "ipv6" && (addr as ipaddr.IPv6).isIPv4MappedAddress())
    addr = (addr as ipaddr.IPv6).toIPv4Address()
  return (subnet) =>
    subnet._tag === "Name"
      ? subnet.key === h
      : addr !== undefined && addr.kind() === subnet.addr.kind() && addr.match(subnet.addr, subnet.bits)
}

/** exactKey is the ban key of a single host (its /32 or /128), for the fast lookup. */
const exactKey = (host: string): string => parseSubnet(normalizeHost(host))?.key ?? host

// ---------------------------------------------------------------------------------------------------
// Persistence: ChainStore's `bans` table, one row per ban keyed by its CIDR.

const BanRow = Schema.parseJson(
  Schema.Struct({ createdAt: Schema.Number, until: Schema.Number, reason: Schema.String }),
)
const encodeRow = Schema.encodeSync(BanRow)
const decodeRow = Schema.decodeUnknownOption(BanRow)
const textEncoder = new TextEncoder()
const textDecoder = new TextDecoder()

/** BANS_TABLE is the ChainStore table that keeps bans across restarts. */
export const BANS_TABLE = "bans"

// ---------------------------------------------------------------------------------------------------
// The actor

/** IpRecord is what the filter remembers of one remote IP: its connection bucket and score. */
interface IpRecord {
  readonly bucket: TokenBucket
  score: number
  lastAt: number
}

/**
 * MAX_BAN_UNTIL is the latest end a ban can have (9999-12-31T23:59:59Z, seconds): later ones are cut
 * to it, so a huge `setban … bantime` stays a valid date instead of crashing the actor.
 */
const MAX_BAN_UNTIL = 253_402_300_799

/** MAX_IP_RECORDS bounds the per-IP memory (oldest forgotten first). */
const MAX_IP_RECORDS = 10_000

/** MAX_DATAGRAM_SOURCES bounds the IPs whose datagram buckets are remembered (least recently seen forgotten). */
export const MAX_DATAGRAM_SOURCES = 10_000

/** DatagramSource is one IP's datagram bucket, with its ban lookups parsed once. */
interface DatagramSource {
  readonly bucket: TokenBucket
  readonly banKey: string
  readonly holds: (subnet: Subnet) => boolean
}

interface Ban {
  readonly subnet: Subnet
  readonly entry: BanEntry
}

interface State {
  /** bans of single hosts, by exactKey */
  readonly exact: Map<string, Ban>
  /** bans of wider ranges */
  readonly ranges: Map<string, Ban>
  readonly ips: Map<string, IpRecord>
  /** open inbound connections by IP, /24 and /16 */
  readonly inbound: Map<string, number>
}

type Cmd =
  | {
      readonly _tag: "Admit"
      readonly remote: Endpoint
      readonly direction: "inbound" | "outbound"
      readonly isStatic: boolean
      readonly reply: Deferred.Deferred<Admission>
    }
  | { readonly _tag: "Release"; readonly keys: ReadonlyArray<string> }
  | { readonly _tag: "IsBanned"; readonly host: string; readonly reply: Deferred.Deferred<boolean> }
  | {
      readonly _tag: "Score"
      readonly host: string
      readonly misbehavior: Misbehavior
      readonly reply: Deferred.Deferred<Verdict>
    }
  | {
      readonly _tag: "Ban"
      readonly subnet: string
      readonly seconds: number | undefined
      readonly until: number | undefined
      readonly reason: string
      readonly exclusive: boolean
      readonly reply: Deferred.Deferred<BanEntry, BanError | StorageError>
    }
  | {
      readonly _tag: "Unban"
      readonly subnet: string
      readonly reply: Deferred.Deferred<void, BanError | StorageError>
    }
  | { readonly _tag: "List"; readonly reply: Deferred.Deferred<ReadonlyArray<BanEntry>, StorageError> }
  | { readonly _tag: "Clear"; readonly reply: Deferred.Deferred<void, StorageError> }

const nowSeconds = Effect.map(Clock.currentTimeMillis, (ms) => Math.floor(ms / 1000))

/** inboundKeys are the counters one inbound connection occupies: its IP, /24 and /16. */
const inboundKeys = (host: string): ReadonlyArray<string> => {
  const h = normalizeHost(host)
  return [`ip ${h}`, `24 ${subnetOf(h, 24)}`, `16 ${subnetOf(h, 16)}`]
}

/**
 * make starts the SpamFilter actor: it owns the bans (persisted in ChainStore's `bans` table, loaded
 * at start), the per-IP connection buckets and scores, the inbound counts per IP and subnet, and hands
 * every admitted connection a PeerGuard with the per-peer buckets. A peer whose score reaches the
 * threshold is banned for `banSeconds` by its guard, through this actor. Datagram requests are
 * admitted beside it (`admitDatagram`: per-IP buckets of their own, the actor's bans read in place).
 */
export const make = (
  policy: SpamPolicy,
): Effect.Effect<SpamFilterService, StorageError, ChainStore | Scope.Scope> =>
  Effect.gen(function* () {
    const store = yield* ChainStore
    const table: KeyedTable = store.table(BANS_TABLE)

    const lookupParsed = (
      state: State,
      banKey: string,
      holds: (subnet: Subnet) => boolean,
      at: number,
    ): Ban | undefined => {
      const exact = state.exact.get(banKey)
      if (exact !== undefined && exact.entry.until > at) return exact
      for (const ban of state.ranges.values()) {
        if (ban.entry.until > at && holds(ban.subnet)) return ban
      }
      return undefined
    }

    const lookup = (state: State, host: string, at: number): Ban | undefined =>
      state.exact.size === 0 && state.ranges.size === 0
        ? undefined
        : lookupParsed(state, exactKey(host), inSubnetOf(host), at)

    const mapOf = (state: State, subnet: Subnet) =>
      subnet._tag === "Range" && subnet.bits === (subnet.addr.kind() === "ipv4" ? 32 : 128)
        ? state.exact
        : subnet._tag === "Name"
          ? state.exact
          : state.ranges

    /** sweep drops expired bans from memory and the table. */
    const sweep = (state: State, at: number) =>
      Effect.gen(function* () {
        const gone: Array<readonly [string, undefined]> = []
        for (const map of [state.exact, state.ranges]) {
          for (const [key, ban] of map) {
            if (ban.entry.until > at) continue
            map.delete(key)
            gone.push([ban.entry.subnet, undefined])
          }
        }
        if (gone.length > 0) yield* table.write(gone)
      })

    const ipRecord = (state: State, host: string, at: number): IpRecord => {
      const key = normalizeHost(host)
      let rec = state.ips.get(key)
      if (rec !== undefined && at - rec.lastAt > policy.ipScoreMemorySeconds * 1000) {
        state.ips.delete(key)
        rec = undefined
      }
      if (rec === undefined) {
        rec = { bucket: new TokenBucket(policy.connections, at), score: 0, lastAt: at }
        if (state.ips.size >= MAX_IP_RECORDS) state.ips.delete(state.ips.keys().next().value!)
      } else {
        state.ips.delete(key)
      }
      rec.lastAt = at
      state.ips.set(key, rec)
      return rec
    }

    const addBan = (
      state: State,
      subnetText: string,
      seconds: number | undefined,
      until: number | undefined,
      reason: string,
      exclusive = false,
    ) =>
      Effect.gen(function* () {
        const subnet = parseSubnet(subnetText)
        if (subnet === undefined)
          return yield* new BanError({ code: -30, message: `Error: Invalid IP/Subnet: ${subnetText}` })
        const at = yield* nowSeconds
        const entry: BanEntry = {
          subnet: subnet.key,
          createdAt: at,
          until: Math.min(MAX_BAN_UNTIL, until ?? at + (seconds ?? policy.banSeconds)),
          reason,
        }
        const map = mapOf(state, subnet)
        const old = map.get(subnet.key)
        if (exclusive && old !== undefined && old.entry.until > at)
          return yield* new BanError({ code: -23, message: "Error: IP/Subnet already banned" })
        if (old !== undefined && old.entry.until > at && old.entry.until >= entry.until) return old.entry
        yield* table.put(
          subnet.key,
          textEncoder.encode(encodeRow({ createdAt: entry.createdAt, until: entry.until, reason })),
        )
        map.set(subnet.key, { subnet, entry })
        yield* Metric.increment(p2pBans)
        yield* Effect.logInfo(
          `banned ${subnet.key} until ${new Date(entry.until * 1000).toISOString()}: ${reason}`,
        )
        return entry
      })

    const admit = (state: State, remote: Endpoint, direction: "inbound" | "outbound", isStatic: boolean) =>
      Effect.gen(function* () {
        const ms = yield* Clock.currentTimeMillis
        const at = Math.floor(ms / 1000)
        const host = normalizeHost(remote.host)
        const ban = isStatic ? undefined : lookup(state, host, at)
        if (ban !== undefined)
          return yield* refused("banned", `${host} is banned (${ban.entry.subnet}: ${ban.entry.reason})`)
        let keys: ReadonlyArray<string> = []
        if (direction === "inbound") {
          const rec = ipRecord(state, host, ms)
          if (!rec.bucket.take(1, ms)) {
            rec.score += FLOOD_SCORE
            if (rec.score >= policy.banThreshold && policy.banSeconds > 0) {
              // the ban is the penalty: once it expires the IP starts from a clean score
              rec.score = 0
              yield* addBan(state, host, undefined, undefined, "connection flood").pipe(
                Effect.catchAll((e) => Effect.logWarning(`could not ban ${host}: ${e.message}`)),
              )
            }
            return yield* refused("rate", `${host} connects too often`)
          }
          keys = inboundKeys(host)
          const caps = [policy.maxInboundPerIp, policy.maxInboundPer24, policy.maxInboundPer16]
          for (let i = 0; i < keys.length; i++) {
            if ((state.inbound.get(keys[i]!) ?? 0) >= caps[i]!)
              return yield* refused(
                "cap",
                `${host}: too many inbound connections from its ${["IP", "/24", "/16"][i]}`,
              )
          }
          for (const k of keys) state.inbound.set(k, (state.inbound.get(k) ?? 0) + 1)
        }
        return { _tag: "Admitted", guard: makeGuard(host, keys, ms) } as const
      })

    /** score adds a datagram source's misbehaviour to its IP's score; at the threshold the IP is banned. */
    const score = (state: State, host: string, m: Misbehavior): Effect.Effect<Verdict> =>
      Effect.gen(function* () {
        const ms = yield* Clock.currentTimeMillis
        const rec = ipRecord(state, host, ms)
        rec.score += scoreOf(m)
        const standing = rec.score
        if (rec.score < policy.banThreshold) return { score: standing, banned: false }
        // the ban is the penalty: once it expires the IP starts from a clean score
        rec.score = 0
        if (policy.banSeconds <= 0) return { score: standing, banned: false }
        yield* addBan(state, normalizeHost(host), undefined, undefined, describe(m)).pipe(
          Effect.catchAll((e) => Effect.logWarning(`could not ban ${host}: ${e.message}`)),
        )
        return { score: standing, banned: true }
      })

    const refused = (kind: "banned" | "rate" | "cap", reason: string) =>
      Effect.as(Metric.increment(Metric.tagged(p2pRefused, "reason", kind)), {
        _tag: "Refused",
        reason,
      } as Admission)

    const release = (state: State, keys: ReadonlyArray<string>) => {
      for (const k of keys) {
        const n = (state.inbound.get(k) ?? 0) - 1
        if (n > 0) state.inbound.set(k, n)
        else state.inbound.delete(k)
      }
    }

    /** handle runs one command, then publishes how many bans are in force. */
    const handle = (state: State, cmd: Cmd): Effect.Effect<State> =>
      Effect.tap(handleCommand(state, cmd), (s) => Metric.set(p2pBanned, s.exact.size + s.ranges.size))

    const handleCommand = (state: State, cmd: Cmd): Effect.Effect<State> => {
      const reply = <A, E>(d: Deferred.Deferred<A, E>, effect: Effect.Effect<A, E>) =>
        Effect.as(
          Effect.flatMap(Effect.exit(effect), (exit) => Deferred.done(d, exit)),
          state,
        )
      switch (cmd._tag) {
        case "Admit":
          return reply(cmd.reply, admit(state, cmd.remote, cmd.direction, cmd.isStatic))
        case "Release":
          return Effect.sync(() => {
            release(state, cmd.keys)
            return state
          })
        case "IsBanned":
          return reply(
            cmd.reply,
            Effect.map(nowSeconds, (at) => lookup(state, cmd.host, at) !== undefined),
          )
        case "Score":
          return reply(cmd.reply, score(state, cmd.host, cmd.misbehavior))
        case "Ban":
          return reply(
            cmd.reply,
            addBan(state, cmd.subnet, cmd.seconds, cmd.until, cmd.reason, cmd.exclusive),
          )
        case "Unban":
          return reply(
            cmd.reply,
            Effect.gen(function* () {
              const subnet = parseSubnet(cmd.subnet)
              if (subnet === undefined)
                return yield* new BanError({ code: -30, message: `Error: Invalid IP/Subnet: ${cmd.subnet}` })
              yield* sweep(state, yield* nowSeconds)
              const map = mapOf(state, subnet)
              if (!map.has(subnet.key))
                return yield* new BanError({
                  code: -30,
                  message:
                    "Error: Unban failed. Requested address/subnet was not previously manually banned.",
                })
              yield* table.remove(subnet.key)
              map.delete(subnet.key)
            }),
          )
        case "List":
          return reply(
            cmd.reply,
            Effect.gen(function* () {
              yield* sweep(state, yield* nowSeconds)
              return [...state.exact.values(), ...state.ranges.values()]
                .map((b) => b.entry)
                .sort((a, b) => a.createdAt - b.createdAt)
            }),
          )
        case "Clear":
          return reply(
            cmd.reply,
            Effect.gen(function* () {
              const rows = [...state.exact.values(), ...state.ranges.values()].map(
                (b) => [b.entry.subnet, undefined] as const,
              )
              if (rows.length > 0) yield* table.write(rows)
              state.exact.clear()
              state.ranges.clear()
            }),
          )
      }
    }

    /**
     * current is the actor's state, for admitDatagram's reads of the bans (set by `initial`, so a
     * restarted actor's fresh state is the one read)
     */
    let current: State | undefined

    /** initial loads the stored bans (a restart of the actor re-reads them; the counts start empty). */
    const initial = Effect.gen(function* () {
      const state: State = { exact: new Map(), ranges: new Map(), ips: new Map(), inbound: new Map() }
      current = state
      for (const [key, bytes] of yield* table.entries) {
        const row = decodeRow(textDecoder.decode(bytes))
        const subnet = parseSubnet(key)
        if (Option.isNone(row) || subnet === undefined) {
          yield* Effect.logWarning(`bans: ignoring an unreadable row ${JSON.stringify(key)}`)
          continue
        }
        mapOf(state, subnet).set(subnet.key, { subnet, entry: { subnet: subnet.key, ...row.value } })
      }
      yield* sweep(state, yield* nowSeconds)
      yield* Metric.set(p2pBanned, state.exact.size + state.ranges.size)
      return state
    })

    const actor = yield* Actor.make<Cmd, State, StorageError, never>({
      name: "spam-filter",
      capacity: 4096,
      initial,
      handle,
    })

    const ban: SpamFilterService["ban"] = (subnet, options) =>
      Actor.ask(
        actor,
        (reply): Cmd => ({
          _tag: "Ban",
          subnet,
          seconds: options.seconds,
          until: options.until,
          reason: options.reason,
          exclusive: options.exclusive ?? false,
          reply,
        }),
      )

    /** makeGuard builds one connection's guard; its buckets are its Peer fiber's, its score anyone's. */
    function makeGuard(host: string, keys: ReadonlyArray<string>, at: number): PeerGuard {
      const messages = new TokenBucket(policy.messages, at)
      const bytes = new TokenBucket(policy.bytes, at)
      const addr = new TokenBucket(policy.addr, at)
      // udp addresses (issue 8) draw on the same addr bucket: one address budget per peer, of any kind
      const perType: Partial<Record<Command, TokenBucket>> = {
        inv: new TokenBucket(policy.inv, at),
        addr,
        udpaddr: addr,
        tx: new TokenBucket(policy.tx, at),
      }
      const unrequestedBlocks = new TokenBucket(policy.unrequestedBlocks, at)
      const filterRequests = new TokenBucket(policy.filters, at)
      let score = 0
      let banned = false
      let released = false

      const misbehave = (m: Misbehavior): Effect.Effect<Verdict> =>
        Effect.gen(function* () {
          score += scoreOf(m)
          if (score >= policy.banThreshold && !banned) {
            banned = true
            const reason = describe(m)
            if (policy.banSeconds > 0) {
              yield* ban(host, { reason }).pipe(
                Effect.catchAll((e) => Effect.logWarning(`could not ban ${host}: ${e.message}`)),
              )
            }
          }
          return { score, banned }
        })

      const flood = (bucket: FloodBucket) =>
        Metric.increment(Metric.tagged(p2pDropped, "bucket", bucket)).pipe(
          Effect.zipRight(misbehave(Misbehavior.Flood({ bucket }))),
          Effect.as(false),
        )

      return {
        admit: (command, entries) =>
          Effect.flatMap(Clock.currentTimeMillis, (now) => {
            if (!messages.take(1, now)) return flood("messages")
            if (command === "getdata" && entries > policy.maxGetDataItems) return flood("getdata")
            const bucket = perType[command]
            if (bucket !== undefined && !bucket.take(command === "tx" ? 1 : entries, now))
              return flood((command === "udpaddr" ? "addr" : command) as FloodBucket)
            return Effect.succeed(true)
          }),
        throttle: (n) => Effect.map(Clock.currentTimeMillis, (now) => bytes.spend(n, now)),
        unrequested: (command) =>
          Effect.flatMap(Clock.currentTimeMillis, (now) =>
            unrequestedBlocks.take(1, now)
              ? Effect.succeed(true)
              : Metric.increment(Metric.tagged(p2pDropped, "bucket", "unrequestedBlocks")).pipe(
                  Effect.zipRight(misbehave(Misbehavior.Unrequested({ command }))),
                  Effect.as(false),
                ),
          ),
        admitFilters: (blocks) =>
          Effect.flatMap(Clock.currentTimeMillis, (now) =>
            filterRequests.take(blocks, now) ? Effect.succeed(true) : flood("filters"),
          ),
        misbehave,
        standing: Effect.sync(() => ({ score, banned })),
        release: Effect.suspend(() => {
          if (released || keys.length === 0) return Effect.void
          released = true
          return actor.send({ _tag: "Release", keys })
        }),
      }
    }

    /** datagramSources are admitDatagram's per-IP buckets, in least-recently-seen order; the actor never touches them. */
    const datagramSources = new Map<string, DatagramSource>()

    const sourceOf = (host: string, ms: number): DatagramSource => {
      let source = datagramSources.get(host)
      if (source === undefined) {
        if (datagramSources.size >= MAX_DATAGRAM_SOURCES)
          datagramSources.delete(datagramSources.keys().next().value!)
        source = {
          bucket: new TokenBucket(policy.datagrams, ms),
          banKey: exactKey(host),
          holds: inSubnetOf(host),
        }
      } else {
        datagramSources.delete(host)
      }
      datagramSources.set(host, source)
      return source
    }

    const dropDatagram = (reason: "banned" | "rate", kind: DatagramKind) =>
      Effect.as(Metric.increment(datagramsDropped(reason, kind)), false)

    const admitDatagram: SpamFilterService["admitDatagram"] = (host, kind) =>
      Effect.flatMap(Clock.currentTimeMillis, (ms) => {
        const source = sourceOf(host, ms)
        const state = current
        if (
          state !== undefined &&
          (state.exact.size > 0 || state.ranges.size > 0) &&
          lookupParsed(state, source.banKey, source.holds, Math.floor(ms / 1000)) !== undefined
        )
          return dropDatagram("banned", kind)
        if (!source.bucket.take(1, ms)) return dropDatagram("rate", kind)
        return Effect.succeed(true)
      })

    const service: SpamFilterService = {
      policy,
      admitDatagram,
      misbehaveDatagram: (host, misbehavior) =>
        Actor.ask(actor, (reply): Cmd => ({ _tag: "Score", host, misbehavior, reply })),
      admit: (remote, direction, isStatic) =>
        Actor.ask(actor, (reply): Cmd => ({ _tag: "Admit", remote, direction, isStatic, reply })),
      isBanned: (host) => Actor.ask(actor, (reply): Cmd => ({ _tag: "IsBanned", host, reply })),
      ban,
      unban: (subnet) => Actor.ask(actor, (reply): Cmd => ({ _tag: "Unban", subnet, reply })),
      banned: Actor.ask(actor, (reply): Cmd => ({ _tag: "List", reply })),
      clearBanned: Actor.ask(actor, (reply): Cmd => ({ _tag: "Clear", reply })),
      matches: (subnet, host) => {
        const parsed = parseSubnet(subnet)
        return parsed !== undefined && inSubnetOf(host)(parsed)
      },
    }
    return service
  })

/** layer provides the SpamFilter actor over ChainStore (its bans table). */
export const layer = (policy: SpamPolicy): Layer.Layer<SpamFilter, StorageError, ChainStore> =>
  Layer.scoped(SpamFilter, make(policy))
