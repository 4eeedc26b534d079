import * as crypto from "node:crypto"
import {
  Clock,
  Context,
  Data,
  Deferred,
  Duration,
  Effect,
  Either,
  Layer,
  Queue,
  Random,
  Schema,
  type Scope,
  Stream,
} from "effect"
import { taggedHash } from "../consensus/hash.js"
import {
  type DatagramError,
  type DatagramSocket,
  Datagrams,
  type ReceivedDatagram,
} from "../layers/Datagram.js"
import { Entropy } from "../layers/Entropy.js"
import { Signatures } from "../layers/Signatures.js"
import type { Endpoint } from "../layers/Transport.js"
import { endpointKey, isUnspecifiedHost, normalizeHost } from "../schema/netaddr.js"
import {
  COOKIE_BYTES,
  CookieChallenge,
  decodeRendezvous,
  EchoReply,
  EchoRequest,
  encodeRendezvous,
  FLAG_SYMMETRIC_NAT,
  type Identity,
  IntroduceRequest,
  Introduction,
  NO_COOKIE,
  Punch,
  PunchAck,
  Refused,
  type RefusedReason,
  Registered,
  RegisterRequest,
  type RendezvousMessage,
} from "../schema/rendezvous.js"
import * as Actor from "./Actor.js"
import { SpamFilter } from "./SpamFilter.js"
import { Misbehavior } from "./spamPolicy.js"

/**
 * Rendezvous is the NAT-traversal actor on a node's UDP port (issue 8). As a server (a node reachable
 * from outside) it answers echo (STUN-like: the endpoint it sees a sender at), keeps signed
 * registrations of NAT'd nodes, and introduces one registered node to another. As a client it learns
 * its public endpoint and NAT kind, keeps its registrations alive (so the NAT mapping stays open), asks
 * for introductions and punches holes: both sides probe each other's endpoint with a nonce until each
 * has seen its own nonce echoed back.
 *
 * Its input is "a datagram (from, bytes)" (`receive`) and its output "send(to, bytes)", so it can own a
 * socket (`layer`) or sit behind the UDP session demux (`make` with that demux's send).
 *
 * The server is no amplifier (the attack: spoof a victim's address and have us flood it): a source
 * proves it receives by echoing a stateless cookie (HMAC of its endpoint and a coarse time window
 * under a server secret, as DTLS's HelloVerifyRequest and QUIC's Retry) before anything larger than
 * its request is sent to it; every request is at least as large as the cookie challenge. Each request
 * passes the SpamFilter's datagram admission first (a banned IP is not answered; one IP's requests
 * are limited by its `datagrams` bucket), a bad signature from a source that proved its address is
 * scored against its IP like a peer's misbehaviour, and registrations are capped per IP and in total.
 */

// ---------------------------------------------------------------------------------------------------
// Config

/** RendezvousLimits: the server's caps and the client's timers. */
export interface RendezvousLimits {
  /** registrations kept at once; a new one beyond it is refused (`registrations-full`) */
  readonly maxRegistrations: number
  /** registrations from one IP (many nodes may share a NAT, few honest ones do); beyond it `ip-registrations-full` */
  readonly maxRegistrationsPerIp: number
  /** a registration not refreshed for this long is dropped */
  readonly registrationTtl: Duration.Duration
  /** a client refreshes its registrations this often (below common NAT UDP mapping timeouts of 30 s and up) */
  readonly keepaliveInterval: Duration.Duration
  /** a signed timestamp further than this from the server's clock is refused (`stale-timestamp`) */
  readonly maxClockSkew: Duration.Duration
  /** cookies are valid in the window they were made in and the next one */
  readonly cookieWindow: Duration.Duration
  /** a request unanswered this long is sent again, the wait doubling each time */
  readonly requestRetry: Duration.Duration
  /** sends of one request before it fails with `timeout` */
  readonly requestAttempts: number
  /** the first wait between punch probes, doubling after each round */
  readonly punchInterval: Duration.Duration
  /** rounds of punch probes before punching fails (bounded: never retried forever) */
  readonly punchAttempts: number
  /** after a punch ends, the peer's probes are still answered for this long (it may not have seen its nonce yet) */
  readonly punchLinger: Duration.Duration
}

export const defaultRendezvousLimits: RendezvousLimits = {
  maxRegistrations: 10_000,
  maxRegistrationsPerIp: 4,
  registrationTtl: Duration.seconds(90),
  keepaliveInterval: Duration.seconds(20),
  maxClockSkew: Duration.minutes(10),
  cookieWindow: Duration.seconds(30),
  requestRetry: Duration.millis(500),
  requestAttempts: 4,
  punchInterval: Duration.millis(200),
  punchAttempts: 7,
  punchLinger: Duration.seconds(30),
}

/** RendezvousConfig: who this node is, which servers it uses, and whether it serves others. */
export interface RendezvousConfig {
  /** the node's identity key (BIP340 secret key, 32 bytes); its x-only public key is the node key */
  readonly nodeSecretKey: Uint8Array
  /** the UDP session layer's X25519 public key (32 bytes), handed to the peers we are introduced to */
  readonly sessionPublicKey: Uint8Array
  /** rendezvous servers (`rendezvous` in node.json) */
  readonly servers: ReadonlyArray<Endpoint>
  /**
   * answer echo, register and introduce from others (a node reachable from outside) from the start;
   * `setServing` switches it later (a node whose NAT probe says it is reachable)
   */
  readonly serve: boolean
  readonly limits: RendezvousLimits
}

// ---------------------------------------------------------------------------------------------------
// Results and errors

