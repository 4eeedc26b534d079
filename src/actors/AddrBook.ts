import { Clock, Context, Deferred, Duration, Effect, Layer, Option, Random } from "effect"
import { ChainStore, type KeyedTable } from "../layers/ChainStore.js"
import * as Entropy from "../layers/Entropy.js"
import type { Endpoint } from "../layers/Transport.js"
import type { PeerAddress } from "../schema/config.js"
import { toHex } from "../schema/hex.js"
import type { AddrEntry, UdpAddrEntry } from "../schema/wire.js"
import * as Actor from "./Actor.js"
import {
  type AddrInfo,
  Addrman,
  type AddrmanParams,
  decodeRow,
  defaultAddrmanParams,
  encodeRow,
  futureSlackSeconds,
  groupOf,
  isGossipable,
  makeRng,
  parseEndpoint,
  parseWireHost,
  secretBytes,
} from "./addrman.js"
import { remember } from "./bounded.js"
import type { PeerInfo } from "./net.js"
import {
  decodeUdpRow,
  defaultUdpAddrParams,
  encodeUdpRow,
  isUdpRowKey,
  type UdpAddrInfo,
  type UdpAddrParams,
  UdpAddrTable,
} from "./udpAddrs.js"

/** AddrBookConfig: sizes of the book, the outbound subnet caps, getaddr answers and addr relay. */
export interface AddrBookConfig {
  /** outbound peers per /24 (IPv6 /64) among non-static peers */
  readonly maxOutboundPer24: number
  /** outbound peers per /16 (IPv6 /48) among non-static peers */
  readonly maxOutboundPer16: number
  /** outbound peers per /8 (IPv6 /32) among non-static peers */
  readonly maxOutboundPer8: number
  /** bucket counts and sizes of the new and tried tables (see addrman.ts) */
  readonly tables: AddrmanParams
  /** seeds: addresses put in the book at start (origin "seed"; gossiped only once reached) */
  readonly seeds: ReadonlyArray<Endpoint>
  /** getAddrCacheTtl: how long one getaddr answer is reused (Core caches it a day) */
  readonly getAddrCacheTtl: Duration.Duration
  /** getAddrMaxEntries and getAddrMaxPercent bound one getaddr answer (Core: 1000 and 23 %) */
  readonly getAddrMaxEntries: number
  readonly getAddrMaxPercent: number
  /** addrRelayMaxEntries: only addr messages this small are relayed onward (Core: 10) */
  readonly addrRelayMaxEntries: number
  /** bounds of the table of udp addresses (NAT'd nodes by key and rendezvous server; see udpAddrs.ts) */
  readonly udp: UdpAddrParams
}

export const defaultAddrBookConfig: AddrBookConfig = {
  maxOutboundPer24: 1,
  maxOutboundPer16: 2,
  maxOutboundPer8: 4,
  tables: defaultAddrmanParams,
  seeds: [],
  getAddrCacheTtl: Duration.minutes(10),
  getAddrMaxEntries: 1000,
  getAddrMaxPercent: 23,
  addrRelayMaxEntries: 10,
  udp: defaultUdpAddrParams,
}

/**
 * AddrBookService is the AddrBook actor: addresses in new/tried buckets keyed by network group
 * (no /16 can fill the book), persisted in ChainStore's `addr` table.
 */
