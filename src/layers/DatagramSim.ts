import { Deferred, Duration, Effect, Exit, Layer, Mailbox, Random, type Scope } from "effect"
import {
  DatagramError,
  type DatagramService,
  type DatagramSocket,
  Datagrams,
  MAX_DATAGRAM_BYTES,
  RECEIVE_BUFFER_DATAGRAMS,
  type ReceivedDatagram,
} from "./Datagram.js"
import type { Endpoint } from "./Transport.js"

/**
 * DatagramLinkOptions describe the path between two sim hosts (both directions), per datagram.
 *
 * - `latency`: one-way delay; `jitter` adds a uniform random 0..jitter on top of it.
 * - `loss`, `duplicate` (probabilities 0..1, default 0): the datagram is dropped, or delivered twice.
 * - `reorder` (probability 0..1, default 0): the datagram is held back by a random extra delay of up
 *   to `reorderWindow` (default: the latency, at least 1 ms), so datagrams sent after it overtake it.
 */
export interface DatagramLinkOptions {
  readonly latency: Duration.DurationInput
  readonly jitter?: Duration.DurationInput
  readonly loss?: number
  readonly duplicate?: number
  readonly reorder?: number
  readonly reorderWindow?: Duration.DurationInput
}

/**
 * NatType is a NAT's mapping and filtering behaviour, in classic STUN (RFC 3489) terms with their
 * RFC 4787 meaning:
 * - `full-cone`: endpoint-independent mapping, endpoint-independent filtering (anyone may send in);
 * - `address-restricted`: endpoint-independent mapping, address-dependent filtering (only from hosts
 *   the private endpoint sent to);
 * - `port-restricted`: endpoint-independent mapping, address-and-port-dependent filtering;
 * - `symmetric`: address-and-port-dependent mapping (a new public port per remote endpoint), inbound
 *   only from that remote endpoint. Hole punching between two symmetric NATs fails, as in the field.
 */
export type NatType = "full-cone" | "address-restricted" | "port-restricted" | "symmetric"

/**
 * NatOptions put `privateHosts` behind one NAT whose outside address is `publicHost`.
 *
 * - `mappingTimeout` (default 30 s, RFC 4787 REQ-5's lower bound is 2 min; home routers use 30 s to
 *   a few minutes): a mapping with no refreshing traffic for this long is gone, and the next outbound
 *   datagram gets a new public port.
 * - `inboundRefreshes` (default false): whether inbound datagrams refresh a mapping too. RFC 4787
 *   REQ-6 requires only outbound refresh; Linux conntrack refreshes on both. With the default a node
 *   behind the NAT must send keepalives itself to hold its mapping open.
 * - `hairpinning` (default false): whether a private host may reach another private host of the same
 *   NAT through the NAT's public endpoint (RFC 4787 REQ-9). Private hosts of one NAT always reach each
 *   other by their private addresses (one LAN).
 * - `firstPort` (default 20000): public ports are handed out from here upwards, in order.
 */
export interface NatOptions {
  readonly publicHost: string
  readonly type: NatType
  readonly privateHosts: ReadonlyArray<string>
  readonly mappingTimeout?: Duration.DurationInput
  readonly inboundRefreshes?: boolean
  readonly hairpinning?: boolean
  readonly firstPort?: number
}

/** NatMapping is one live translation: `private` is seen from outside as `public` (towards `remote` only, for symmetric). */
export interface NatMapping {
  readonly private: Endpoint
  readonly public: Endpoint
  readonly remote: Endpoint | undefined
  /** expiresAt is the clock millis at which the mapping lapses unless refreshed */
  readonly expiresAt: number
}

/** Nat is a NAT added to the sim; `mappings` lists its unexpired translations (for tests). */
export interface Nat {
  readonly publicHost: string
  readonly type: NatType
  readonly privateHosts: ReadonlyArray<string>
  readonly mappings: Effect.Effect<ReadonlyArray<NatMapping>>
}

/** TrafficCount is a number of datagrams and their payload bytes. */
export interface TrafficCount {
  readonly datagrams: number
  readonly bytes: number
}

