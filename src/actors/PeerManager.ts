import {
  Chunk,
  Clock,
  Context,
  Deferred,
  Duration,
  Effect,
  Either,
  Layer,
  Option,
  Queue,
  Random,
  Schema,
  type Scope,
} from "effect"
import { type Connection, type Endpoint, Transport, TransportError } from "../layers/Transport.js"
import { UdpEndpoint } from "../layers/UdpEndpoint.js"
import { type PeerAddress, peerAddressText } from "../schema/config.js"
import { toHex } from "../schema/hex.js"
import { endpointKey, hostToBytes, isUnspecifiedHost, normalizeHost } from "../schema/netaddr.js"
import { AddrMessage, UdpAddrMessage } from "../schema/wire.js"
import * as Actor from "./Actor.js"
import { AddrBook } from "./AddrBook.js"
import { rememberEntry } from "./bounded.js"
import type { Chain } from "./Chain.js"
import { selectEviction } from "./eviction.js"
import type { Mempool } from "./Mempool.js"
import type { PeerHandle, PeerId, PeerInfo, PeerStats } from "./net.js"
import * as Peer from "./Peer.js"
import type { Relay } from "./Relay.js"
import { Rendezvous } from "./Rendezvous.js"
import { type PeerGuard, SpamFilter } from "./SpamFilter.js"
import type { Sync } from "./Sync.js"

/** NetConfig: where to listen, whom to connect to, limits and timings. */
export interface NetConfig {
  /** what every Peer says and how long it waits (nonce, static and listenPort are filled in here) */
  readonly peer: Omit<Peer.PeerOptions, "static" | "listenPort" | "nonce">
  /** undefined: accept no inbound connections */
  readonly listen: Endpoint | undefined
  /** non-empty: connect only to these (no address book); an address with a node key is a NAT'd node over UDP */
  readonly connect: ReadonlyArray<PeerAddress>
  /** extra peers kept connected (outside maxOutbound and the subnet caps) */
  readonly addnode: ReadonlyArray<PeerAddress>
  /** outbound connections chosen from the address book */
  readonly maxOutbound: number
  /**
   * outbound UDP sessions to NAT'd nodes chosen from the book's udp addresses (beside maxOutbound;
   * only with a UDP endpoint, and only to keys above ours: the lower key of a pair dials)
   */
  readonly maxOutboundUdp: number
  readonly maxInbound: number
  readonly connectTimeout: Duration.Duration
  /** a static peer that fails is retried after retryBase, doubling up to retryMax */
  readonly retryBase: Duration.Duration
  readonly retryMax: Duration.Duration
  /** how often connections are topped up */
  readonly tick: Duration.Duration
  /**
   * how often a feeler connection verifies one unverified address (a self-announcement) and hangs up
   * (Core's FEELER_INTERVAL: 2 min); only verified addresses are gossiped
   */
  readonly feelerInterval: Duration.Duration
  /** how often this node re-announces its own address to its outbound peers (Core: about daily) */
  readonly selfAnnounceInterval: Duration.Duration
}

/** PeerSummary is one connected peer for getpeerinfo. */
export interface PeerSummary {
  readonly info: PeerInfo
  readonly stats: PeerStats
}

/** NetworkError is a refused network RPC (bitcoind's codes: -23 already added, -24 not added, -29 not connected). */
export class NetworkError extends Schema.TaggedError<NetworkError>()("NetworkError", {
  code: Schema.Literal(-23, -24, -29),
  message: Schema.String,
}) {}

/** NetworkService is the PeerManager actor as the RPC and other actors see it. */
export interface NetworkService {
  /** handshaken peers, in connection order */
  readonly peers: Effect.Effect<ReadonlyArray<PeerSummary>>
  readonly connectionCount: Effect.Effect<{ readonly inbound: number; readonly outbound: number }>
  /** this node's addresses as its outbound peers see them (the public-IP echo), with the listen port */
  readonly localAddresses: Effect.Effect<ReadonlyArray<Endpoint>>
  /** the bound listen address (the actual port when configured with port 0) */
  readonly listening: Option.Option<Endpoint>
  /**
   * addNode: "add" keeps the peer connected, "remove" stops that (and disconnects it), "onetry" dials
   * once; an address with a node key is that NAT'd node, reached through its rendezvous server over UDP
   */
  readonly addNode: (
    ep: PeerAddress,
    command: "add" | "remove" | "onetry",
  ) => Effect.Effect<void, NetworkError>
  /** disconnectNode closes every connection to `ep` (for a UDP address: the one dialled as it) */
  readonly disconnectNode: (ep: PeerAddress) => Effect.Effect<void, NetworkError>
  /** disconnectWhere closes every connection whose remote host passes `test` (a new ban's peers); answers how many */
  readonly disconnectWhere: (test: (host: string) => boolean, reason: string) => Effect.Effect<number>
}