export interface AddrBookService {
  /**
   * addGossip stores entries from a peer's addr message (bucketed by the sender's group too) and
   * returns those fit to relay onward: new to us, gossipable, not relayed before. An entry whose host
   * is the sender's own host is a self-announcement (see addSelfAnnounced). The sender's addr rate
   * is limited before this, by its connection's guard (SpamFilter, spamPolicy `addr`).
   */
  readonly addGossip: (
    from: PeerInfo,
    entries: ReadonlyArray<AddrEntry>,
  ) => Effect.Effect<ReadonlyArray<AddrEntry>>
  /**
   * addSelfAnnounced stores a peer's own address (its host and version listenPort) as unverified:
   * it may be dialled, but is never gossiped until markGood proves it.
   */
  readonly addSelfAnnounced: (peer: PeerInfo) => Effect.Effect<void>
  /** markAttempt records a dial (for backoff and dropping addresses that never answer) */
  readonly markAttempt: (ep: Endpoint) => Effect.Effect<void>
  /** markGood: an outbound connection to `ep` completed its handshake: tried, verified, gossipable */
  readonly markGood: (ep: Endpoint, services: number) => Effect.Effect<void>
  /**
   * select picks an address for a new outbound connection that keeps the subnet caps given the
   * current non-static outbound peers `current`, skipping `exclude` (endpointKey strings: connected,
   * being dialled); none when nothing fits.
   */
  readonly select: (
    current: ReadonlyArray<Endpoint>,
    exclude: ReadonlySet<string>,
  ) => Effect.Effect<Option.Option<Endpoint>>
  /**
   * selectFeeler picks an unverified address (a self-announcement, or gossip not yet dialled) for a
   * short-lived feeler connection that only verifies it; none when there is nothing to verify.
   */
  readonly selectFeeler: (exclude: ReadonlySet<string>) => Effect.Effect<Option.Option<Endpoint>>
  /** getAddr answers a getaddr: a cached random sample of gossipable addresses (never the whole book) */
  readonly getAddr: Effect.Effect<ReadonlyArray<AddrEntry>>
  /**
   * addUdpGossip stores udp addresses (NAT'd nodes: key and rendezvous server) from a peer's udpaddr
   * message and returns those fit to relay onward: fresh, in a small message, not relayed before.
   */
  readonly addUdpGossip: (
    from: PeerInfo,
    entries: ReadonlyArray<UdpAddrEntry>,
  ) => Effect.Effect<ReadonlyArray<UdpAddrEntry>>
  /** markUdpAttempt / markUdpGood: a dial of the NAT'd node with this key started / completed its handshake */
  readonly markUdpAttempt: (nodeKey: Uint8Array) => Effect.Effect<void>
  readonly markUdpGood: (nodeKey: Uint8Array) => Effect.Effect<void>
  /**
   * selectUdp picks a NAT'd node to dial over UDP, skipping `exclude` (hex keys) and any key not above
   * `ownKey` (the lower key of a pair dials: one session per pair); none when nothing fits.
   */
  readonly selectUdp: (
    exclude: ReadonlySet<string>,
    ownKey: Uint8Array,
  ) => Effect.Effect<Option.Option<PeerAddress>>
  /** getUdpAddr answers a getaddr with udp addresses this node has reached (a random sample, never the whole table) */
  readonly getUdpAddr: Effect.Effect<ReadonlyArray<UdpAddrEntry>>
  readonly size: Effect.Effect<{ readonly new: number; readonly tried: number; readonly udp: number }>
}

export class AddrBook extends Context.Tag("fibercoin/AddrBook")<AddrBook, AddrBookService>() {}

// ---------------------------------------------------------------------------------------------------
// The AddrBook actor. Everything below runs on its fiber; the book is nobody else's.

/** addrTable is the ChainStore table: one row per entry under its endpointKey, plus the bucket secret. */
export const addrTable = "addr"
/** secretKey is the row holding the per-book bucket secret (not an endpointKey, so no clash). */
export const secretKey = "#secret"

const mailboxCapacity = 1024

interface State {
  readonly book: Addrman
  readonly udp: UdpAddrTable
  cache: { readonly at: number; readonly entries: ReadonlyArray<AddrEntry> } | undefined
  /**
   * announcements (address and time) relayed already, oldest first, at most MAX_RELAYED: each is
   * relayed once, so a fresh announcement cannot circle the network for its whole 10 minutes
   */
  readonly relayed: Set<string>
}

/** MAX_RELAYED bounds the memory of relayed announcements. */
const MAX_RELAYED = 10_000