/**
 * RendezvousError: a request was not answered in its bounded retries (`timeout`), the server refused
 * it (`refused`, `detail` is the wire reason, e.g. `unknown-target`), or there is no server to ask.
 */
export class RendezvousError extends Schema.TaggedError<RendezvousError>()("RendezvousError", {
  reason: Schema.Literal("timeout", "refused", "no-servers"),
  detail: Schema.String,
}) {
  override get message(): string {
    return `rendezvous ${this.reason}: ${this.detail}`
  }
}

/** NatKind: `open` (seen at our local endpoint), `cone` (one public endpoint for every server), `symmetric` (one per server). */
export type NatKind = "open" | "cone" | "symmetric"

/** NatReport is what echo against every server told us. */
export interface NatReport {
  readonly local: Endpoint
  readonly observed: ReadonlyArray<{ readonly server: Endpoint; readonly observed: Endpoint }>
  readonly kind: NatKind
}

/** Registration is a server's confirmation: the endpoint it keeps us under and for how long. */
export interface Registration {
  readonly server: Endpoint
  readonly observed: Endpoint
  readonly ttlSeconds: number
}

/** PunchFailure: `symmetric-nat` (either side maps per destination), `timeout` (no echo in the bounded rounds). */
export type PunchFailure = "symmetric-nat" | "timeout"

/** PunchResult is how hole punching to a peer ended. */
export type PunchResult = Data.TaggedEnum<{
  /** both paths are open: `remote` is where the peer's echo of our nonce came from */
  Punched: { readonly nodeKey: Uint8Array; readonly remote: Endpoint; readonly sessionKey: Uint8Array }
  Failed: { readonly nodeKey: Uint8Array; readonly reason: PunchFailure }
}>
export const PunchResult = Data.taggedEnum<PunchResult>()

/** RendezvousService is the Rendezvous actor's handle. */
export interface RendezvousService {
  /** nodeKey is this node's x-only public key, what others ask introductions to */
  readonly nodeKey: Uint8Array
  /** local is the UDP endpoint the actor sends from */
  readonly local: Endpoint
  /**
   * receive hands the actor one datagram (from its socket or the session demux). It never waits: when
   * the mailbox is full, or the source IP already has its share of it queued, the datagram is dropped,
   * as the network would drop it
   */
  readonly receive: (datagram: ReceivedDatagram) => Effect.Effect<void>
  /** echo asks `server` which endpoint it sees us at (cookie round trip included) */
  readonly echo: (server: Endpoint) => Effect.Effect<Endpoint, RendezvousError>
  /**
   * probeNat echoes against every configured server and classifies our NAT; a symmetric result is
   * flagged in our later registrations and introductions, so peers know not to expect a punch
   */
  readonly probeNat: Effect.Effect<NatReport, RendezvousError>
  /** register registers at `server` and keeps the registration alive until `unregister` or shutdown */
  readonly register: (server: Endpoint) => Effect.Effect<Registration, RendezvousError>
  /** unregister stops refreshing the registration at `server` (it expires there after its ttl) */
  readonly unregister: (server: Endpoint) => Effect.Effect<void>
  /** connect asks `server` to introduce us to the node registered under `nodeKey` and punches to it */
  readonly connect: (server: Endpoint, nodeKey: Uint8Array) => Effect.Effect<PunchResult, RendezvousError>
  /**
   * incoming is the outcome of every punch another node started through an introduction (the session
   * layer accepts from here). Bounded; outcomes nobody takes beyond it are dropped
   */
  readonly incoming: Queue.Dequeue<PunchResult>
  /** registrations is how many registrations this node serves (server role) */
  readonly registrations: Effect.Effect<number>
  /**
   * setServing switches the server role: on, echo, register and introduce from others are answered;
   * off, they are dropped and the registrations served so far are forgotten
   */
  readonly setServing: (serve: boolean) => Effect.Effect<void>
  /** serving is whether the server role is on */
  readonly serving: Effect.Effect<boolean>
}

export class Rendezvous extends Context.Tag("fibercoin/Rendezvous")<Rendezvous, RendezvousService>() {}

// ---------------------------------------------------------------------------------------------------
// The actor. Everything below runs on its fiber.

const mailboxCapacity = 1024
const incomingCapacity = 256
/** MAX_PUNCH_CANDIDATES bounds the endpoints probed per peer (introduced + learned from its probes). */
const MAX_PUNCH_CANDIDATES = 4
/** MAX_PUNCHES bounds the punches in progress or lingering that introductions we did not ask for may start. */
const MAX_PUNCHES = 256
/** DATAGRAMS_PER_IP: datagrams of one source IP queued in the mailbox at once (fair queueing; excess dropped) */
const DATAGRAMS_PER_IP = 16
/** how many cookie challenges one request follows before it gives up on that send */
const MAX_COOKIE_RETRIES = 2
/** the timer never sleeps less than this (a guard against a deadline that does not move) */
const MIN_TIMER_MS = 10
/** the expiry sweep runs at most this often */
const SWEEP_INTERVAL_MS = 1_000

type Command =
  | { readonly _tag: "Datagram"; readonly from: Endpoint; readonly data: Uint8Array }
  | { readonly _tag: "Tick" }
  | {
      readonly _tag: "Echo"
      readonly server: Endpoint
      readonly reply: Deferred.Deferred<Endpoint, RendezvousError>
    }
  | {
      readonly _tag: "Register"
      readonly server: Endpoint
      readonly reply: Deferred.Deferred<Registration, RendezvousError>
    }
  | { readonly _tag: "Unregister"; readonly server: Endpoint; readonly reply: Deferred.Deferred<void> }
  | {
      readonly _tag: "Connect"
      readonly server: Endpoint
      readonly target: Uint8Array
      readonly reply: Deferred.Deferred<PunchResult, RendezvousError>
    }
  | { readonly _tag: "SetSymmetric"; readonly symmetric: boolean; readonly reply: Deferred.Deferred<void> }
  | { readonly _tag: "SetServing"; readonly serve: boolean; readonly reply: Deferred.Deferred<void> }
  | { readonly _tag: "Count"; readonly reply: Deferred.Deferred<number> }