/**
 * HostStats count a host's datagrams. `sent` is what its sockets sent (lost or not); `received` what
 * its sockets' buffers accepted; `dropped` what arrived while a buffer was full (or was over
 * MAX_DATAGRAM_BYTES). `sentTo` is keyed by the destination host as addressed, `receivedFrom` by the
 * `from` host as the receiver saw it (after any NAT): an amplification test compares a server's
 * `sentTo.get(x)` with its `receivedFrom.get(x)`.
 */
export interface HostStats {
  readonly sent: TrafficCount
  readonly received: TrafficCount
  readonly dropped: TrafficCount
  readonly sentTo: ReadonlyMap<string, TrafficCount>
  readonly receivedFrom: ReadonlyMap<string, TrafficCount>
}

/** DatagramSimOptions seed the network's PRNG (every loss/duplicate/reorder/jitter roll) and set the default link. */
export interface DatagramSimOptions {
  readonly seed: number
  /** defaultLink applies to host pairs without `setLink`; default 0 latency and no faults. */
  readonly defaultLink?: DatagramLinkOptions
  /** receiveBufferDatagrams bounds each socket's unread datagrams (default RECEIVE_BUFFER_DATAGRAMS). */
  readonly receiveBufferDatagrams?: number
}

/**
 * DatagramSim is an in-memory UDP network of hosts named by IP literals. Time is the Clock (TestClock
 * drives it) and randomness a `Random.make(seed)` held by the network, so one seed gives one delivery
 * schedule. One fiber delivers every datagram in (arrival time, send order).
 *
 * Routing: a datagram to a NAT's public host goes through that NAT's inbound mapping and filter; to a
 * private host only from the same NAT's LAN (from anywhere else it is unreachable and dropped); to
 * any other host straight to the socket bound there (dropped if none). A datagram from a private host
 * to anywhere outside its LAN is translated on the way out, so it arrives `from` the NAT's public
 * host and mapped port. NATs are not nested.
 */
export interface DatagramSim {
  /** service is host `host`'s Datagram service: it binds on `host` (ignoring `at.host`). */
  readonly service: (host: string) => DatagramService
  /** layer provides `service(host)` as the Datagrams service. */
  readonly layer: (host: string) => Layer.Layer<Datagrams>
  /** setLink sets the path between `a` and `b` (both directions; a NAT'd host's own address or its NAT's public one). */
  readonly setLink: (a: string, b: string, link: DatagramLinkOptions) => Effect.Effect<void>
  /** addNat puts `privateHosts` behind a new NAT at `publicHost` (dies if a host is already placed). */
  readonly addNat: (options: NatOptions) => Effect.Effect<Nat>
  /**
   * partition splits hosts into groups that cannot reach each other (hosts in no group form one more
   * group; a private host is in its NAT's group). Checked on arrival, so datagrams in flight across
   * a new partition are lost.
   */
  readonly partition: (groups: ReadonlyArray<ReadonlyArray<string>>) => Effect.Effect<void>
  /** heal removes the partition. */
  readonly heal: Effect.Effect<void>
  /** stats are `host`'s counters so far. */
  readonly stats: (host: string) => Effect.Effect<HostStats>
  /**
   * inject puts a datagram on the wire as if sent from `from` (spoofed or not: no host sends it and
   * no NAT translates it on the way out), to `to`: for spoofing and flood tests.
   */
  readonly inject: (from: Endpoint, to: Endpoint, data: Uint8Array) => Effect.Effect<void>
}

interface SimSocket {
  readonly local: Endpoint
  readonly inbox: Mailbox.Mailbox<ReceivedDatagram>
  closed: boolean
}

interface Mapping {
  readonly privateEndpoint: Endpoint
  readonly publicPort: number
  /** remote is the one remote endpoint of a symmetric mapping */
  readonly remote: Endpoint | undefined
  /** permits holds "host" (address-restricted) or "host:port" (port-restricted, symmetric) keys */
  readonly permits: Set<string>
  expiresAt: number
}