type Command =
  | {
      readonly _tag: "AddGossip"
      readonly from: PeerInfo
      readonly entries: ReadonlyArray<AddrEntry>
      readonly reply: Deferred.Deferred<ReadonlyArray<AddrEntry>>
    }
  | { readonly _tag: "AddSelf"; readonly peer: PeerInfo; readonly reply: Deferred.Deferred<void> }
  | { readonly _tag: "MarkAttempt"; readonly ep: Endpoint; readonly reply: Deferred.Deferred<void> }
  | {
      readonly _tag: "MarkGood"
      readonly ep: Endpoint
      readonly services: number
      readonly reply: Deferred.Deferred<void>
    }
  | {
      readonly _tag: "Select"
      readonly current: ReadonlyArray<Endpoint>
      readonly exclude: ReadonlySet<string>
      readonly reply: Deferred.Deferred<Option.Option<Endpoint>>
    }
  | {
      readonly _tag: "SelectFeeler"
      readonly exclude: ReadonlySet<string>
      readonly reply: Deferred.Deferred<Option.Option<Endpoint>>
    }
  | { readonly _tag: "GetAddr"; readonly reply: Deferred.Deferred<ReadonlyArray<AddrEntry>> }
  | {
      readonly _tag: "AddUdpGossip"
      readonly from: PeerInfo
      readonly entries: ReadonlyArray<UdpAddrEntry>
      readonly reply: Deferred.Deferred<ReadonlyArray<UdpAddrEntry>>
    }
  | {
      readonly _tag: "MarkUdp"
      readonly nodeKey: Uint8Array
      readonly good: boolean
      readonly reply: Deferred.Deferred<void>
    }
  | {
      readonly _tag: "SelectUdp"
      readonly exclude: ReadonlySet<string>
      readonly ownKey: Uint8Array
      readonly reply: Deferred.Deferred<Option.Option<PeerAddress>>
    }
  | { readonly _tag: "GetUdpAddr"; readonly reply: Deferred.Deferred<ReadonlyArray<UdpAddrEntry>> }
  | {
      readonly _tag: "Size"
      readonly reply: Deferred.Deferred<{
        readonly new: number
        readonly tried: number
        readonly udp: number
      }>
    }

const toEntry = (info: AddrInfo): AddrEntry => ({
  time: Math.max(0, Math.min(info.lastSeen, 0xffffffff)),
  services: info.services >>> 0,
  host: new Uint8Array(info.bytes),
  port: info.port,
})

const toUdpEntry = (info: UdpAddrInfo): UdpAddrEntry => ({
  time: Math.max(0, Math.min(info.lastSeen, 0xffffffff)),
  services: info.services >>> 0,
  nodeKey: new Uint8Array(info.nodeKey),
  host: new Uint8Array(info.bytes),
  port: info.port,
})

/** logStorage turns a storage failure into a warning: the book is a cache, losing a write is no crash. */
const logStorage = <A>(what: string, fallback: A) =>
  Effect.catchAll((e: { readonly message: string }) =>
    Effect.as(Effect.logWarning(`addr book: ${what} failed: ${e.message}`), fallback),
  )

/**
 * loadSecret reads the bucket secret, making and storing a fresh one on first start. It comes from
 * Entropy (the OS CSPRNG in production): bucket placement must be unguessable, or an attacker could
 * aim its addresses at chosen buckets (Effect's Random is a seeded PRNG, fit only for the draws below).
 */
const loadSecret = (table: KeyedTable) =>
  Effect.gen(function* () {
    const stored = yield* table.get(secretKey)
    if (Option.isSome(stored) && stored.value.length === secretBytes) return stored.value
    const secret = yield* Entropy.bytes(secretBytes)
    yield* table.put(secretKey, secret)
    return secret
  })

/**
 * make starts the AddrBook actor over ChainStore's `addr` table: it loads the secret and the stored
 * entries (skipping and deleting corrupt rows), adds the configured seeds, and writes every change
 * through to the table at the end of the command that made it.
 */