/** Pending is a request of ours awaiting its answer; keepalive registrations have no `reply`. */
type Pending = {
  readonly txid: number
  attempts: number
  nextAt: number
  delayMs: number
  cookieRetries: number
} & NewRequest

/** NewRequest is what a request is about: the server, the kind, and who waits for the answer. */
type NewRequest = { readonly server: Endpoint } & (
  | { readonly kind: "echo"; readonly reply: Deferred.Deferred<Endpoint, RendezvousError> }
  | {
      readonly kind: "register"
      readonly reply: Deferred.Deferred<Registration, RendezvousError> | undefined
    }
  | {
      readonly kind: "introduce"
      readonly target: Uint8Array
      readonly reply: Deferred.Deferred<PunchResult, RendezvousError>
    }
)

/** ServedRegistration is one node registered here (server role). */
interface ServedRegistration {
  readonly nodeKey: Uint8Array
  sessionKey: Uint8Array
  flags: number
  endpoint: Endpoint
  ip: string
  timestamp: bigint
  expiresAt: number
}

/** PunchState is one hole punch in progress (or just ended and lingering to answer the peer's probes). */
interface PunchState {
  readonly nodeKey: Uint8Array
  sessionKey: Uint8Array
  readonly candidates: Array<Endpoint>
  readonly nonce: bigint
  /** the peer maps per destination: its flag said so, or its probes came from an endpoint not introduced */
  peerSymmetric: boolean
  attempts: number
  nextAt: number
  delayMs: number
  result: PunchResult | undefined
  lingerUntil: number
  readonly waiters: Array<Deferred.Deferred<PunchResult, RendezvousError>>
  /** started by an introduction we did not ask for: the outcome goes to `incoming` */
  readonly responder: boolean
}

interface State {
  readonly secret: Uint8Array
  nextTxid: number
  symmetric: boolean
  lastTimestamp: bigint
  lastSweep: number
  readonly cookies: Map<string, Uint8Array>
  readonly pending: Map<number, Pending>
  /** servers we keep a registration at, by endpointKey: when the next refresh is due */
  readonly keepalives: Map<string, { readonly server: Endpoint; nextAt: number }>
  readonly served: Map<string, ServedRegistration>
  readonly servedPerIp: Map<string, number>
  readonly punches: Map<string, PunchState>
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex")
const sameEndpoint = (a: Endpoint, b: Endpoint): boolean => endpointKey(a) === endpointKey(b)
const bytesEqual = (a: Uint8Array, b: Uint8Array): boolean =>
  a.length === b.length && a.every((x, i) => x === b[i])

/**
 * seenAtLocal: a server sees us at our own socket's endpoint (no NAT). A socket bound to the
 * unspecified address only knows its port, so there the port decides (a port-preserving NAT then
 * passes for open).
 */
const seenAtLocal = (observed: Endpoint, local: Endpoint): boolean =>
  isUnspecifiedHost(local.host) ? observed.port === local.port : sameEndpoint(observed, local)

/**
 * sourceId names a source IP for the mailbox's per-source quota (FNV-1a of its canonical text): one
 * IP's flood fills its own share, not the mailbox, so other sources' datagrams still get in. Two IPs
 * that collide share a quota, which only makes both a little stricter.
 */
const sourceId = (host: string): number => {
  const text = normalizeHost(host)
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193)
  return h >>> 0
}

const u64le = (v: bigint): Uint8Array => {
  const out = new Uint8Array(8)
  new DataView(out.buffer).setBigUint64(0, v, true)
  return out
}

/**
 * identityDigest is what an identity's signature covers: the request kind (domain separation), the
 * identity's fields, the cookie (binding it to the source endpoint and time window, so a captured
 * request cannot be replayed from elsewhere) and, for an introduce, the target.
 */
export const identityDigest = (
  kind: "register" | "introduce",
  identity: Omit<Identity, "sig">,
  cookie: Uint8Array,
  target?: Uint8Array,
): Uint8Array => {
  const parts = [
    identity.nodeKey,
    identity.sessionKey,
    Uint8Array.of(identity.flags),
    u64le(identity.timestamp),
    cookie,
    ...(target === undefined ? [] : [target]),
  ]
  const data = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    data.set(p, at)
    at += p.length
  }
  return taggedHash(`FiberRendezvous/${kind}`, data)
}

/** cookieFor is the stateless cookie of `source` in time window `window`: HMAC-SHA256 truncated to 16 bytes. */
export const cookieFor = (secret: Uint8Array, source: Endpoint, window: number): Uint8Array => {
  const mac = crypto.createHmac("sha256", secret)
  mac.update(endpointKey(source))
  mac.update(u64le(BigInt(window)))
  return new Uint8Array(mac.digest().subarray(0, COOKIE_BYTES))
}

/**
 * nonceOf is a non-zero u64 punch nonce of 8 bytes from the Entropy service. The cookie secret, the
 * punch nonces and the BIP340 aux of registrations come from Entropy (the OS CSPRNG in a node), not
 * Effect's `Random`, a seeded PRNG: a guessable cookie secret would let an attacker forge cookies for
 * spoofed addresses (an amplifier again), a guessable punch nonce would let it fake a punch's echo.
 * A seeded simulation gives Entropy a seed, so these replay too.
 */