interface NatState {
  readonly options: NatOptions
  readonly timeoutMillis: number
  readonly byKey: Map<string, Mapping>
  readonly byPort: Map<number, Mapping>
  nextPort: number
}

interface InFlight {
  readonly at: number
  readonly seq: number
  readonly from: Endpoint
  readonly to: Endpoint
  readonly data: Uint8Array
  /** lan is the NAT whose LAN the datagram was sent on (private to private, or hairpinned) */
  readonly lan: NatState | undefined
}

interface MutableStats {
  sent: { datagrams: number; bytes: number }
  received: { datagrams: number; bytes: number }
  dropped: { datagrams: number; bytes: number }
  sentTo: Map<string, { datagrams: number; bytes: number }>
  receivedFrom: Map<string, { datagrams: number; bytes: number }>
}

const pairKey = (a: string, b: string): string => (a < b ? `${a}\u0000${b}` : `${b}\u0000${a}`)
const endpointKey = (e: Endpoint): string => `${e.host}:${e.port}`

const count = (into: { datagrams: number; bytes: number }, bytes: number): void => {
  into.datagrams += 1
  into.bytes += bytes
}

const countIn = (
  map: Map<string, { datagrams: number; bytes: number }>,
  key: string,
  bytes: number,
): void => {
  let entry = map.get(key)
  if (entry === undefined) {
    entry = { datagrams: 0, bytes: 0 }
    map.set(key, entry)
  }
  count(entry, bytes)
}

/** Heap is a binary min-heap of in-flight datagrams by (arrival time, send order). */
class Heap {
  private readonly items: Array<InFlight> = []
  get size(): number {
    return this.items.length
  }
  peek(): InFlight | undefined {
    return this.items[0]
  }
  private less(i: number, j: number): boolean {
    const a = this.items[i] as InFlight
    const b = this.items[j] as InFlight
    return a.at < b.at || (a.at === b.at && a.seq < b.seq)
  }
  private swap(i: number, j: number): void {
    const t = this.items[i] as InFlight
    this.items[i] = this.items[j] as InFlight
    this.items[j] = t
  }
  push(item: InFlight): void {
    this.items.push(item)
    let i = this.items.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!this.less(i, parent)) break
      this.swap(i, parent)
      i = parent
    }
  }
  pop(): InFlight | undefined {
    const top = this.items[0]
    const last = this.items.pop()
    if (this.items.length > 0 && last !== undefined) {
      this.items[0] = last
      let i = 0
      while (true) {
        const l = 2 * i + 1
        const r = l + 1
        let m = i
        if (l < this.items.length && this.less(l, m)) m = l
        if (r < this.items.length && this.less(r, m)) m = r
        if (m === i) break
        this.swap(i, m)
        i = m
      }
    }
    return top
  }
}