export const make = (config: AddrBookConfig) =>
  Effect.gen(function* () {
    const store = yield* ChainStore
    const table = store.table(addrTable)
    const nowMs = Clock.currentTimeMillis
    const nowSeconds = Effect.map(nowMs, (ms) => Math.floor(ms / 1000))

    /** persist writes the book's changes (both tables) since the last call. */
    const persist = (book: Addrman, udp: UdpAddrTable) =>
      Effect.suspend(() => {
        const changes = [
          ...book
            .takeChanges()
            .map(([key, info]) => [key, info === undefined ? undefined : encodeRow(info)] as const),
          ...udp
            .takeChanges()
            .map(([key, info]) => [key, info === undefined ? undefined : encodeUdpRow(info)] as const),
        ]
        if (changes.length === 0) return Effect.void
        // one transaction per command: a 1,000-entry addr message is one durable write, not 1,000
        return table.write(changes)
      }).pipe(logStorage("writing the addr table", undefined))

    const initial = Effect.gen(function* () {
      const now = yield* nowSeconds
      const secret = yield* loadSecret(table).pipe(
        logStorage("reading the bucket secret", undefined),
        Effect.flatMap((s) => (s !== undefined ? Effect.succeed(s) : Entropy.bytes(secretBytes))),
      )
      const book = new Addrman(config.tables, secret, makeRng(yield* Random.nextIntBetween(0, 2 ** 31)))
      const udp = new UdpAddrTable(config.udp, makeRng(yield* Random.nextIntBetween(0, 2 ** 31)))
      const rows = yield* table.entries.pipe(logStorage("reading the addr table", []))
      const decoded: Array<AddrInfo> = []
      const decodedUdp: Array<UdpAddrInfo> = []
      const corrupt: Array<string> = []
      for (const [key, value] of rows) {
        if (key === secretKey) continue
        const info = isUdpRowKey(key) ? decodeUdpRow(key, value) : decodeRow(key, value)
        if (info === undefined) corrupt.push(key)
        else if ("keyHex" in info) decodedUdp.push(info)
        else decoded.push(info)
      }
      if (corrupt.length > 0) yield* Effect.logWarning(`addr book: skipped ${corrupt.length} corrupt rows`)
      const lost = [...book.restore(decoded, now), ...udp.restore(decodedUdp, now)]
      yield* Effect.forEach([...corrupt, ...lost], (key) => table.remove(key), { discard: true }).pipe(
        logStorage("pruning the addr table", undefined),
      )
      for (const seed of config.seeds) {
        book.add(
          { host: seed.host, port: seed.port, services: 0, time: now, origin: "seed", source: "seed" },
          now,
        )
      }
      yield* persist(book, udp)
      const state: State = { book, udp, cache: undefined, relayed: new Set() }
      return state
    })

    /**
     * handleAddGossip: store, and pick what to relay (small fresh messages only, as Core). The rate
     * limit is the sender's connection guard's (one addr limiter, in the SpamFilter): what arrives here
     * was admitted.
     */
    const handleAddGossip = (state: State, from: PeerInfo, entries: ReadonlyArray<AddrEntry>) =>
      Effect.gen(function* () {
        const now = yield* nowSeconds
        const fromHost = parseEndpoint(from.addr.host, 1)?.host
        const source = groupOf(fromHost ?? from.addr.host)
        const relayable = entries.length <= config.addrRelayMaxEntries
        const relay: Array<AddrEntry> = []
        for (const entry of entries) {
          const parsed = parseWireHost(entry.host, entry.port)
          if (parsed === undefined) continue
          const time = Math.min(entry.time, now + futureSlackSeconds)
          const origin = parsed.host === fromHost ? "self" : "gossip"
          const result = state.book.add(
            { host: parsed.host, port: parsed.port, services: entry.services, time, origin, source },
            now,
          )
          if (!relayable || result === "invalid") continue
          const fresh = Math.abs(now - time) <= futureSlackSeconds
          const info = state.book.get(parsed.key)
          const gossipable = info === undefined ? origin === "gossip" : isGossipable(info)
          if ((result !== "added" && !fresh) || !gossipable) continue
          const announcement = `${parsed.key}@${time}`
          if (state.relayed.has(announcement)) continue
          remember(state.relayed, announcement, MAX_RELAYED)
          relay.push({ ...entry, time })
        }
        return relay
      })

    /** handleAddUdpGossip: store udp addresses; relay the fresh ones of a small message, each once. */
    const handleAddUdpGossip = (state: State, entries: ReadonlyArray<UdpAddrEntry>) =>
      Effect.map(nowSeconds, (now) => {
        const relayable = entries.length <= config.addrRelayMaxEntries
        const relay: Array<UdpAddrEntry> = []
        for (const entry of entries) {
          const result = state.udp.add(entry, now)
          if (!relayable || result === "invalid" || result === "unchanged") continue
          const time = Math.min(entry.time, now + futureSlackSeconds)
          if (Math.abs(now - time) > futureSlackSeconds) continue
          const announcement = `udp:${toHex(entry.nodeKey)}@${toHex(entry.host)}:${entry.port}@${time}`
          if (state.relayed.has(announcement)) continue
          remember(state.relayed, announcement, MAX_RELAYED)
          relay.push({ ...entry, time })
        }
        return relay
      })

    const handleGetAddr = (state: State) =>
      Effect.gen(function* () {
        const ms = yield* nowMs
        if (state.cache !== undefined && ms - state.cache.at < Duration.toMillis(config.getAddrCacheTtl)) {
          return state.cache.entries
        }
        const candidates = state.book.gossipable(Math.floor(ms / 1000))
        const n = Math.min(
          config.getAddrMaxEntries,
          Math.ceil((candidates.length * config.getAddrMaxPercent) / 100),
        )
        const entries = state.book.sample(candidates, n).map(toEntry)
        // An empty answer is not cached: it reveals nothing, and a young node should answer once it knows some.
        state.cache = entries.length === 0 ? undefined : { at: ms, entries }
        return entries
      })

    const handleCommand = (state: State, cmd: Command): Effect.Effect<void> => {
      switch (cmd._tag) {
        case "AddGossip":
          return Effect.flatMap(handleAddGossip(state, cmd.from, cmd.entries), (relay) =>
            Deferred.succeed(cmd.reply, relay),
          )
        case "AddSelf":
          return Effect.flatMap(nowSeconds, (now) => {
            const { peer } = cmd
            if (peer.listenPort > 0) {
              state.book.add(
                {
                  host: peer.addr.host,
                  port: peer.listenPort,
                  services: peer.services,
                  time: now,
                  origin: "self",
                  source: groupOf(parseEndpoint(peer.addr.host, 1)?.host ?? peer.addr.host),
                },
                now,
              )
            }
            return Deferred.succeed(cmd.reply, undefined)
          })
        case "MarkAttempt":
          return Effect.flatMap(nowSeconds, (now) => {
            state.book.markAttempt(cmd.ep.host, cmd.ep.port, now)
            return Deferred.succeed(cmd.reply, undefined)
          })
        case "MarkGood":
          return Effect.flatMap(nowSeconds, (now) => {
            state.book.markGood(cmd.ep.host, cmd.ep.port, cmd.services, now)
            return Deferred.succeed(cmd.reply, undefined)
          })
        case "SelectFeeler":
          return Effect.flatMap(nowSeconds, (now) => {
            const info = state.book.selectUnverified(cmd.exclude, now)
            const pick =
              info === undefined ? Option.none() : Option.some({ host: info.host, port: info.port })
            return Deferred.succeed(cmd.reply, pick)
          })
        case "Select":
          return Effect.flatMap(nowSeconds, (now) => {
            const caps = {
              per24: config.maxOutboundPer24,
              per16: config.maxOutboundPer16,
              per8: config.maxOutboundPer8,
            }
            const info = state.book.select(cmd.current, cmd.exclude, caps, now)
            const pick =
              info === undefined ? Option.none() : Option.some({ host: info.host, port: info.port })
            return Deferred.succeed(cmd.reply, pick)
          })
        case "GetAddr":
          return Effect.flatMap(handleGetAddr(state), (entries) => Deferred.succeed(cmd.reply, entries))
        case "AddUdpGossip":
          return Effect.flatMap(handleAddUdpGossip(state, cmd.entries), (relay) =>
            Deferred.succeed(cmd.reply, relay),
          )
        case "MarkUdp":
          return Effect.flatMap(nowSeconds, (now) => {
            if (cmd.good) state.udp.markGood(toHex(cmd.nodeKey), now)
            else state.udp.markAttempt(toHex(cmd.nodeKey), now)
            return Deferred.succeed(cmd.reply, undefined)
          })
        case "SelectUdp":
          return Effect.flatMap(nowSeconds, (now) => {
            const info = state.udp.select(cmd.exclude, toHex(cmd.ownKey), now)
            const pick: Option.Option<PeerAddress> =
              info === undefined
                ? Option.none()
                : Option.some({ host: info.host, port: info.port, nodeKey: info.nodeKey })
            return Deferred.succeed(cmd.reply, pick)
          })
        case "GetUdpAddr":
          return Effect.flatMap(nowSeconds, (now) => {
            const candidates = state.udp.gossipable(now)
            const n = Math.min(
              config.getAddrMaxEntries,
              Math.ceil((candidates.length * config.getAddrMaxPercent) / 100),
            )
            return Deferred.succeed(cmd.reply, state.book.sample(candidates, n).map(toUdpEntry))
          })
        case "Size":
          return Deferred.succeed(cmd.reply, { ...state.book.size, udp: state.udp.size })
      }
    }

    const handle = (state: State, cmd: Command): Effect.Effect<State> =>
      Effect.gen(function* () {
        yield* handleCommand(state, cmd)
        yield* persist(state.book, state.udp)
        return state
      })

    const actor = yield* Actor.make<Command, State, never, never>({
      name: "addrbook",
      capacity: mailboxCapacity,
      initial,
      handle,
    })

    const service: AddrBookService = {
      addGossip: (from, entries) =>
        Actor.ask(actor, (reply): Command => ({ _tag: "AddGossip", from, entries, reply })),
      addSelfAnnounced: (peer) => Actor.ask(actor, (reply): Command => ({ _tag: "AddSelf", peer, reply })),
      markAttempt: (ep) => Actor.ask(actor, (reply): Command => ({ _tag: "MarkAttempt", ep, reply })),
      markGood: (ep, services) =>
        Actor.ask(actor, (reply): Command => ({ _tag: "MarkGood", ep, services, reply })),
      select: (current, exclude) =>
        Actor.ask(actor, (reply): Command => ({ _tag: "Select", current, exclude, reply })),
      selectFeeler: (exclude) =>
        Actor.ask(actor, (reply): Command => ({ _tag: "SelectFeeler", exclude, reply })),
      getAddr: Actor.ask(actor, (reply): Command => ({ _tag: "GetAddr", reply })),
      addUdpGossip: (from, entries) =>
        Actor.ask(actor, (reply): Command => ({ _tag: "AddUdpGossip", from, entries, reply })),
      markUdpAttempt: (nodeKey) =>
        Actor.ask(actor, (reply): Command => ({ _tag: "MarkUdp", nodeKey, good: false, reply })),
      markUdpGood: (nodeKey) =>
        Actor.ask(actor, (reply): Command => ({ _tag: "MarkUdp", nodeKey, good: true, reply })),
      selectUdp: (exclude, ownKey) =>
        Actor.ask(actor, (reply): Command => ({ _tag: "SelectUdp", exclude, ownKey, reply })),
      getUdpAddr: Actor.ask(actor, (reply): Command => ({ _tag: "GetUdpAddr", reply })),
      size: Actor.ask(actor, (reply): Command => ({ _tag: "Size", reply })),
    }
    return service
  })

/** layer provides the AddrBook actor over ChainStore's `addr` table. */
export const layer = (config: AddrBookConfig): Layer.Layer<AddrBook, never, ChainStore> =>
  Layer.scoped(AddrBook, make(config))