const nonceOf = (b: Uint8Array): bigint => {
  const v = new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true)
  return v === 0n ? 1n : v
}

/**
 * make starts the Rendezvous actor in the current scope. `io.send` is its only output; datagrams come
 * in through the service's `receive`. A ticker drives its timers (Clock-based, so TestClock does).
 */
export const make = (
  config: RendezvousConfig,
  io: {
    readonly local: Endpoint
    readonly send: (to: Endpoint, data: Uint8Array) => Effect.Effect<void, DatagramError>
  },
): Effect.Effect<RendezvousService, never, Signatures | SpamFilter | Scope.Scope> =>
  Effect.gen(function* () {
    const sigs = yield* Signatures
    const filter = yield* SpamFilter
    const entropy = yield* Entropy
    const secretBytes = entropy.bytes
    const randomNonce = Effect.map(secretBytes(8), nonceOf)
    const limits = config.limits
    const nodeKey = sigs.publicKey(config.nodeSecretKey)
    const nodeKeyHex = hex(nodeKey)
    const incoming = yield* Queue.dropping<PunchResult>(incomingCapacity)
    const windowMs = Math.max(1, Duration.toMillis(limits.cookieWindow))
    const ttlMs = Duration.toMillis(limits.registrationTtl)

    const send = (to: Endpoint, msg: RendezvousMessage) =>
      io
        .send(to, encodeRendezvous(msg))
        .pipe(
          Effect.catchAll((e) =>
            Effect.logDebug(`rendezvous: send to ${endpointKey(to)} failed: ${e.message}`),
          ),
        )

    /**
     * sendToUnverified answers a source that has not proved it receives: never more bytes than its
     * request had (the anti-amplification rule; the message sizes keep to it by design, this enforces it).
     */
    const sendToUnverified = (to: Endpoint, msg: RendezvousMessage, requestBytes: number) => {
      const bytes = encodeRendezvous(msg)
      if (bytes.length > requestBytes) {
        return Effect.logWarning(
          `rendezvous: not sending ${msg._tag} (${bytes.length} B) to unverified ${endpointKey(to)}`,
        )
      }
      return io.send(to, bytes).pipe(Effect.catchAll(() => Effect.void))
    }

    /**
     * serving is the server role: `config.serve` at start, switched by SetServing; written by the actor
     * fiber only (outside its state, so an actor restart keeps it)
     */
    let serving = config.serve

    /** nextWake is the actor's earliest timer deadline (ms); written by the actor fiber only, read by the timer fiber */
    let nextWake = Number.POSITIVE_INFINITY
    const wakeups = yield* Queue.sliding<void>(1)

    const initial = Effect.gen(function* () {
      const state: State = {
        secret: yield* secretBytes(32),
        nextTxid: yield* Random.nextIntBetween(1, 2 ** 31),
        symmetric: false,
        lastTimestamp: 0n,
        lastSweep: 0,
        cookies: new Map(),
        pending: new Map(),
        keepalives: new Map(),
        served: new Map(),
        servedPerIp: new Map(),
        punches: new Map(),
      }
      return state
    })

    // -- client side --------------------------------------------------------------------------------

    const newTxid = (state: State): number => {
      const txid = state.nextTxid
      state.nextTxid = state.nextTxid >= 0xffffffff ? 1 : state.nextTxid + 1
      return txid
    }

    /** signIdentity signs a fresh identity for a request; timestamps strictly increase (replay guard). */
    const signIdentity = (
      state: State,
      kind: "register" | "introduce",
      cookie: Uint8Array,
      target?: Uint8Array,
    ) =>
      Effect.gen(function* () {
        const now = BigInt(yield* Clock.currentTimeMillis)
        const timestamp = now > state.lastTimestamp ? now : state.lastTimestamp + 1n
        state.lastTimestamp = timestamp
        const unsigned = {
          nodeKey,
          sessionKey: config.sessionPublicKey,
          flags: state.symmetric ? FLAG_SYMMETRIC_NAT : 0,
          timestamp,
        }
        const sig = sigs.sign(
          identityDigest(kind, unsigned, cookie, target),
          config.nodeSecretKey,
          yield* secretBytes(32),
        )
        const identity: Identity = { ...unsigned, sig }
        return identity
      })

    /** transmit sends (or re-sends) a pending request with the server's current cookie. */
    const transmit = (state: State, p: Pending) =>
      Effect.gen(function* () {
        const cookie = state.cookies.get(endpointKey(p.server)) ?? NO_COOKIE
        switch (p.kind) {
          case "echo":
            return yield* send(p.server, new EchoRequest({ txid: p.txid, cookie }))
          case "register": {
            const identity = yield* signIdentity(state, "register", cookie)
            return yield* send(p.server, new RegisterRequest({ txid: p.txid, cookie, identity }))
          }
          case "introduce": {
            const identity = yield* signIdentity(state, "introduce", cookie, p.target)
            return yield* send(
              p.server,
              new IntroduceRequest({ txid: p.txid, cookie, target: p.target, identity }),
            )
          }
        }
      })

    const startRequest = (state: State, p: NewRequest) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const delayMs = Duration.toMillis(limits.requestRetry)
        const pending: Pending = {
          ...p,
          txid: newTxid(state),
          attempts: 1,
          nextAt: now + delayMs,
          delayMs,
          cookieRetries: 0,
        }
        state.pending.set(pending.txid, pending)
        yield* transmit(state, pending)
      })

    const failPending = (p: Pending, error: RendezvousError): Effect.Effect<unknown> => {
      switch (p.kind) {
        case "echo":
          return Deferred.fail(p.reply, error)
        case "introduce":
          return Deferred.fail(p.reply, error)
        case "register":
          return p.reply === undefined
            ? Effect.logInfo(`rendezvous: keepalive at ${endpointKey(p.server)} failed: ${error.message}`)
            : Deferred.fail(p.reply, error)
      }
    }

    /** handleReply takes a server's answer to one of our pending requests (from that server only). */
    const handleReply = (
      state: State,
      from: Endpoint,
      msg: EchoReply | CookieChallenge | Registered | Refused | Introduction,
    ) =>
      Effect.gen(function* () {
        const p = state.pending.get(msg.txid)
        if (p === undefined || !sameEndpoint(p.server, from)) return
        switch (msg._tag) {
          case "cookie": {
            state.cookies.set(endpointKey(p.server), msg.cookie)
            if (p.cookieRetries >= MAX_COOKIE_RETRIES) return
            p.cookieRetries++
            return yield* transmit(state, p)
          }
          case "echo-reply":
            if (p.kind !== "echo") return
            state.pending.delete(p.txid)
            return yield* Deferred.succeed(p.reply, msg.observed)
          case "registered": {
            if (p.kind !== "register") return
            state.pending.delete(p.txid)
            const now = yield* Clock.currentTimeMillis
            const key = endpointKey(p.server)
            const keepalive = state.keepalives.get(key)
            if (keepalive === undefined) {
              state.keepalives.set(key, {
                server: p.server,
                nextAt: now + Duration.toMillis(limits.keepaliveInterval),
              })
            }
            if (p.reply !== undefined) {
              yield* Deferred.succeed(p.reply, {
                server: p.server,
                observed: msg.observed,
                ttlSeconds: msg.ttlSeconds,
              })
            }
            return
          }
          case "refused":
            state.pending.delete(p.txid)
            if (p.kind === "register") state.keepalives.delete(endpointKey(p.server))
            return yield* failPending(p, new RendezvousError({ reason: "refused", detail: msg.reason }))
          case "introduction":
            if (p.kind !== "introduce" || !bytesEqual(msg.nodeKey, p.target)) return
            state.pending.delete(p.txid)
            return yield* startPunch(state, msg, p.reply)
        }
      })

    /** startPunch begins (or joins) punching to an introduced peer; the first probe round goes out now. */
    const startPunch = (
      state: State,
      intro: Introduction,
      waiter: Deferred.Deferred<PunchResult, RendezvousError> | undefined,
    ) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const key = hex(intro.nodeKey)
        const existing = state.punches.get(key)
        if (existing !== undefined && existing.result === undefined) {
          if (!existing.candidates.some((c) => sameEndpoint(c, intro.endpoint))) {
            if (existing.candidates.length < MAX_PUNCH_CANDIDATES) existing.candidates.push(intro.endpoint)
          }
          existing.sessionKey = intro.sessionKey
          existing.peerSymmetric ||= (intro.flags & FLAG_SYMMETRIC_NAT) !== 0
          if (waiter !== undefined) existing.waiters.push(waiter)
          return
        }
        if (waiter === undefined && existing === undefined && state.punches.size >= MAX_PUNCHES) {
          // a server (or someone holding keys by the thousand) introducing us to strangers faster than
          // punches end: the excess is dropped, our own connects still go through
          return yield* Effect.logDebug("rendezvous: too many punches in progress; introduction dropped")
        }
        const punch: PunchState = {
          nodeKey: intro.nodeKey,
          sessionKey: intro.sessionKey,
          candidates: [intro.endpoint],
          nonce: yield* randomNonce,
          peerSymmetric: (intro.flags & FLAG_SYMMETRIC_NAT) !== 0,
          attempts: 0,
          nextAt: now,
          delayMs: Duration.toMillis(limits.punchInterval),
          result: undefined,
          lingerUntil: 0,
          waiters: waiter === undefined ? [] : [waiter],
          responder: waiter === undefined,
        }
        state.punches.set(key, punch)
        yield* punchRound(punch, now)
      })

    const punchRound = (punch: PunchState, now: number) =>
      Effect.gen(function* () {
        punch.attempts++
        punch.nextAt = now + punch.delayMs
        punch.delayMs *= 2
        const probe = new Punch({ nonce: punch.nonce, sender: nodeKey })
        yield* Effect.forEach(punch.candidates, (to) => send(to, probe), { discard: true })
      })

    const finishPunch = (punch: PunchState, result: PunchResult, now: number) =>
      Effect.gen(function* () {
        punch.result = result
        punch.lingerUntil = now + Duration.toMillis(limits.punchLinger)
        for (const w of punch.waiters) yield* Deferred.succeed(w, result)
        punch.waiters.length = 0
        if (punch.responder) yield* Queue.offer(incoming, result)
      })

    const handlePunch = (state: State, from: Endpoint, msg: Punch) =>
      Effect.gen(function* () {
        const punch = state.punches.get(hex(msg.sender))
        if (punch === undefined) return
        // the ack is exactly as large as the probe: answering an unverified source amplifies nothing
        yield* send(from, new PunchAck({ nonce: msg.nonce, sender: nodeKey }))
        if (punch.result === undefined && !punch.candidates.some((c) => sameEndpoint(c, from))) {
          // the peer reaches us from an endpoint the server did not see: its NAT maps per destination
          punch.peerSymmetric = true
          if (punch.candidates.length < MAX_PUNCH_CANDIDATES) {
            punch.candidates.push(from)
            yield* send(from, new Punch({ nonce: punch.nonce, sender: nodeKey }))
          }
        }
      })

    const handlePunchAck = (state: State, from: Endpoint, msg: PunchAck) =>
      Effect.gen(function* () {
        const punch = state.punches.get(hex(msg.sender))
        if (punch === undefined || punch.result !== undefined || msg.nonce !== punch.nonce) return
        const now = yield* Clock.currentTimeMillis
        yield* finishPunch(
          punch,
          PunchResult.Punched({
            nodeKey: punch.nodeKey,
            remote: { host: from.host, port: from.port },
            sessionKey: punch.sessionKey,
          }),
          now,
        )
      })

    // -- server side --------------------------------------------------------------------------------

    const cookieValid = (state: State, from: Endpoint, cookie: Uint8Array, now: number): boolean => {
      const window = Math.floor(now / windowMs)
      return (
        crypto.timingSafeEqual(cookie, cookieFor(state.secret, from, window)) ||
        crypto.timingSafeEqual(cookie, cookieFor(state.secret, from, window - 1))
      )
    }

    const identityValid = (
      kind: "register" | "introduce",
      identity: Identity,
      cookie: Uint8Array,
      target?: Uint8Array,
    ): boolean => sigs.verify(identityDigest(kind, identity, cookie, target), identity.sig, identity.nodeKey)

    const freshTimestamp = (identity: Identity, now: number): boolean => {
      const skew = BigInt(Duration.toMillis(limits.maxClockSkew))
      const nowB = BigInt(now)
      return identity.timestamp >= nowB - skew && identity.timestamp <= nowB + skew
    }

    const refuse = (to: Endpoint, txid: number, reason: RefusedReason) =>
      send(to, new Refused({ txid, reason }))

    /**
     * badSignature refuses a request whose identity does not verify and scores its IP at the
     * SpamFilter (the source proved its address with the cookie, so the score lands on the sender,
     * not on a victim whose address was spoofed)
     */
    const badSignature = (to: Endpoint, ip: string, txid: number, kind: "register" | "introduce") =>
      Effect.zipRight(
        refuse(to, txid, "bad-signature"),
        filter.misbehaveDatagram(ip, Misbehavior.BadSignature({ what: `a rendezvous ${kind}` })),
      )

    const handleRegister = (state: State, from: Endpoint, ip: string, msg: RegisterRequest, now: number) =>
      Effect.gen(function* () {
        const { identity } = msg
        if (!freshTimestamp(identity, now)) return yield* refuse(from, msg.txid, "stale-timestamp")
        const key = hex(identity.nodeKey)
        const existing = state.served.get(key)
        if (existing !== undefined && identity.timestamp <= existing.timestamp) {
          return yield* refuse(from, msg.txid, "stale-timestamp")
        }
        if (!identityValid("register", identity, msg.cookie))
          return yield* badSignature(from, ip, msg.txid, "register")
        const movesIp = existing === undefined || existing.ip !== ip
        if (existing === undefined && state.served.size >= limits.maxRegistrations) {
          return yield* refuse(from, msg.txid, "registrations-full")
        }
        if (movesIp && (state.servedPerIp.get(ip) ?? 0) >= limits.maxRegistrationsPerIp) {
          return yield* refuse(from, msg.txid, "ip-registrations-full")
        }
        if (existing !== undefined && movesIp) decrementIp(state, existing.ip)
        if (movesIp) state.servedPerIp.set(ip, (state.servedPerIp.get(ip) ?? 0) + 1)
        const endpoint = { host: from.host, port: from.port }
        if (existing === undefined) {
          state.served.set(key, {
            nodeKey: identity.nodeKey,
            sessionKey: identity.sessionKey,
            flags: identity.flags,
            endpoint,
            ip,
            timestamp: identity.timestamp,
            expiresAt: now + ttlMs,
          })
        } else {
          existing.sessionKey = identity.sessionKey
          existing.flags = identity.flags
          existing.endpoint = endpoint
          existing.ip = ip
          existing.timestamp = identity.timestamp
          existing.expiresAt = now + ttlMs
        }
        yield* send(
          from,
          new Registered({ txid: msg.txid, ttlSeconds: Math.floor(ttlMs / 1000), observed: endpoint }),
        )
      })

    const decrementIp = (state: State, ip: string) => {
      const n = (state.servedPerIp.get(ip) ?? 1) - 1
      if (n <= 0) state.servedPerIp.delete(ip)
      else state.servedPerIp.set(ip, n)
    }

    const handleIntroduce = (state: State, from: Endpoint, ip: string, msg: IntroduceRequest, now: number) =>
      Effect.gen(function* () {
        const { identity } = msg
        if (!freshTimestamp(identity, now)) return yield* refuse(from, msg.txid, "stale-timestamp")
        if (!identityValid("introduce", identity, msg.cookie, msg.target)) {
          return yield* badSignature(from, ip, msg.txid, "introduce")
        }
        const target = state.served.get(hex(msg.target))
        if (target === undefined || target.expiresAt <= now)
          return yield* refuse(from, msg.txid, "unknown-target")
        yield* send(
          from,
          new Introduction({
            txid: msg.txid,
            nodeKey: target.nodeKey,
            sessionKey: target.sessionKey,
            flags: target.flags,
            endpoint: target.endpoint,
          }),
        )
        // the target proved it receives at this endpoint when it registered (and keeps proving it)
        yield* send(
          target.endpoint,
          new Introduction({
            txid: 0,
            nodeKey: identity.nodeKey,
            sessionKey: identity.sessionKey,
            flags: identity.flags,
            endpoint: { host: from.host, port: from.port },
          }),
        )
      })

    /**
     * handleRequest serves echo, register and introduce: the SpamFilter's datagram admission (bans, the
     * per-IP `datagrams` bucket), then the cookie check (a source without a valid cookie gets only the
     * challenge, never larger than its request), then the signature (the costly check last).
     */
    const handleRequest = (
      state: State,
      from: Endpoint,
      msg: EchoRequest | RegisterRequest | IntroduceRequest,
      size: number,
    ) =>
      Effect.gen(function* () {
        if (!serving) return
        if (!(yield* filter.admitDatagram(from.host, msg._tag))) return
        const now = yield* Clock.currentTimeMillis
        const ip = normalizeHost(from.host)
        if (!cookieValid(state, from, msg.cookie, now)) {
          const cookie = cookieFor(state.secret, from, Math.floor(now / windowMs))
          return yield* sendToUnverified(from, new CookieChallenge({ txid: msg.txid, cookie }), size)
        }
        switch (msg._tag) {
          case "echo":
            return yield* send(
              from,
              new EchoReply({ txid: msg.txid, observed: { host: from.host, port: from.port } }),
            )
          case "register":
            return yield* handleRegister(state, from, ip, msg, now)
          case "introduce":
            return yield* handleIntroduce(state, from, ip, msg, now)
        }
      })

    const handleDatagram = (state: State, from: Endpoint, data: Uint8Array) =>
      Effect.gen(function* () {
        const decoded = decodeRendezvous(data)
        if (Either.isLeft(decoded)) {
          return yield* Effect.logDebug(
            `rendezvous: dropped datagram from ${endpointKey(from)}: ${decoded.left.message}`,
          )
        }
        const msg = decoded.right
        switch (msg._tag) {
          case "echo":
          case "register":
          case "introduce":
            return yield* handleRequest(state, from, msg, data.length)
          case "introduction":
            if (msg.txid === 0) {
              // unsolicited: only from a server we keep a registration at
              if (!state.keepalives.has(endpointKey(from))) return
              if (bytesEqual(msg.nodeKey, nodeKey)) return
              return yield* startPunch(state, msg, undefined)
            }
            return yield* handleReply(state, from, msg)
          case "echo-reply":
          case "cookie":
          case "registered":
          case "refused":
            return yield* handleReply(state, from, msg)
          case "punch":
            return yield* handlePunch(state, from, msg)
          case "punch-ack":
            return yield* handlePunchAck(state, from, msg)
        }
      })

    // -- timers -------------------------------------------------------------------------------------

    const handleTick = (state: State) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        for (const p of [...state.pending.values()]) {
          if (p.nextAt > now) continue
          if (p.attempts >= limits.requestAttempts) {
            state.pending.delete(p.txid)
            yield* failPending(
              p,
              new RendezvousError({ reason: "timeout", detail: `${p.kind} to ${endpointKey(p.server)}` }),
            )
            continue
          }
          p.attempts++
          p.delayMs *= 2
          p.nextAt = now + p.delayMs
          p.cookieRetries = 0
          yield* transmit(state, p)
        }
        for (const k of state.keepalives.values()) {
          if (k.nextAt > now) continue
          k.nextAt = now + Duration.toMillis(limits.keepaliveInterval)
          const refreshing = [...state.pending.values()].some(
            (p) => p.kind === "register" && sameEndpoint(p.server, k.server),
          )
          if (!refreshing)
            yield* startRequest(state, { kind: "register", server: k.server, reply: undefined })
        }
        for (const [key, punch] of state.punches) {
          if (punch.result !== undefined) {
            if (punch.lingerUntil <= now) state.punches.delete(key)
            continue
          }
          if (punch.nextAt > now) continue
          if (punch.attempts >= limits.punchAttempts) {
            const reason: PunchFailure = state.symmetric || punch.peerSymmetric ? "symmetric-nat" : "timeout"
            yield* finishPunch(punch, PunchResult.Failed({ nodeKey: punch.nodeKey, reason }), now)
            continue
          }
          yield* punchRound(punch, now)
        }
        if (now - state.lastSweep >= SWEEP_INTERVAL_MS) {
          state.lastSweep = now
          for (const [key, reg] of state.served) {
            if (reg.expiresAt > now) continue
            state.served.delete(key)
            decrementIp(state, reg.ip)
          }
        }
      })

    /**
     * publishDeadline tells the timer fiber the earliest deadline after this command: request retries,
     * keepalives, punch rounds and lingers, and the expiry sweep while anything is registered.
     */
    const publishDeadline = (state: State, afterTick: boolean) => {
      let at = Number.POSITIVE_INFINITY
      for (const p of state.pending.values()) at = Math.min(at, p.nextAt)
      for (const k of state.keepalives.values()) at = Math.min(at, k.nextAt)
      for (const punch of state.punches.values()) {
        at = Math.min(at, punch.result === undefined ? punch.nextAt : punch.lingerUntil)
      }
      if (state.served.size > 0) at = Math.min(at, state.lastSweep + SWEEP_INTERVAL_MS)
      if (afterTick || at !== nextWake) {
        nextWake = at
        Queue.unsafeOffer(wakeups, undefined)
      }
    }

    const handle = (state: State, cmd: Command): Effect.Effect<State> =>
      Effect.gen(function* () {
        switch (cmd._tag) {
          case "Datagram":
            yield* handleDatagram(state, cmd.from, cmd.data)
            break
          case "Tick":
            yield* handleTick(state)
            break
          case "Echo":
            yield* startRequest(state, { kind: "echo", server: cmd.server, reply: cmd.reply })
            break
          case "Register":
            yield* startRequest(state, { kind: "register", server: cmd.server, reply: cmd.reply })
            break
          case "Unregister":
            state.keepalives.delete(endpointKey(cmd.server))
            yield* Deferred.succeed(cmd.reply, undefined)
            break
          case "Connect": {
            const existing = state.punches.get(hex(cmd.target))
            if (existing?.result?._tag === "Punched") {
              yield* Deferred.succeed(cmd.reply, existing.result)
              break
            }
            yield* startRequest(state, {
              kind: "introduce",
              server: cmd.server,
              target: cmd.target,
              reply: cmd.reply,
            })
            break
          }
          case "SetSymmetric":
            state.symmetric = cmd.symmetric
            yield* Deferred.succeed(cmd.reply, undefined)
            break
          case "SetServing":
            if (serving && !cmd.serve) {
              state.served.clear()
              state.servedPerIp.clear()
            }
            serving = cmd.serve
            yield* Deferred.succeed(cmd.reply, undefined)
            break
          case "Count":
            yield* Deferred.succeed(cmd.reply, state.served.size)
            break
        }
        publishDeadline(state, cmd._tag === "Tick")
        return state
      })

    const actor = yield* Actor.make<Command, State, never, never>({
      name: "rendezvous",
      capacity: mailboxCapacity,
      perSource: DATAGRAMS_PER_IP,
      initial,
      handle,
    })

    /**
     * timer wakes the actor at its earliest deadline (`nextWake`, which the actor publishes after every
     * command) rather than on a fixed tick, so an idle node sleeps and TestClock skips straight to the
     * next event. After each Tick it waits for the actor's signal, so it never sends a second Tick for
     * the same deadline.
     */
    const timer = Effect.gen(function* () {
      while (true) {
        const now = yield* Clock.currentTimeMillis
        if (nextWake <= now) {
          if (yield* actor.trySend({ _tag: "Tick" })) yield* Queue.take(wakeups)
          else yield* Effect.sleep(MIN_TIMER_MS)
        } else if (Number.isFinite(nextWake)) {
          yield* Effect.race(Effect.sleep(Math.max(MIN_TIMER_MS, nextWake - now)), Queue.take(wakeups))
        } else {
          yield* Queue.take(wakeups)
        }
      }
    })
    yield* Effect.forkScoped(Effect.interruptible(timer))

    const echo = (server: Endpoint) =>
      Actor.ask<Command, Endpoint, RendezvousError>(
        actor,
        (reply): Command => ({ _tag: "Echo", server, reply }),
      )

    const probeNat = Effect.gen(function* () {
      if (config.servers.length === 0) {
        return yield* new RendezvousError({
          reason: "no-servers",
          detail: "no rendezvous servers configured",
        })
      }
      const observed = yield* Effect.forEach(config.servers, (server) =>
        Effect.map(echo(server), (ep) => ({ server, observed: ep })),
      )
      const keys = new Set(observed.map((o) => endpointKey(o.observed)))
      const kind: NatKind =
        keys.size > 1
          ? "symmetric"
          : observed.every((o) => seenAtLocal(o.observed, io.local))
            ? "open"
            : "cone"
      yield* Actor.ask<Command, void, never>(
        actor,
        (reply): Command => ({ _tag: "SetSymmetric", symmetric: kind === "symmetric", reply }),
      )
      const report: NatReport = { local: io.local, observed, kind }
      return report
    })

    const service: RendezvousService = {
      nodeKey,
      local: io.local,
      receive: ({ from, data }) =>
        Effect.asVoid(actor.trySendFrom(sourceId(from.host), { _tag: "Datagram", from, data })),
      echo,
      probeNat,
      register: (server) =>
        Actor.ask<Command, Registration, RendezvousError>(
          actor,
          (reply): Command => ({ _tag: "Register", server, reply }),
        ),
      unregister: (server) =>
        Actor.ask<Command, void, never>(actor, (reply): Command => ({ _tag: "Unregister", server, reply })),
      connect: (server, target) =>
        hex(target) === nodeKeyHex
          ? Effect.fail(new RendezvousError({ reason: "refused", detail: "cannot connect to ourselves" }))
          : Actor.ask<Command, PunchResult, RendezvousError>(
              actor,
              (reply): Command => ({ _tag: "Connect", server, target, reply }),
            ),
      incoming,
      registrations: Actor.ask<Command, number, never>(actor, (reply): Command => ({ _tag: "Count", reply })),
      setServing: (serve) =>
        Actor.ask<Command, void, never>(actor, (reply): Command => ({ _tag: "SetServing", serve, reply })),
      serving: Effect.sync(() => serving),
    }
    return service
  })

/**
 * makeOnSocket runs the Rendezvous actor on a socket: its own (`layer`), or the UDP session demux's
 * `other` view of the shared port, which carries every datagram that is not a session packet.
 */
export const makeOnSocket = (
  config: RendezvousConfig,
  socket: DatagramSocket,
): Effect.Effect<RendezvousService, never, Signatures | SpamFilter | Scope.Scope> =>
  Effect.gen(function* () {
    const service = yield* make(config, { local: socket.local, send: socket.send })
    yield* Effect.forkScoped(Stream.runForEach(socket.received, service.receive))
    return service
  })

/**
 * layer runs the Rendezvous actor on its own UDP socket bound at `bind` (until the session demux
 * hands it datagrams instead): every datagram the socket receives goes to `receive`.
 */
export const layer = (
  config: RendezvousConfig & { readonly bind: Endpoint },
): Layer.Layer<Rendezvous, DatagramError, Datagrams | Signatures | SpamFilter> =>
  Layer.scoped(
    Rendezvous,
    Effect.flatMap(Datagrams, (datagrams) =>
      Effect.flatMap(datagrams.bind(config.bind), (socket) => makeOnSocket(config, socket)),
    ),
  )