/** makeDatagramSim builds a sim UDP network whose delivery fiber lives in the caller's scope. */
export const makeDatagramSim = (
  options: DatagramSimOptions,
): Effect.Effect<DatagramSim, never, Scope.Scope> =>
  Effect.gen(function* () {
    const rng = Random.make(options.seed)
    // the network's own time: a node whose clock is skewed (the simulator's --clock-skew) sends on it
    const netClock = yield* Effect.clock
    const bufferSize = options.receiveBufferDatagrams ?? RECEIVE_BUFFER_DATAGRAMS
    const defaultLink: DatagramLinkOptions = options.defaultLink ?? { latency: Duration.zero }
    const links = new Map<string, DatagramLinkOptions>()
    const sockets = new Map<string, SimSocket>()
    const nextPort = new Map<string, number>()
    const natsByPublic = new Map<string, NatState>()
    const natsByPrivate = new Map<string, NatState>()
    const stats = new Map<string, MutableStats>()
    const heap = new Heap()
    let groups: ReadonlyArray<ReadonlyArray<string>> | undefined
    let seq = 0
    let wake: Deferred.Deferred<void> | undefined
    /** sleepingUntil is when the delivery fiber wakes by itself; only an earlier arrival interrupts it */
    let sleepingUntil = Number.POSITIVE_INFINITY

    const statsOf = (host: string): MutableStats => {
      let entry = stats.get(host)
      if (entry === undefined) {
        entry = {
          sent: { datagrams: 0, bytes: 0 },
          received: { datagrams: 0, bytes: 0 },
          dropped: { datagrams: 0, bytes: 0 },
          sentTo: new Map(),
          receivedFrom: new Map(),
        }
        stats.set(host, entry)
      }
      return entry
    }

    /** siteOf is the host a datagram from `host` carries on the open network (its NAT's public host). */
    const siteOf = (host: string): string => natsByPrivate.get(host)?.options.publicHost ?? host
    const groupOf = (host: string): number => {
      if (groups === undefined) return 0
      const direct = groups.findIndex((group) => group.includes(host))
      if (direct >= 0 || siteOf(host) === host) return direct
      return groups.findIndex((group) => group.includes(siteOf(host)))
    }
    const reachable = (a: string, b: string): boolean => groupOf(a) === groupOf(b)
    const linkFor = (a: string, b: string): DatagramLinkOptions =>
      links.get(pairKey(a, b)) ?? links.get(pairKey(siteOf(a), siteOf(b))) ?? defaultLink
    const roll = (p: number | undefined): Effect.Effect<boolean> =>
      p === undefined || p <= 0 ? Effect.succeed(false) : Effect.map(rng.next, (x) => x < p)

    /** schedule puts one datagram on the wire after the link's delay and faults. */
    const schedule = (
      linkHosts: readonly [string, string],
      from: Endpoint,
      to: Endpoint,
      data: Uint8Array,
      lan: NatState | undefined,
    ): Effect.Effect<void> =>
      Effect.gen(function* () {
        const link = linkFor(linkHosts[0], linkHosts[1])
        if (yield* roll(link.loss)) return
        const copies = (yield* roll(link.duplicate)) ? 2 : 1
        const now = yield* netClock.currentTimeMillis
        const latency = Duration.toMillis(link.latency)
        let earliest = Number.POSITIVE_INFINITY
        for (let i = 0; i < copies; i++) {
          let delay = latency
          const jitter = link.jitter === undefined ? 0 : Duration.toMillis(link.jitter)
          if (jitter > 0) delay += (yield* rng.next) * jitter
          if (yield* roll(link.reorder)) {
            const window =
              link.reorderWindow === undefined ? Math.max(latency, 1) : Duration.toMillis(link.reorderWindow)
            delay += (yield* rng.next) * window
          }
          heap.push({ at: now + delay, seq: seq++, from, to, data: i === 0 ? data : data.slice(), lan })
          earliest = Math.min(earliest, now + delay)
        }
        // Waking the fiber early costs a stale TestClock sleep, so only an earlier arrival does.
        if (wake !== undefined && earliest < sleepingUntil) Deferred.unsafeDone(wake, Effect.void)
      })

    const permitKey = (nat: NatState, remote: Endpoint): string =>
      nat.options.type === "address-restricted" ? remote.host : endpointKey(remote)

    /** translateOut finds or makes the mapping for `source` towards `remote`, refreshes it and permits `remote`. */
    const translateOut = (nat: NatState, source: Endpoint, remote: Endpoint, now: number): Mapping => {
      const symmetric = nat.options.type === "symmetric"
      const key = symmetric ? `${endpointKey(source)}>${endpointKey(remote)}` : endpointKey(source)
      let mapping = nat.byKey.get(key)
      if (mapping !== undefined && mapping.expiresAt <= now) {
        nat.byKey.delete(key)
        nat.byPort.delete(mapping.publicPort)
        mapping = undefined
      }
      if (mapping === undefined) {
        let port = nat.nextPort
        while (nat.byPort.has(port)) port = port >= 65_535 ? 1_024 : port + 1
        nat.nextPort = port >= 65_535 ? 1_024 : port + 1
        mapping = {
          privateEndpoint: source,
          publicPort: port,
          remote: symmetric ? remote : undefined,
          permits: new Set(),
          expiresAt: 0,
        }
        nat.byKey.set(key, mapping)
        nat.byPort.set(port, mapping)
      }
      mapping.expiresAt = now + nat.timeoutMillis
      mapping.permits.add(permitKey(nat, remote))
      return mapping
    }

    /** translateIn is where a datagram from `from` to the NAT's public `port` goes inside, if anywhere. */
    const translateIn = (nat: NatState, port: number, from: Endpoint, now: number): Endpoint | undefined => {
      const mapping = nat.byPort.get(port)
      if (mapping === undefined) return undefined
      if (mapping.expiresAt <= now) {
        nat.byPort.delete(port)
        for (const [key, m] of nat.byKey) if (m === mapping) nat.byKey.delete(key)
        return undefined
      }
      if (nat.options.type !== "full-cone" && !mapping.permits.has(permitKey(nat, from))) return undefined
      if (nat.options.inboundRefreshes === true) mapping.expiresAt = now + nat.timeoutMillis
      return mapping.privateEndpoint
    }

    /** arrive hands a datagram that reached its destination address to the socket behind it, or drops it. */
    const arrive = (item: InFlight, now: number): void => {
      if (!reachable(item.from.host, item.to.host)) return
      let target: Endpoint | undefined = item.to
      const nat = natsByPublic.get(item.to.host)
      if (nat !== undefined) {
        target = translateIn(nat, item.to.port, item.from, now)
      } else {
        const privateNat = natsByPrivate.get(item.to.host)
        if (privateNat !== undefined && privateNat !== item.lan) target = undefined
      }
      if (target === undefined) return
      const socket = sockets.get(endpointKey(target))
      if (socket === undefined || socket.closed) return
      const hostStats = statsOf(target.host)
      const size = item.data.length
      if (size > MAX_DATAGRAM_BYTES || !socket.inbox.unsafeOffer({ from: item.from, data: item.data })) {
        count(hostStats.dropped, size)
        return
      }
      count(hostStats.received, size)
      countIn(hostStats.receivedFrom, item.from.host, size)
    }

    /** deliver is the network's one fiber: it hands over every datagram whose arrival time has come. */
    const deliver: Effect.Effect<never> = Effect.gen(function* () {
      const fiberId = yield* Effect.fiberId
      while (true) {
        const now = yield* netClock.currentTimeMillis
        // Synchronous from here until the wait, so no `schedule` can slip between the peek and `wake`.
        let top = heap.peek()
        while (top !== undefined && top.at <= now) {
          heap.pop()
          arrive(top, now)
          top = heap.peek()
        }
        const signal = Deferred.unsafeMake<void>(fiberId)
        wake = signal
        if (top === undefined) {
          sleepingUntil = Number.POSITIVE_INFINITY
          yield* Deferred.await(signal)
        } else {
          const millis = Math.ceil(top.at - now)
          sleepingUntil = now + millis
          yield* Effect.raceFirst(Effect.sleep(Duration.millis(millis)), Deferred.await(signal))
        }
        wake = undefined
      }
    })
    yield* Effect.forkScoped(Effect.interruptible(deliver))

    /** send is a socket's send: the too-large and closed checks, the LAN/NAT decision, then the wire. */
    const send = (socket: SimSocket, to: Endpoint, data: Uint8Array): Effect.Effect<void, DatagramError> =>
      Effect.gen(function* () {
        if (socket.closed) {
          return yield* Effect.fail(
            new DatagramError({ reason: "closed", detail: `${endpointKey(socket.local)} is closed` }),
          )
        }
        if (data.length > MAX_DATAGRAM_BYTES) {
          return yield* Effect.fail(
            new DatagramError({
              reason: "too-large",
              detail: `${data.length} bytes is over ${MAX_DATAGRAM_BYTES}`,
            }),
          )
        }
        const copy = data.slice()
        const host = socket.local.host
        const hostStats = statsOf(host)
        count(hostStats.sent, copy.length)
        countIn(hostStats.sentTo, to.host, copy.length)
        const nat = natsByPrivate.get(host)
        if (nat === undefined) return yield* schedule([host, to.host], socket.local, to, copy, undefined)
        if (natsByPrivate.get(to.host) === nat)
          return yield* schedule([host, to.host], socket.local, to, copy, nat)
        const toOwnPublic = to.host === nat.options.publicHost
        if (toOwnPublic && nat.options.hairpinning !== true) return
        const now = yield* netClock.currentTimeMillis
        const mapping = translateOut(nat, socket.local, to, now)
        const from = { host: nat.options.publicHost, port: mapping.publicPort }
        yield* schedule([host, to.host], from, to, copy, toOwnPublic ? nat : undefined)
      })

    const ephemeralPort = (host: string): number => {
      let port = nextPort.get(host) ?? 49_152
      while (sockets.has(`${host}:${port}`)) port = port >= 65_535 ? 49_152 : port + 1
      nextPort.set(host, port >= 65_535 ? 49_152 : port + 1)
      return port
    }

    const service = (host: string): DatagramService => ({
      bind: (at) =>
        Effect.acquireRelease(
          Effect.gen(function* () {
            const port = at.port === 0 ? ephemeralPort(host) : at.port
            const key = `${host}:${port}`
            if (sockets.has(key)) {
              return yield* Effect.fail(new DatagramError({ reason: "in-use", detail: `${key} is bound` }))
            }
            const inbox = yield* Mailbox.make<ReceivedDatagram>(bufferSize)
            const state: SimSocket = { local: { host, port }, inbox, closed: false }
            sockets.set(key, state)
            const close = Effect.sync(() => {
              if (state.closed) return
              state.closed = true
              sockets.delete(key)
              inbox.unsafeDone(Exit.void)
            })
            const socket: DatagramSocket = {
              local: state.local,
              send: (to, data) => send(state, to, data),
              received: Mailbox.toStream(inbox),
              close,
            }
            return socket
          }),
          (socket) => socket.close,
        ),
    })

    const addNat = (nat: NatOptions): Effect.Effect<Nat> =>
      Effect.suspend(() => {
        for (const host of [nat.publicHost, ...nat.privateHosts]) {
          if (natsByPublic.has(host) || natsByPrivate.has(host)) {
            return Effect.dieMessage(`DatagramSim.addNat: ${host} is already behind or in front of a NAT`)
          }
        }
        const state: NatState = {
          options: nat,
          timeoutMillis: Duration.toMillis(nat.mappingTimeout ?? Duration.seconds(30)),
          byKey: new Map(),
          byPort: new Map(),
          nextPort: nat.firstPort ?? 20_000,
        }
        natsByPublic.set(nat.publicHost, state)
        for (const host of nat.privateHosts) natsByPrivate.set(host, state)
        const mappings = Effect.map(netClock.currentTimeMillis, (now) =>
          [...state.byPort.values()]
            .filter((m) => m.expiresAt > now)
            .map((m) => ({
              private: m.privateEndpoint,
              public: { host: nat.publicHost, port: m.publicPort },
              remote: m.remote,
              expiresAt: m.expiresAt,
            })),
        )
        return Effect.succeed({
          publicHost: nat.publicHost,
          type: nat.type,
          privateHosts: nat.privateHosts,
          mappings,
        })
      })

    const snapshot = (host: string): HostStats => {
      const s = statsOf(host)
      const copyMap = (m: Map<string, TrafficCount>) => new Map([...m].map(([k, v]) => [k, { ...v }]))
      return {
        sent: { ...s.sent },
        received: { ...s.received },
        dropped: { ...s.dropped },
        sentTo: copyMap(s.sentTo),
        receivedFrom: copyMap(s.receivedFrom),
      }
    }

    return {
      service,
      layer: (host) => Layer.succeed(Datagrams, service(host)),
      setLink: (a, b, link) => Effect.sync(() => void links.set(pairKey(a, b), link)),
      addNat,
      partition: (next) =>
        Effect.sync(() => {
          groups = next
        }),
      heal: Effect.sync(() => {
        groups = undefined
      }),
      stats: (host) => Effect.sync(() => snapshot(host)),
      inject: (from, to, data) => schedule([from.host, to.host], from, to, data.slice(), undefined),
    }
  })