export class Network extends Context.Tag("fibercoin/Network")<Network, NetworkService>() {}

// ---------------------------------------------------------------------------------------------------

/** MAX_PUNCHED_BY bounds the memory of who punched to us. */
const MAX_PUNCHED_BY = 1_024

/** Target is a configured peer (connect/addnode/onetry) and its retry schedule. */
interface Target {
  readonly ep: PeerAddress
  readonly key: string
  readonly once: boolean
  failures: number
  nextAttempt: number
  /** the connection serving it, if any (dialling or connected) */
  peer: PeerId | undefined
}

/** Conn is one connection from its dial/accept to its close. */
interface Conn {
  readonly id: PeerId
  readonly inbound: boolean
  /** the dialled address (outbound) or the remote address (inbound) */
  readonly ep: Endpoint
  readonly key: string
  readonly static: boolean
  /** a feeler: connects, verifies the address, hangs up */
  readonly feeler: boolean
  /** over UDP: dialled through a rendezvous server (`ep` is the server) or an inbound session */
  readonly udp: boolean
  /** the dialled NAT'd node's key (outbound over UDP) */
  readonly nodeKey: Uint8Array | undefined
  /** an inbound UDP session's remote session key (who punched to us names its node key: `punchedBy`) */
  readonly sessionKey: Uint8Array | undefined
  readonly nonce: bigint
  handle: PeerHandle | undefined
}

interface State {
  readonly conns: Map<PeerId, Conn>
  readonly targets: Map<string, Target>
  /** addresses that turned out to be this node */
  readonly self: Set<string>
  /** public-IP echo votes: host → outbound peers that saw us there */
  readonly votes: Map<string, number>
  nextId: number
  /** Clock ms of the next feeler and the next self-announcement */
  nextFeeler: number
  nextAnnounce: number
  /** the udp addresses last announced to every peer (server list); a change is announced again */
  announcedUdp: string
  /**
   * node keys of the nodes that punched to us, by their session key (hex → hex; the last 1,024): an
   * inbound UDP session is from that node, so gossip of its address does not make us dial it again
   */
  readonly punchedBy: Map<string, string>
}

type Command =
  | { readonly _tag: "Tick" }
  | { readonly _tag: "Inbound"; readonly conn: Connection }
  | { readonly _tag: "Ready"; readonly peer: PeerHandle; readonly reply: Deferred.Deferred<boolean> }
  | {
      readonly _tag: "Closed"
      readonly id: PeerId
      readonly reason: string
      readonly dialError: TransportError | undefined
    }
  | {
      readonly _tag: "RelayAddr"
      readonly from: PeerId
      readonly message: AddrMessage | UdpAddrMessage
    }
  | {
      readonly _tag: "AddNode"
      readonly ep: PeerAddress
      readonly command: "add" | "remove" | "onetry"
      readonly reply: Deferred.Deferred<void, NetworkError>
    }
  | {
      readonly _tag: "Disconnect"
      readonly ep: PeerAddress
      readonly reply: Deferred.Deferred<void, NetworkError>
    }
  | {
      readonly _tag: "DisconnectWhere"
      readonly test: (host: string) => boolean
      readonly reason: string
      readonly reply: Deferred.Deferred<number>
    }
  | { readonly _tag: "PunchedBy"; readonly sessionKey: Uint8Array; readonly nodeKey: Uint8Array }
  | { readonly _tag: "Peers"; readonly reply: Deferred.Deferred<ReadonlyArray<PeerHandle>> }
  | { readonly _tag: "Local"; readonly reply: Deferred.Deferred<ReadonlyArray<Endpoint>> }

const randomNonce = Effect.zipWith(
  Random.nextIntBetween(0, 2 ** 30),
  Random.nextIntBetween(0, 2 ** 30),
  (a, b) => (BigInt(a) << 30n) | BigInt(b) | 1n,
)

/**
 * make starts the PeerManager: it listens (when configured), keeps the configured peers connected
 * with exponential backoff, fills `maxOutbound` from the address book under its subnet caps, admits
 * inbound connections up to `maxInbound` (evicting Core-style when full), and runs one Peer actor per
 * connection in its own fiber, so one peer's failure or slowness never touches another's.
 */
export const make = (config: NetConfig) =>
  Effect.gen(function* () {
    const transport = yield* Transport
    const addrBook = yield* AddrBook
    const spam = yield* SpamFilter
    /** the node's UDP side, when it has one: sessions to accept, and the Rendezvous to dial NAT'd nodes through */
    const udp = yield* Effect.serviceOption(UdpEndpoint)
    const rendezvous = yield* Effect.serviceOption(Rendezvous)
    const scope = yield* Effect.scope
    const context = yield* Effect.context<Chain | Mempool | Sync | Relay | AddrBook>()
    const listener = config.listen === undefined ? undefined : yield* transport.listen(config.listen)
    const listening = Option.fromNullable(listener?.local)
    const listenPort = listener?.local.port ?? 0
    /** nonces of our live connections: a version carrying one is ourselves */
    const nonces = new Set<bigint>()
    /**
     * nonces of our outbound connections whose version reached one of our own inbound connections:
     * the inbound side hangs up with "connected to self", the dialled address is ours (never redialled)
     */
    const selfNonces = new Set<bigint>()

    // the actor is referenced by the fibers it starts; it is assigned right below
    let actor: Actor.Actor<Command>

    const now = Clock.currentTimeMillis

    const hooks = (nonce: bigint): Peer.PeerHooks => ({
      isOwnNonce: (n) => {
        if (n === nonce || !nonces.has(n)) return false
        selfNonces.add(n)
        return true
      },
      ready: (peer) => Actor.ask(actor, (reply): Command => ({ _tag: "Ready", peer, reply })),
      relayAddr: (from, message) => actor.send({ _tag: "RelayAddr", from: from.info.id, message }),
    })

    const peerOptions = (conn: Conn): Peer.PeerOptions => ({
      ...config.peer,
      static: conn.static,
      listenPort,
      nonce: conn.nonce,
    })

    /** startPeer forks the connection's fiber into the manager's scope; it reports its end as Closed. */
    const startPeer = (
      conn: Conn,
      guard: PeerGuard,
      connect: Effect.Effect<Connection, TransportError, Scope.Scope>,
    ) =>
      Effect.gen(function* () {
        nonces.add(conn.nonce)
        const body = Effect.scoped(
          Effect.flatMap(connect, (c) =>
            Peer.run(conn.id, c, peerOptions(conn), hooks(conn.nonce), guard).pipe(Effect.ensuring(c.close)),
          ),
        ).pipe(Effect.ensuring(guard.release))
        yield* body.pipe(
          Effect.either,
          Effect.flatMap((r) =>
            actor.send({
              _tag: "Closed",
              id: conn.id,
              reason: Either.isRight(r) ? r.right : r.left.message,
              dialError: Either.isLeft(r) ? r.left : undefined,
            }),
          ),
          Effect.provide(context),
          // forked from the actor's uninterruptible handler: without this the fiber would inherit that
          // and could never be interrupted, so closing the node would wait for the peer forever
          Effect.interruptible,
          Effect.forkIn(scope),
        )
      })

    /**
     * punchAndConnect reaches a NAT'd node over UDP: the rendezvous `server` introduces us to the node
     * with key `nodeKey`, both sides punch, then a UDP session opens to the punched endpoint.
     */
    const punchAndConnect = (server: Endpoint, nodeKey: Uint8Array) =>
      Effect.gen(function* () {
        if (Option.isNone(udp) || Option.isNone(rendezvous))
          return yield* new TransportError({ reason: "unreachable", detail: "this node has no UDP endpoint" })
        const punched = yield* rendezvous.value
          .connect(server, nodeKey)
          .pipe(Effect.mapError((e) => new TransportError({ reason: "unreachable", detail: e.message })))
        if (punched._tag === "Failed")
          return yield* new TransportError({
            reason: "unreachable",
            detail: `hole punching failed: ${punched.reason}`,
          })
        return yield* udp.value.sessions.connect({
          remote: punched.remote,
          remotePublicKey: punched.sessionKey,
        })
      })

    /**
     * dial starts an outbound connection: over TCP to `ep`, or with `viaUdp` (a node key) over UDP to
     * that NAT'd node through the rendezvous server `ep`. Undefined when the spam filter refuses the
     * address (banned).
     */
    const dial = (state: State, ep: Endpoint, isStatic: boolean, feeler = false, viaUdp?: Uint8Array) =>
      Effect.gen(function* () {
        const admission = yield* spam.admit(ep, "outbound", isStatic)
        if (admission._tag === "Refused") {
          yield* Effect.logDebug(`not dialling ${endpointKey(ep)}: ${admission.reason}`)
          return undefined
        }
        const conn: Conn = {
          id: state.nextId++,
          inbound: false,
          ep,
          key: peerAddressText(viaUdp === undefined ? ep : { ...ep, nodeKey: viaUdp }),
          static: isStatic,
          feeler,
          udp: viaUdp !== undefined,
          nodeKey: viaUdp,
          sessionKey: undefined,
          nonce: yield* randomNonce,
          handle: undefined,
        }
        state.conns.set(conn.id, conn)
        if (!isStatic)
          yield* viaUdp === undefined ? addrBook.markAttempt(ep) : addrBook.markUdpAttempt(viaUdp)
        yield* Effect.logDebug(`dialling ${conn.key}`)
        const connect =
          viaUdp === undefined
            ? transport.connect(ep).pipe(
                Effect.timeoutFail({
                  duration: config.connectTimeout,
                  onTimeout: () =>
                    new TransportError({ reason: "timeout", detail: `connect to ${conn.key} timed out` }),
                }),
              )
            : punchAndConnect(ep, viaUdp)
        yield* startPeer(conn, admission.guard, connect)
        return conn.id
      })

    /** busyKeys: addresses not to dial: connected or being dialled (remote endpoints, dialled targets, inbound peers' listen addresses), ourselves. */
    const busyKeys = (state: State) => {
      const keys = new Set<string>(state.self)
      for (const c of state.conns.values()) {
        keys.add(c.key)
        if (c.handle === undefined) continue
        keys.add(endpointKey(c.handle.info.addr))
        // an inbound peer's own listening address: one connection per pair of nodes is enough
        if (c.inbound && c.handle.info.listenPort > 0)
          keys.add(endpointKey({ host: c.handle.info.addr.host, port: c.handle.info.listenPort }))
      }
      if (listener !== undefined) keys.add(endpointKey(listener.local))
      return keys
    }

    /** feelers dials one unverified address per feelerInterval, even one connected inbound (that is how a self-announcement gets verified). */
    const feelers = (state: State, t: number) =>
      Effect.gen(function* () {
        if (t < state.nextFeeler) return
        state.nextFeeler = t + Duration.toMillis(config.feelerInterval)
        if ([...state.conns.values()].some((c) => c.feeler)) return
        const exclude = new Set<string>(state.self)
        for (const c of state.conns.values()) if (!c.inbound) exclude.add(c.key)
        if (listener !== undefined) exclude.add(endpointKey(listener.local))
        const pick = yield* addrBook.selectFeeler(exclude)
        if (Option.isSome(pick)) yield* dial(state, pick.value, false, true)
      })

    /** announceSelf sends one outbound peer our address as it sees us (its public-IP echo) with our listen port. */
    const announceSelf = (peer: PeerHandle) =>
      Effect.gen(function* () {
        const seen = normalizeHost(peer.info.theirView.host)
        const host = hostToBytes(seen)
        if (listener === undefined || host === undefined || isUnspecifiedHost(seen)) return
        const time = Math.floor((yield* now) / 1000)
        yield* peer.send(
          new AddrMessage({ entries: [{ time, services: config.peer.services, host, port: listenPort }] }),
        )
        const udpEntries = yield* udpSelf(time)
        if (udpEntries.length > 0) yield* peer.send(new UdpAddrMessage({ entries: udpEntries }))
      })

    /** reannounce repeats the self-announcement to every outbound peer once per selfAnnounceInterval. */
    const reannounce = (state: State, t: number) =>
      Effect.gen(function* () {
        if (t < state.nextAnnounce) return
        state.nextAnnounce = t + Duration.toMillis(config.selfAnnounceInterval)
        for (const c of state.conns.values()) {
          if (!c.inbound && !c.feeler && c.handle !== undefined) yield* announceSelf(c.handle)
        }
      })

    const tick = (state: State) =>
      Effect.gen(function* () {
        const t = yield* now
        for (const target of state.targets.values()) {
          if (target.peer !== undefined || t < target.nextAttempt) continue
          if (state.self.has(target.key)) continue
          target.peer = yield* dial(state, target.ep, true, false, target.ep.nodeKey)
        }
        yield* announceUdp(state, t)
        if (config.connect.length > 0) return
        yield* feelers(state, t)
        yield* reannounce(state, t)
        const outbound = [...state.conns.values()].filter(
          (c) => !c.inbound && !c.static && !c.feeler && !c.udp,
        )
        let missing = config.maxOutbound - outbound.length
        const current = outbound.map((c) => c.ep)
        const busy = busyKeys(state)
        while (missing > 0) {
          const pick = yield* addrBook.select(current, busy)
          if (Option.isNone(pick)) break
          busy.add(endpointKey(pick.value))
          current.push(pick.value)
          yield* dial(state, pick.value, false)
          missing--
        }
        yield* fillUdp(state)
      })

    /**
     * fillUdp keeps maxOutboundUdp sessions to NAT'd nodes from the book's udp addresses (dialled
     * through their rendezvous servers), skipping ourselves and nodes connected or being dialled.
     */
    const fillUdp = (state: State) =>
      Effect.gen(function* () {
        if (Option.isNone(udp) || Option.isNone(rendezvous)) return
        const ownKey = udp.value.nodeKey
        const exclude = new Set<string>([toHex(ownKey)])
        let have = 0
        for (const c of state.conns.values()) {
          const punched = c.sessionKey === undefined ? undefined : state.punchedBy.get(toHex(c.sessionKey))
          if (punched !== undefined) exclude.add(punched)
          if (c.nodeKey === undefined) continue
          exclude.add(toHex(c.nodeKey))
          if (!c.static) have++
        }
        for (const t of state.targets.values())
          if (t.ep.nodeKey !== undefined) exclude.add(toHex(t.ep.nodeKey))
        while (have < config.maxOutboundUdp) {
          const pick = yield* addrBook.selectUdp(exclude, ownKey)
          if (Option.isNone(pick) || pick.value.nodeKey === undefined) break
          exclude.add(toHex(pick.value.nodeKey))
          yield* dial(state, pick.value, false, false, pick.value.nodeKey)
          have++
        }
      })

    /** udpSelf is this node's udp addresses (its key at each rendezvous server it is registered at), for gossip. */
    const udpSelf = (time: number) =>
      Effect.gen(function* () {
        if (Option.isNone(udp)) return []
        const nat = yield* udp.value.nat
        return nat.registeredAt.flatMap((server) => {
          const host = hostToBytes(server.host)
          return host === undefined || isUnspecifiedHost(server.host)
            ? []
            : [{ time, services: config.peer.services, nodeKey: udp.value.nodeKey, host, port: server.port }]
        })
      })

    /**
     * announceUdp tells every connected peer our udp addresses when our registrations changed (the NAT
     * probe and registration finish some time after start, usually after the first peers connected).
     */
    const announceUdp = (state: State, t: number) =>
      Effect.gen(function* () {
        const entries = yield* udpSelf(Math.floor(t / 1000))
        const signature = entries.map((e) => `${toHex(e.host)}:${e.port}`).join(",")
        if (signature === state.announcedUdp) return
        state.announcedUdp = signature
        if (entries.length === 0) return
        for (const c of state.conns.values()) {
          if (!c.feeler && c.handle !== undefined) yield* c.handle.send(new UdpAddrMessage({ entries }))
        }
      })

    const inboundCount = (state: State) => [...state.conns.values()].filter((c) => c.inbound).length

    /** evictInbound frees an inbound slot by Core's eviction rule; false when every peer is protected. */
    const evictInbound = (state: State) =>
      Effect.gen(function* () {
        const candidates = []
        for (const c of state.conns.values()) {
          if (!c.inbound || c.static || c.handle === undefined) continue
          const s = yield* c.handle.stats
          candidates.push({
            id: c.id,
            host: c.handle.info.addr.host,
            connectedAt: c.handle.info.connectedAt,
            pingMs: s.pingMs,
            lastBlockAt: s.lastBlockAt,
            lastTxAt: s.lastTxAt,
          })
        }
        const victim = selectEviction(candidates)
        if (victim === undefined) return false
        const c = state.conns.get(victim)!
        yield* c.handle!.disconnect("evicted to make room for a new inbound peer")
        // its fiber reports Closed later (then ignored); the slot is counted free now
        state.conns.delete(victim)
        nonces.delete(c.nonce)
        return true
      })

    const onInbound = (state: State, inbound: Connection) =>
      Effect.gen(function* () {
        const admission = yield* spam.admit(inbound.remote, "inbound", false)
        if (admission._tag === "Refused") {
          yield* Effect.logDebug(`inbound from ${endpointKey(inbound.remote)} refused: ${admission.reason}`)
          return yield* inbound.abort
        }
        if (inboundCount(state) >= config.maxInbound && !(yield* evictInbound(state))) {
          yield* Effect.logDebug(`inbound from ${endpointKey(inbound.remote)} refused: no free slot`)
          yield* admission.guard.release
          return yield* inbound.close
        }
        const conn: Conn = {
          id: state.nextId++,
          inbound: true,
          ep: inbound.remote,
          key: endpointKey(inbound.remote),
          static: false,
          feeler: false,
          udp: inbound.transport === "udp",
          nodeKey: undefined,
          sessionKey: inbound.remotePublicKey,
          nonce: yield* randomNonce,
          handle: undefined,
        }
        state.conns.set(conn.id, conn)
        yield* startPeer(conn, admission.guard, Effect.succeed(inbound))
      })

    const onReady = (state: State, peer: PeerHandle) =>
      Effect.gen(function* () {
        const conn = state.conns.get(peer.info.id)
        if (conn === undefined) return false // evicted or removed meanwhile
        // a configured peer whose target went (addnode remove) while it was still connecting
        if (conn.static && ![...state.targets.values()].some((t) => t.peer === conn.id)) return false
        if (conn.feeler) {
          // the address answered a handshake: verified, now gossipable; the feeler's work is done
          yield* addrBook.markGood(conn.ep, peer.info.services)
          yield* Effect.logDebug(`feeler: ${conn.key} verified`)
          return false
        }
        conn.handle = peer
        const info = peer.info
        yield* Effect.logInfo(
          `peer ${info.id} connected: ${conn.key} ${info.inbound ? "inbound" : "outbound"} ${info.subver} height ${info.startingHeight}`,
        )
        if (!info.inbound) {
          const target = state.targets.get(conn.key)
          if (target !== undefined) target.failures = 0
          if (!conn.static && !conn.udp) yield* addrBook.markGood(conn.ep, info.services)
          if (conn.nodeKey !== undefined) yield* addrBook.markUdpGood(conn.nodeKey)
          const seen = normalizeHost(info.theirView.host)
          if (!isUnspecifiedHost(seen)) state.votes.set(seen, (state.votes.get(seen) ?? 0) + 1)
          // self-announcement: our address as this peer sees it, verified by whoever dials it back
          yield* announceSelf(peer)
        } else if (info.listenPort > 0 && !conn.udp) {
          // (a UDP peer's host is its NAT's: its TCP listen port is not reachable there)
          yield* addrBook.addSelfAnnounced(info)
        }
        return true
      })

    const onClosed = (state: State, id: PeerId, reason: string, dialError: TransportError | undefined) =>
      Effect.gen(function* () {
        const conn = state.conns.get(id)
        state.conns.delete(id)
        if (conn === undefined) return
        nonces.delete(conn.nonce)
        // the inbound end saw this outbound connection's nonce: the dialled address is this node
        // (the inbound end's own key is just our ephemeral port)
        if (selfNonces.delete(conn.nonce) && !conn.inbound) {
          state.self.add(conn.key)
          yield* Effect.logInfo(`${conn.key} is this node (connected to self): not dialled again`)
        }
        if (conn.handle !== undefined) {
          yield* Effect.logInfo(`peer ${id} disconnected: ${conn.key}: ${reason}`)
          const seen = normalizeHost(conn.handle.info.theirView.host)
          if (!conn.inbound && state.votes.has(seen)) {
            const left = state.votes.get(seen)! - 1
            if (left > 0) state.votes.set(seen, left)
            else state.votes.delete(seen)
          }
        } else if (dialError !== undefined) {
          yield* Effect.logDebug(`dial ${conn.key} failed: ${reason}`)
        }
        const target = [...state.targets.values()].find((t) => t.peer === id)
        if (target === undefined) return
        target.peer = undefined
        if (target.once) {
          state.targets.delete(target.key)
          return
        }
        if (conn.handle === undefined) target.failures++
        const backoff = Math.min(
          Duration.toMillis(config.retryBase) * 2 ** Math.min(target.failures, 20),
          Duration.toMillis(config.retryMax),
        )
        target.nextAttempt =
          (yield* now) + (conn.handle === undefined ? backoff : Duration.toMillis(config.retryBase))
      })

    const relayAddr = (state: State, from: PeerId, message: AddrMessage | UdpAddrMessage) =>
      Effect.gen(function* () {
        const others = [...state.conns.values()].filter((c) => c.id !== from && c.handle !== undefined)
        const chosen = Chunk.toReadonlyArray(yield* Random.shuffle(others)).slice(0, 2)
        for (const c of chosen) yield* c.handle!.send(message)
      })

    const addNode = (state: State, ep: PeerAddress, command: "add" | "remove" | "onetry") =>
      Effect.gen(function* () {
        if (ep.nodeKey !== undefined && (Option.isNone(udp) || Option.isNone(rendezvous)))
          return yield* new NetworkError({ code: -29, message: "this node has no UDP endpoint" })
        const key = peerAddressText(ep)
        const target = state.targets.get(key)
        if (command === "add") {
          if (target !== undefined && !target.once)
            return yield* new NetworkError({ code: -23, message: `Error: Node ${key} already added` })
          state.targets.set(key, { ep, key, once: false, failures: 0, nextAttempt: 0, peer: target?.peer })
          return yield* tick(state)
        }
        if (command === "onetry") {
          if (target === undefined) {
            state.targets.set(key, { ep, key, once: true, failures: 0, nextAttempt: 0, peer: undefined })
            yield* tick(state)
          }
          return
        }
        if (target === undefined || target.once)
          return yield* new NetworkError({ code: -24, message: `Error: Node ${key} has not been added` })
        state.targets.delete(key)
        if (target.peer !== undefined)
          yield* disconnectConn(state, target.peer, "removed with addnode remove")
      })

    const disconnectConn = (state: State, id: PeerId, reason: string) =>
      Effect.gen(function* () {
        const conn = state.conns.get(id)
        if (conn?.handle !== undefined) yield* conn.handle.disconnect(reason)
      })

    const disconnectNode = (state: State, ep: PeerAddress) =>
      Effect.gen(function* () {
        const key = peerAddressText(ep)
        const matching = [...state.conns.values()].filter(
          (c) => c.handle !== undefined && (c.key === key || endpointKey(c.handle.info.addr) === key),
        )
        if (matching.length === 0)
          return yield* new NetworkError({ code: -29, message: `Node ${key} not found in connected nodes` })
        for (const c of matching) yield* c.handle!.disconnect("disconnectnode")
      })

    const localAddresses = (state: State): ReadonlyArray<Endpoint> => {
      if (listener === undefined) return []
      const voted = [...state.votes.entries()]
        .sort((a, b) => b[1] - a[1])
        .map(([host]) => ({ host, port: listenPort }))
      if (voted.length > 0) return voted
      return isUnspecifiedHost(listener.local.host)
        ? []
        : [{ host: normalizeHost(listener.local.host), port: listenPort }]
    }

    const handle = (state: State, cmd: Command): Effect.Effect<State> => {
      switch (cmd._tag) {
        case "Tick":
          return Effect.as(tick(state), state)
        case "Inbound":
          return Effect.as(onInbound(state, cmd.conn), state)
        case "Ready":
          return onReady(state, cmd.peer).pipe(
            Effect.flatMap((ok) => Deferred.succeed(cmd.reply, ok)),
            Effect.as(state),
          )
        case "Closed":
          return Effect.as(onClosed(state, cmd.id, cmd.reason, cmd.dialError), state)
        case "RelayAddr":
          return Effect.as(relayAddr(state, cmd.from, cmd.message), state)
        case "AddNode":
          return addNode(state, cmd.ep, cmd.command).pipe(
            Effect.exit,
            Effect.flatMap((exit) => Deferred.done(cmd.reply, exit)),
            Effect.as(state),
          )
        case "Disconnect":
          return disconnectNode(state, cmd.ep).pipe(
            Effect.exit,
            Effect.flatMap((exit) => Deferred.done(cmd.reply, exit)),
            Effect.as(state),
          )
        case "DisconnectWhere":
          return Effect.gen(function* () {
            let n = 0
            for (const c of state.conns.values()) {
              if (c.handle === undefined || !cmd.test(c.handle.info.addr.host)) continue
              yield* c.handle.disconnect(cmd.reason)
              n++
            }
            yield* Deferred.succeed(cmd.reply, n)
            return state
          })
        case "PunchedBy":
          return Effect.sync(() => {
            rememberEntry(state.punchedBy, toHex(cmd.sessionKey), toHex(cmd.nodeKey), MAX_PUNCHED_BY)
            return state
          })
        case "Peers":
          return Deferred.succeed(
            cmd.reply,
            [...state.conns.values()].flatMap((c) => (c.handle === undefined ? [] : [c.handle])),
          ).pipe(Effect.as(state))
        case "Local":
          return Deferred.succeed(cmd.reply, localAddresses(state)).pipe(Effect.as(state))
      }
    }

    const targets = new Map<string, Target>()
    for (const ep of config.connect.length > 0 ? config.connect : config.addnode) {
      const key = peerAddressText(ep)
      targets.set(key, { ep, key, once: false, failures: 0, nextAttempt: 0, peer: undefined })
    }
    actor = yield* Actor.make<Command, State, never, never>({
      name: "peer-manager",
      capacity: 1024,
      // a restart forgets connections (their fibers still report Closed, which is then ignored)
      initial: Effect.sync(() => ({
        conns: new Map(),
        targets: new Map([...targets].map(([k, t]) => [k, { ...t }])),
        self: new Set(),
        votes: new Map(),
        nextId: 1,
        nextFeeler: 0,
        nextAnnounce: 0,
        announcedUdp: "",
        punchedBy: new Map(),
      })),
      handle,
    })

    if (listener !== undefined) {
      yield* Effect.logInfo(`listening for peers on ${endpointKey(listener.local)}`)
      yield* Effect.forkScoped(
        Effect.forever(
          Effect.flatMap(Queue.take(listener.accepted), (conn) => actor.send({ _tag: "Inbound", conn })),
        ),
      )
    }
    yield* Effect.forkScoped(
      Effect.forever(Effect.zipRight(actor.send({ _tag: "Tick" }), Effect.sleep(config.tick))),
    )
    // UDP sessions others opened to us are inbound connections like TCP ones (admission, caps, eviction)
    if (Option.isSome(udp)) {
      const accepted = udp.value.sessions.accepted
      yield* Effect.forkScoped(
        Effect.forever(Effect.flatMap(Queue.take(accepted), (conn) => actor.send({ _tag: "Inbound", conn }))),
      )
    }
    // who punched to us (the server's introduction names their node key): their sessions are theirs
    if (Option.isSome(rendezvous)) {
      const incoming = rendezvous.value.incoming
      yield* Effect.forkScoped(
        Effect.forever(
          Effect.flatMap(Queue.take(incoming), (r) =>
            r._tag === "Punched"
              ? actor.send({ _tag: "PunchedBy", sessionKey: r.sessionKey, nodeKey: r.nodeKey })
              : Effect.void,
          ),
        ),
      )
    }

    const service: NetworkService = {
      peers: Effect.gen(function* () {
        const handles = yield* Actor.ask<Command, ReadonlyArray<PeerHandle>, never>(actor, (reply) => ({
          _tag: "Peers",
          reply,
        }))
        return yield* Effect.forEach(handles, (h) =>
          Effect.map(h.stats, (stats) => ({ info: h.info, stats })),
        )
      }),
      connectionCount: Effect.map(
        Actor.ask<Command, ReadonlyArray<PeerHandle>, never>(actor, (reply) => ({ _tag: "Peers", reply })),
        (handles) => ({
          inbound: handles.filter((h) => h.info.inbound).length,
          outbound: handles.filter((h) => !h.info.inbound).length,
        }),
      ),
      localAddresses: Actor.ask(actor, (reply): Command => ({ _tag: "Local", reply })),
      listening,
      addNode: (ep, command) =>
        Actor.ask(actor, (reply): Command => ({ _tag: "AddNode", ep, command, reply })),
      disconnectNode: (ep) => Actor.ask(actor, (reply): Command => ({ _tag: "Disconnect", ep, reply })),
      disconnectWhere: (test, reason) =>
        Actor.ask(actor, (reply): Command => ({ _tag: "DisconnectWhere", test, reason, reply })),
    }
    return service
  })

/** layer provides the Network service: the PeerManager and, through it, every Peer actor. */
export const layer = (
  config: NetConfig,
): Layer.Layer<Network, TransportError, Transport | Chain | Mempool | Sync | Relay | AddrBook | SpamFilter> =>
  Layer.scoped(Network, make(config))
