import {
  createCipheriv,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  createSecretKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  type KeyObject,
} from "node:crypto"
import {
  Chunk,
  Clock,
  Deferred,
  Duration,
  Effect,
  Either,
  Exit,
  Fiber,
  FiberId,
  Mailbox,
  Option,
  Queue,
  Random,
  type Scope,
  Stream,
} from "effect"
import {
  type AckRange,
  AEAD_TAG_BYTES,
  decodeFrames,
  decodeSessionHeader,
  encodeFrames,
  encodeSessionHeader,
  frameSize,
  isSessionDatagram,
  MAX_ACK_RANGES,
  MAX_PACKET_NUMBER,
  OPEN_HEADER_BYTES,
  PUBLIC_KEY_BYTES,
  SESSION_DATA,
  SESSION_OPEN,
  type SessionFrame,
  SHORT_HEADER_BYTES,
  STREAM_FRAME_OVERHEAD,
} from "../schema/session.js"
import {
  type DatagramSocket,
  MAX_DATAGRAM_BYTES,
  RECEIVE_BUFFER_DATAGRAMS,
  type ReceivedDatagram,
} from "./Datagram.js"
import { ACCEPT_BACKLOG, type Connection, type Endpoint, TransportError } from "./Transport.js"

/**
 * UdpSession is the UDP session transport of issue 8: a reliable, ordered, authenticated and
 * encrypted byte stream over one DatagramSocket, exposed as the Transport `Connection` the Peer actor
 * uses for TCP, so relay, sync and the spam filter run over it unchanged.
 *
 * A `SessionEndpoint` owns the socket's `received` stream: it routes session packets (type bytes
 * 0x40–0x7f, see src/schema/session.ts) by (remote endpoint, session id) and hands every other
 * datagram (the rendezvous protocol) to `other`, a DatagramSocket view of the same port.
 *
 * The protocol is QUIC's shape, cut down to one stream: every packet has a fresh packet number (so
 * a retransmission is a new packet, RTT samples are unambiguous and AEAD nonces never repeat); ACKs
 * carry cumulative + selective ranges and the receive window; a packet is lost when three later ones
 * were acked (RFC 9002 §6.1) or its RTO expired (RFC 6298 SRTT/RTTVAR, 200 ms floor, doubling
 * backoff); NewReno-style AIMD congestion window; flow control by the receiver's window, which only
 * opens as the owner reads (so a reader that stops makes the sender's `pendingWriteBytes` grow, as
 * TCP); PING keepalives every 15 s of silence (holding NAT mappings open) and an idle timeout;
 * FIN-like close (acknowledged) and RESET abort.
 *
 * Keys: each node has a static X25519 key pair. The session key is
 * HKDF-SHA256(X25519(local, remote), salt "fibercoin/udp-session/v1", info = lower public key ‖
 * higher public key ‖ session id); each packet is sealed with ChaCha20-Poly1305 under the nonce
 * direction (0 from the lower key's side, 1 from the higher) ‖ packet number. A packet that fails
 * authentication is dropped silently and counted. The initiator sends its public key in the header
 * of its SESSION_OPEN packets (until it hears from the responder), so the responder needs no prior
 * state: an OPEN that authenticates proves the sender holds that key's private half. There is no
 * ephemeral key, hence no forward secrecy: a node key's compromise exposes its recorded sessions.
 *
 * Concurrency: each session's state is plain mutable data touched only in synchronous steps (the
 * endpoint's receive fiber, the session's driver fiber, the owner's read/write calls never yield in
 * the middle of an update); the driver fiber alone sends the session's packets.
 */

/** RECEIVE_WINDOW_BYTES is how much unread stream a session buffers for its owner (in-order and out-of-order together). */
export const RECEIVE_WINDOW_BYTES = 256 * 1024
/** INITIAL_RTO is the retransmission timeout before the first RTT sample (RFC 6298 §2.1). */
export const INITIAL_RTO = Duration.seconds(1)
/** MIN_RTO is the retransmission timeout's floor (RFC 6298 §2.4 says 1 s; 200 ms as Linux). */
export const MIN_RTO = Duration.millis(200)
/** MAX_RTO caps the backed-off retransmission timeout (RFC 6298 §2.5). */
export const MAX_RTO = Duration.seconds(60)
/** MAX_ACK_DELAY is how long a receiver may hold an ACK for a lone ack-eliciting packet (every second packet is acked at once). */
export const MAX_ACK_DELAY = Duration.millis(25)
/** KEEPALIVE_INTERVAL is the silence after which a session sends a PING: it keeps both NAT mappings open (30 s is a common mapping timeout). */
export const KEEPALIVE_INTERVAL = Duration.seconds(15)
/** IDLE_TIMEOUT is how long a session lives without an authenticated packet from the remote; then `read` fails with `timeout`. */
export const IDLE_TIMEOUT = Duration.seconds(60)
/** CONNECT_TIMEOUT bounds `connect`: the responder must answer within it. */
export const CONNECT_TIMEOUT = Duration.seconds(10)
/** CLOSED_LINGER is how long a finished or reset session is remembered, to re-ACK a lost final ACK and to answer stray packets with RESET instead of opening a new session. */
export const CLOSED_LINGER = Duration.seconds(30)
/** INITIAL_CWND_BYTES and MIN_CWND_BYTES bound the congestion window (RFC 9002 §7.2: 10 and 2 packets). */
export const INITIAL_CWND_BYTES = 10 * MAX_DATAGRAM_BYTES
export const MIN_CWND_BYTES = 2 * MAX_DATAGRAM_BYTES
/** PACKET_THRESHOLD: a packet is lost when a packet this much later was acked (RFC 9002 §6.1.1). */
export const PACKET_THRESHOLD = 3
/** MAX_SESSIONS is an endpoint's default cap on live and lingering sessions; OPENs beyond it are dropped. */
export const MAX_SESSIONS = 1_024
/** OPEN_RATE_PER_SECOND bounds the X25519 agreements an endpoint does for unknown OPEN packets (a CPU-flood guard), with a burst of the same size. */
export const OPEN_RATE_PER_SECOND = 200
/** RESET_REPEATS is how many RESET packets an abort sends (they are not retransmitted). */
export const RESET_REPEATS = 3
/** ACK_RANGE_SPAN: an ACK reports received ranges down to this many packet numbers below the largest. */
const ACK_RANGE_SPAN = 256
/** MAX_PACKETS_PER_STEP bounds one driver step's burst before it yields to other fibers. */
const MAX_PACKETS_PER_STEP = 32
/** TIMER_SLACK is how late a timer may fire when an earlier deadline shows up, rather than arming another sleep. */
const TIMER_SLACK_MILLIS = 25
const SALT = new TextEncoder().encode("fibercoin/udp-session/v1")
const X25519_SPKI_PREFIX = Uint8Array.from([
  0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00,
])
const X25519_PKCS8_PREFIX = Uint8Array.from([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
])

/** SessionKeys is a node's static X25519 key pair for UDP sessions. */
export interface SessionKeys {
  readonly publicKey: Uint8Array
  readonly privateKey: KeyObject
}

const rawPublicKey = (key: KeyObject): Uint8Array =>
  new Uint8Array(key.export({ format: "der", type: "spki" })).subarray(X25519_SPKI_PREFIX.length)

/**
 * generateSessionKeys makes a fresh X25519 key pair from node:crypto's randomness. For tests only: a
 * node's session keys are `sessionKeysFromSecret(NodeIdentity.sessionSecret)`, drawn from Entropy.
 */
export const generateSessionKeys = (): SessionKeys => {
  const { publicKey, privateKey } = generateKeyPairSync("x25519")
  return { publicKey: rawPublicKey(publicKey), privateKey }
}

/** sessionKeysFromSecret makes the key pair of a 32-byte X25519 secret (a stored node key, or a test's fixed one). */
export const sessionKeysFromSecret = (secret: Uint8Array): SessionKeys => {
  if (secret.length !== 32) throw new Error("an X25519 secret is 32 bytes")
  const der = new Uint8Array(X25519_PKCS8_PREFIX.length + 32)
  der.set(X25519_PKCS8_PREFIX)
  der.set(secret, X25519_PKCS8_PREFIX.length)
  const privateKey = createPrivateKey({ key: Buffer.from(der), format: "der", type: "pkcs8" })
  return { publicKey: rawPublicKey(createPublicKey(privateKey)), privateKey }
}

const compareBytes = (a: Uint8Array, b: Uint8Array): number => {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i]! - b[i]!
  return a.length - b.length
}

/** SessionCrypto seals and opens one session's packets. */
interface SessionCrypto {
  readonly key: KeyObject
  /** sendDirection is this side's nonce direction; the remote's is the other one */
  readonly sendDirection: 0 | 1
}

/**
 * deriveSessionCrypto runs X25519 and HKDF for (local keys, remote public key, session id); undefined
 * when the remote key is malformed, equal to ours, or of low order (all-zero shared secret).
 */
const deriveSessionCrypto = (
  local: SessionKeys,
  remotePublicKey: Uint8Array,
  sessionId: number,
): SessionCrypto | undefined => {
  if (remotePublicKey.length !== PUBLIC_KEY_BYTES) return undefined
  const order = compareBytes(local.publicKey, remotePublicKey)
  if (order === 0) return undefined
  try {
    const der = new Uint8Array(X25519_SPKI_PREFIX.length + 32)
    der.set(X25519_SPKI_PREFIX)
    der.set(remotePublicKey, X25519_SPKI_PREFIX.length)
    const publicKey = createPublicKey({ key: Buffer.from(der), format: "der", type: "spki" })
    const shared = diffieHellman({ privateKey: local.privateKey, publicKey })
    if (shared.every((b) => b === 0)) return undefined
    const [lo, hi] = order < 0 ? [local.publicKey, remotePublicKey] : [remotePublicKey, local.publicKey]
    const info = new Uint8Array(68)
    info.set(lo, 0)
    info.set(hi, 32)
    new DataView(info.buffer).setUint32(64, sessionId, true)
    const key = new Uint8Array(hkdfSync("sha256", shared, SALT, info, 32))
    return { key: createSecretKey(key), sendDirection: order < 0 ? 0 : 1 }
  } catch {
    return undefined
  }
}

const nonceOf = (direction: number, packetNumber: number): Buffer => {
  const nonce = Buffer.alloc(12)
  nonce.writeUInt32LE(direction, 0)
  nonce.writeUInt32LE(packetNumber, 4)
  return nonce
}

const seal = (
  crypto: SessionCrypto,
  header: Uint8Array,
  packetNumber: number,
  plaintext: Uint8Array,
): Uint8Array => {
  const cipher = createCipheriv(
    "chacha20-poly1305",
    crypto.key,
    nonceOf(crypto.sendDirection, packetNumber),
    {
      authTagLength: AEAD_TAG_BYTES,
    },
  )
  cipher.setAAD(header, { plaintextLength: plaintext.length })
  const body = cipher.update(plaintext)
  cipher.final()
  const tag = cipher.getAuthTag()
  const out = new Uint8Array(header.length + body.length + AEAD_TAG_BYTES)
  out.set(header)
  out.set(body, header.length)
  out.set(tag, header.length + body.length)
  return out
}

/** open decrypts a packet sealed by the remote; undefined when it does not authenticate. */
const open = (
  crypto: SessionCrypto,
  data: Uint8Array,
  headerLength: number,
  packetNumber: number,
): Uint8Array | undefined => {
  try {
    const decipher = createDecipheriv(
      "chacha20-poly1305",
      crypto.key,
      nonceOf(1 - crypto.sendDirection, packetNumber),
      { authTagLength: AEAD_TAG_BYTES },
    )
    const tagAt = data.length - AEAD_TAG_BYTES
    decipher.setAuthTag(data.subarray(tagAt))
    decipher.setAAD(data.subarray(0, headerLength), { plaintextLength: tagAt - headerLength })
    const body = decipher.update(data.subarray(headerLength, tagAt))
    decipher.final()
    return new Uint8Array(body.buffer, body.byteOffset, body.length)
  } catch {
    return undefined
  }
}

/** SessionStats describe one session, for tests, getpeerinfo and metrics. */
export interface SessionStats {
  readonly packetsSent: number
  readonly packetsReceived: number
  readonly packetsRetransmitted: number
  readonly duplicatesReceived: number
  readonly smoothedRttMillis: number
  readonly rtoMillis: number
  readonly congestionWindowBytes: number
  readonly bytesInFlight: number
  readonly largestDatagramBytes: number
  /** receiveBufferedBytes: received but not yet read by the owner (in order and out of order); at most RECEIVE_WINDOW_BYTES */
  readonly receiveBufferedBytes: number
}

/** EndpointStats count what an endpoint dropped, by cause. */
export interface EndpointStats {
  readonly sessions: number
  /** authFailures: session packets that did not authenticate (tampered, foreign key, or garbage) */
  readonly authFailures: number
  /** malformed: session packets whose header or (authenticated) frames did not decode */
  readonly malformed: number
  /** unknownSession: SESSION_DATA packets for no session we know */
  readonly unknownSession: number
  /** refusedOpens: OPENs dropped by the session cap, `admitOpen`, the OPEN rate limit or the accept backlog */
  readonly refusedOpens: number
  /** otherDropped: non-session datagrams dropped because `other` was not read fast enough */
  readonly otherDropped: number
}

/** UdpConnection is a session as a Transport Connection, plus who is on the other end. */
export interface UdpConnection extends Connection {
  readonly sessionId: number
  readonly remotePublicKey: Uint8Array
  readonly stats: Effect.Effect<SessionStats>
}

/** ConnectOptions name the remote endpoint (as punched), its public key (from the rendezvous) and optionally the session id (random otherwise). */
export interface ConnectOptions {
  readonly remote: Endpoint
  readonly remotePublicKey: Uint8Array
  readonly sessionId?: number
}

/** SessionEndpointOptions: the node's key pair, and caps. */
export interface SessionEndpointOptions {
  readonly keys: SessionKeys
  /** maxSessions caps live and lingering sessions (default MAX_SESSIONS) */
  readonly maxSessions?: number
  /** acceptInbound: whether OPENs from others start sessions (default true) */
  readonly acceptInbound?: boolean
  /**
   * admitOpen is asked about every OPEN that would start a session, before its X25519 agreement and
   * after the session cap (the node passes the SpamFilter's datagram admission: a banned IP gets no
   * session, one IP's OPENs are limited by its `datagrams` bucket); false drops it (`refusedOpens`).
   * Packets of established sessions are never asked about. Default: every OPEN is admitted
   */
  readonly admitOpen?: (from: Endpoint) => Effect.Effect<boolean>
}

/** SessionEndpoint is one UDP port's sessions. */
export interface SessionEndpoint {
  readonly local: Endpoint
  readonly publicKey: Uint8Array
  /**
   * connect opens a session to `remote` (which must already be reachable: punched, or public) and
   * waits for its first answer; `timeout` after CONNECT_TIMEOUT, `closed` if the endpoint is closed.
   * The session closes (gracefully) with the scope.
   */
  readonly connect: (options: ConnectOptions) => Effect.Effect<UdpConnection, TransportError, Scope.Scope>
  /** accepted holds inbound sessions not yet taken (ACCEPT_BACKLOG); when full, new OPENs are dropped. */
  readonly accepted: Queue.Dequeue<UdpConnection>
  /** other is the same port for the rendezvous protocol: it receives every datagram that is not a session packet. */
  readonly other: DatagramSocket
  readonly stats: Effect.Effect<EndpointStats>
}

interface SentPacket {
  readonly pn: number
  readonly time: number
  readonly size: number
  /** ranges are the stream byte ranges [start, end) the packet carried */
  readonly ranges: ReadonlyArray<readonly [number, number]>
  readonly fin: boolean
  readonly ping: boolean
  /** gone: acked or declared lost */
  gone: boolean
}

type SessionState = "opening" | "open" | "finished" | "reset"

const keyOf = (remote: Endpoint, sessionId: number): string => `${remote.host}|${remote.port}|${sessionId}`

/** insertRange adds [start, end) to a sorted list of disjoint ranges, merging. */
const insertRange = (ranges: Array<[number, number]>, start: number, end: number): void => {
  let i = 0
  while (i < ranges.length && ranges[i]![1] < start) i++
  let s = start
  let e = end
  let j = i
  while (j < ranges.length && ranges[j]![0] <= e) {
    s = Math.min(s, ranges[j]![0])
    e = Math.max(e, ranges[j]![1])
    j++
  }
  ranges.splice(i, j - i, [s, e])
}

let nextConnectionId = 1 << 30

/**
 * Session is one session's protocol state machine, without I/O: `receive` takes an authenticated
 * packet's frames, `step` returns the datagrams to send now and `deadline` says when `step` is next
 * due. Times are Clock milliseconds passed in.
 */
class Session {
  readonly id = nextConnectionId++
  state: SessionState
  endedAt = 0
  error: TransportError | undefined
  readonly established: Deferred.Deferred<void, TransportError>
  // packet numbers and timers
  nextPn = 0
  lastSent: number
  lastReceived: number
  lastAckElicitingSent: number
  // send stream
  private readonly chunks: Array<{ offset: number; bytes: Uint8Array }> = []
  /** sendBase: every byte before it is acked */
  sendBase = 0
  writeOffset = 0
  sendNext = 0
  private readonly acked: Array<[number, number]> = []
  private readonly retransmit: Array<[number, number]> = []
  peerWindow = RECEIVE_WINDOW_BYTES
  localClosed = false
  finOffset = -1
  finInFlight = false
  finAcked = false
  // recovery (RFC 6298, RFC 9002)
  private sent: Array<SentPacket> = []
  bytesInFlight = 0
  srtt = 0
  rttvar = 0
  hasRtt = false
  backoff = 0
  cwnd = INITIAL_CWND_BYTES
  ssthresh = Number.POSITIVE_INFINITY
  recoveryStartPn = 0
  largestAcked = -1
  pingWanted = false
  /** probes: packets that may be sent past the congestion window (after a first RTO expiry) */
  probes = 0
  /**
   * verified: the remote has shown it receives what we send (it acked one of our packets; the
   * initiator chose the address itself). Until then a responder sends at most as many bytes as it
   * received (`bytesIn − bytesOut`), ACKs included, and no keepalives: a replayed or spoofed OPEN
   * cannot turn the session into an amplifier (QUIC's anti-amplification limit, at 1×).
   */
  verified: boolean
  bytesIn = 0
  bytesOut = 0
  resetsToSend = 0
  // receive stream
  private readonly received: Array<AckRange> = []
  ackElicitingUnacked = 0
  ackDeadline = Number.POSITIVE_INFINITY
  ackNow = false
  recvOffset = 0
  private readonly outOfOrder: Array<{ offset: number; bytes: Uint8Array }> = []
  recvFin = -1
  consumed = 0
  advertised = RECEIVE_WINDOW_BYTES
  readClosed = false
  // counters
  packetsSent = 0
  packetsReceived = 0
  packetsRetransmitted = 0
  duplicatesReceived = 0
  largestDatagram = 0

  constructor(
    readonly remote: Endpoint,
    readonly sessionId: number,
    readonly crypto: SessionCrypto,
    readonly localPublicKey: Uint8Array,
    readonly remotePublicKey: Uint8Array,
    readonly initiator: boolean,
    readonly inbox: Mailbox.Mailbox<Uint8Array, TransportError>,
    now: number,
  ) {
    this.state = initiator ? "opening" : "open"
    this.established = Deferred.unsafeMake(FiberId.none)
    this.lastSent = now
    this.lastReceived = now
    this.lastAckElicitingSent = now
    this.verified = initiator
    if (initiator) this.pingWanted = true
  }

  get live(): boolean {
    return this.state === "opening" || this.state === "open"
  }

  rto(): number {
    const base = this.hasRtt
      ? Math.max(
          Duration.toMillis(MIN_RTO),
          this.srtt + Math.max(1, 4 * this.rttvar) + Duration.toMillis(MAX_ACK_DELAY),
        )
      : Duration.toMillis(INITIAL_RTO)
    return Math.min(Duration.toMillis(MAX_RTO), base * 2 ** this.backoff)
  }

  pendingWriteBytes(): number {
    return this.writeOffset - this.sendBase
  }

  write(bytes: Uint8Array): TransportError | undefined {
    if (this.error !== undefined) return this.error
    if (this.localClosed || !this.live) {
      return new TransportError({ reason: "closed", detail: `udp session ${this.id} is closed` })
    }
    if (bytes.length === 0) return undefined
    this.chunks.push({ offset: this.writeOffset, bytes: bytes.slice() })
    this.writeOffset += bytes.length
    return undefined
  }

  /** close: flush then FIN; our read ends at once and later data is acked and discarded. */
  close(): void {
    if (this.localClosed) return
    this.localClosed = true
    this.finOffset = this.writeOffset
    this.closeRead()
  }

  private closeRead(): void {
    if (this.readClosed) return
    this.readClosed = true
    this.inbox.unsafeDone(Exit.void)
    this.consumed = Math.max(this.consumed, this.recvOffset)
    this.outOfOrder.length = 0
  }

  /** abort: drop pending writes, send RESET, end our read. */
  abort(now: number): void {
    if (!this.live) return
    this.localClosed = true
    this.closeRead()
    this.resetsToSend = RESET_REPEATS
    this.end("reset", now, new TransportError({ reason: "closed", detail: `udp session ${this.id} aborted` }))
  }

  /** fail ends the session with an error the owner sees on `read` and `write`. */
  fail(now: number, error: TransportError): void {
    if (!this.live) return
    this.inbox.unsafeDone(Exit.fail(error))
    this.readClosed = true
    this.end("reset", now, error)
  }

  private end(state: "finished" | "reset", now: number, error: TransportError | undefined): void {
    this.state = state
    this.endedAt = now
    if (error !== undefined) this.error = error
    this.chunks.length = 0
    this.retransmit.length = 0
    this.outOfOrder.length = 0
    this.sent = []
    this.bytesInFlight = 0
    Deferred.unsafeDone(
      this.established,
      Exit.fail(error ?? new TransportError({ reason: "closed", detail: `udp session ${this.id} closed` })),
    )
  }

  /** consumedByReader is called as the owner takes bytes: it opens the receive window. */
  consumedByReader(bytes: number): boolean {
    this.consumed += bytes
    if (this.live && this.consumed + RECEIVE_WINDOW_BYTES - this.advertised >= RECEIVE_WINDOW_BYTES / 4) {
      this.ackNow = true
      return true
    }
    return false
  }

  /** receive handles an authenticated packet's frames (from the endpoint's receive fiber). */
  receive(now: number, packetNumber: number, frames: ReadonlyArray<SessionFrame>, size: number): void {
    if (this.isDuplicate(packetNumber)) {
      this.duplicatesReceived++
      return
    }
    this.bytesIn += size
    this.recordReceived(packetNumber)
    this.packetsReceived++
    this.lastReceived = now
    if (this.state === "opening") {
      this.state = "open"
      Deferred.unsafeDone(this.established, Exit.void)
    }
    let ackEliciting = false
    for (const frame of frames) {
      switch (frame._tag) {
        case "Ack":
          if (this.live) this.onAck(now, frame)
          break
        case "Ping":
          ackEliciting = true
          break
        case "Stream":
          ackEliciting = true
          if (this.live) this.onStream(frame.offset, frame.data, frame.fin)
          break
        case "Reset":
          if (this.live) {
            this.fail(
              now,
              new TransportError({ reason: "reset", detail: `udp session ${this.id} reset by the remote` }),
            )
          }
          return
      }
    }
    if (!this.live) {
      if (ackEliciting && this.state === "reset" && this.resetsToSend === 0) this.resetsToSend = 1
      else if (ackEliciting) this.ackNow = true
      return
    }
    if (ackEliciting) {
      this.ackElicitingUnacked++
      const first = this.received[0]!
      const gap = packetNumber !== first.hi || (first.lo === packetNumber && this.received.length > 1)
      if (this.ackElicitingUnacked >= 2 || gap) this.ackNow = true
      else if (this.ackDeadline === Number.POSITIVE_INFINITY)
        this.ackDeadline = now + Duration.toMillis(MAX_ACK_DELAY)
    }
    this.maybeFinish(now)
  }

  private isDuplicate(pn: number): boolean {
    for (const range of this.received) {
      if (pn > range.hi) return false
      if (pn >= range.lo) return true
    }
    return false
  }

  private recordReceived(pn: number): void {
    const ranges = this.received
    let i = 0
    while (i < ranges.length && ranges[i]!.lo > pn) i++
    // ranges[i] is the first range with lo <= pn (pn is above it: not a duplicate)
    const above = i > 0 ? ranges[i - 1] : undefined
    const below = i < ranges.length ? ranges[i] : undefined
    const joinsAbove = above !== undefined && above.lo === pn + 1
    const joinsBelow = below !== undefined && below.hi === pn - 1
    if (joinsAbove && joinsBelow) ranges.splice(i - 1, 2, { lo: below.lo, hi: above.hi })
    else if (joinsAbove) ranges[i - 1] = { lo: pn, hi: above.hi }
    else if (joinsBelow) ranges[i] = { lo: below.lo, hi: pn }
    else ranges.splice(i, 0, { lo: pn, hi: pn })
    if (ranges.length > MAX_ACK_RANGES) ranges.length = MAX_ACK_RANGES
  }

  private onStream(offset: number, data: Uint8Array, fin: boolean): void {
    const end = offset + data.length
    if (end > this.advertised) return // beyond the window we offered: a broken or hostile sender
    if (fin) {
      if (this.recvFin === -1 && end >= this.recvOffset) this.recvFin = end
    }
    if (this.recvFin !== -1 && end > this.recvFin) return
    if (end > this.recvOffset && data.length > 0) {
      if (this.readClosed) {
        // Nobody reads any more: count it as read so the remote is not held up by our window.
        if (offset <= this.recvOffset) this.recvOffset = end
        this.consumed = Math.max(this.consumed, this.recvOffset)
      } else if (offset <= this.recvOffset) {
        this.deliver(data.subarray(this.recvOffset - offset))
        this.drainOutOfOrder()
      } else {
        this.storeOutOfOrder(offset, data)
      }
    }
    if (this.recvFin !== -1 && this.recvOffset === this.recvFin && !this.readClosed) {
      this.readClosed = true
      this.inbox.unsafeDone(Exit.void)
    }
  }

  private deliver(bytes: Uint8Array): void {
    if (bytes.length === 0) return
    this.recvOffset += bytes.length
    this.inbox.unsafeOffer(bytes)
  }

  private storeOutOfOrder(offset: number, data: Uint8Array): void {
    const list = this.outOfOrder
    let lo = 0
    let hi = list.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (list[mid]!.offset < offset) lo = mid + 1
      else hi = mid
    }
    if (lo < list.length && list[lo]!.offset === offset && list[lo]!.bytes.length >= data.length) return
    list.splice(lo, 0, { offset, bytes: data })
  }

  private drainOutOfOrder(): void {
    const list = this.outOfOrder
    let i = 0
    while (i < list.length && list[i]!.offset <= this.recvOffset) {
      const seg = list[i]!
      const end = seg.offset + seg.bytes.length
      if (end > this.recvOffset) this.deliver(seg.bytes.subarray(this.recvOffset - seg.offset))
      i++
    }
    if (i > 0) list.splice(0, i)
  }

  private onAck(now: number, frame: Extract<SessionFrame, { _tag: "Ack" }>): void {
    if (frame.window > this.peerWindow) {
      if (this.sendNext >= this.peerWindow) this.backoff = 0
      this.peerWindow = frame.window
    }
    const largest = frame.ranges[0]!.hi
    if (largest >= this.nextPn) return // acks a packet we never sent: ignore the frame
    const ranges = frame.ranges
    let newlyAcked = false
    let largestNewlyAcked: SentPacket | undefined
    let ackedBytes = 0
    // sent is ascending by pn; ranges are descending: walk ranges from the lowest
    let r = ranges.length - 1
    for (const packet of this.sent) {
      if (packet.gone) continue
      if (packet.pn > largest) break
      while (r >= 0 && ranges[r]!.hi < packet.pn) r--
      if (r < 0) break
      if (packet.pn < ranges[r]!.lo) continue
      packet.gone = true
      newlyAcked = true
      largestNewlyAcked = packet
      this.bytesInFlight -= packet.size
      if (packet.pn >= this.recoveryStartPn) ackedBytes += packet.size
      for (const [s, e] of packet.ranges) this.markAcked(s, e)
      if (packet.fin) {
        this.finInFlight = false
        this.finAcked = true
      }
    }
    if (!newlyAcked) return
    this.verified = true
    if (largest > this.largestAcked) this.largestAcked = largest
    this.backoff = 0
    if (largestNewlyAcked !== undefined && largestNewlyAcked.pn === largest) {
      let sample = now - largestNewlyAcked.time
      if (sample > frame.delayMillis) sample -= Math.min(frame.delayMillis, Duration.toMillis(MAX_ACK_DELAY))
      if (!this.hasRtt) {
        this.srtt = sample
        this.rttvar = sample / 2
        this.hasRtt = true
      } else {
        this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - sample)
        this.srtt = 0.875 * this.srtt + 0.125 * sample
      }
    }
    // congestion avoidance (RFC 5681): slow start below ssthresh, then one packet per window
    if (ackedBytes > 0) {
      if (this.cwnd < this.ssthresh) this.cwnd += ackedBytes
      else this.cwnd += (MAX_DATAGRAM_BYTES * ackedBytes) / this.cwnd
    }
    this.detectLosses(now)
    this.sent = this.sent.filter((p) => !p.gone)
  }

  private markAcked(start: number, end: number): void {
    if (end <= this.sendBase) return
    insertRange(this.acked, Math.max(start, this.sendBase), end)
    while (this.acked.length > 0 && this.acked[0]![0] <= this.sendBase) {
      this.sendBase = Math.max(this.sendBase, this.acked.shift()![1])
    }
    let drop = 0
    while (
      drop < this.chunks.length &&
      this.chunks[drop]!.offset + this.chunks[drop]!.bytes.length <= this.sendBase
    )
      drop++
    if (drop > 0) this.chunks.splice(0, drop)
  }

  private detectLosses(now: number): void {
    const latest = this.hasRtt ? this.srtt : Duration.toMillis(INITIAL_RTO)
    const lossDelay = Math.max(1, (9 / 8) * latest)
    let congestion = false
    for (const packet of this.sent) {
      if (packet.gone || packet.pn >= this.largestAcked) continue
      if (packet.pn <= this.largestAcked - PACKET_THRESHOLD || packet.time <= now - lossDelay) {
        this.lose(packet)
        if (packet.pn >= this.recoveryStartPn) congestion = true
      }
    }
    if (congestion) {
      this.ssthresh = Math.max(this.cwnd / 2, MIN_CWND_BYTES)
      this.cwnd = this.ssthresh
      this.recoveryStartPn = this.nextPn
    }
  }

  private lose(packet: SentPacket): void {
    packet.gone = true
    this.bytesInFlight -= packet.size
    for (const range of packet.ranges) this.retransmit.push([range[0], range[1]])
    if (packet.fin) this.finInFlight = false
    if (packet.ping && this.state === "opening") this.pingWanted = true
  }

  /**
   * onTimeout is RTO expiry; the timer backs off either way (RFC 6298 §5.5). The first expiry sends
   * a probe, the oldest packet's data ahead of the congestion window (RFC 9002 §6.2.4): when only an
   * ACK was lost, the probe's ACK reports the rest received and nothing else is resent. A repeated
   * expiry is taken as real loss (RFC 6298 §5.4–5.7): everything in flight is lost and the window
   * restarts from MIN_CWND_BYTES.
   */
  private onTimeout(): void {
    if (this.backoff === 0) {
      this.backoff++
      const oldest = this.sent[0]!
      this.lose(oldest)
      if (oldest.ranges.length === 0) this.pingWanted = true
      this.sent = this.sent.filter((p) => !p.gone)
      this.probes = 1
      return
    }
    const inFlight = this.bytesInFlight
    for (const packet of this.sent) this.lose(packet)
    this.sent = []
    this.bytesInFlight = 0
    if (inFlight > 0) {
      this.ssthresh = Math.max(inFlight / 2, MIN_CWND_BYTES)
      this.cwnd = MIN_CWND_BYTES
    }
    this.recoveryStartPn = this.nextPn
    this.backoff++
  }

  private blockedByWindow(): boolean {
    return (
      this.sendNext < this.writeOffset && this.sendNext >= this.peerWindow && this.retransmit.length === 0
    )
  }

  /** deadline is when `step` is next due (Infinity when nothing is). */
  deadline(): number {
    if (this.state === "finished" || this.state === "reset") {
      if (this.resetsToSend > 0 || this.ackNow) return 0
      return this.endedAt + Duration.toMillis(CLOSED_LINGER)
    }
    let at = this.lastReceived + Duration.toMillis(IDLE_TIMEOUT)
    if (this.verified) at = Math.min(at, this.lastSent + Duration.toMillis(KEEPALIVE_INTERVAL))
    if (this.sent.length > 0 || this.blockedByWindow())
      at = Math.min(at, this.lastAckElicitingSent + this.rto())
    if (this.ackElicitingUnacked > 0) at = Math.min(at, this.ackDeadline)
    return at
  }

  /** expired says whether a finished or reset session may be forgotten. */
  expired(now: number): boolean {
    return !this.live && this.resetsToSend === 0 && now >= this.endedAt + Duration.toMillis(CLOSED_LINGER)
  }

  /** step runs the timers due at `now` and returns up to MAX_PACKETS_PER_STEP datagrams to send. */
  step(now: number): Array<Uint8Array> {
    const out: Array<Uint8Array> = []
    if (this.live) {
      if (now >= this.lastReceived + Duration.toMillis(IDLE_TIMEOUT)) {
        this.fail(now, new TransportError({ reason: "timeout", detail: `udp session ${this.id} idle` }))
      } else {
        if (now >= this.lastAckElicitingSent + this.rto()) {
          if (this.sent.length > 0) {
            this.onTimeout()
          } else if (this.blockedByWindow()) {
            this.pingWanted = true // zero-window probe (the window update may have been lost)
            this.backoff++
          }
        }
        if (this.verified && now >= this.lastSent + Duration.toMillis(KEEPALIVE_INTERVAL))
          this.pingWanted = true
        if (this.ackElicitingUnacked > 0 && now >= this.ackDeadline) this.ackNow = true
      }
    }
    if (this.resetsToSend > 0) {
      while (this.resetsToSend > 0) {
        this.resetsToSend--
        const packet = this.seal(now, [{ _tag: "Reset" }])
        if (packet !== undefined) out.push(packet)
      }
      return out
    }
    while (out.length < MAX_PACKETS_PER_STEP) {
      const packet = this.buildPacket(now)
      if (packet === undefined) break
      out.push(packet)
    }
    return out
  }

  /** more says whether `step` stopped at its burst limit with more to send. */
  more(): boolean {
    if (!this.live) return false
    if (this.ackNow) return true
    const allowance = this.verified
      ? Number.POSITIVE_INFINITY
      : this.bytesIn - this.bytesOut - OPEN_HEADER_BYTES - AEAD_TAG_BYTES
    return allowance > STREAM_FRAME_OVERHEAD && (this.pingWanted || (this.canSendData() && this.hasData()))
  }

  private canSendData(): boolean {
    return this.bytesInFlight < this.cwnd || this.probes > 0
  }

  private hasData(): boolean {
    return (
      this.retransmit.length > 0 ||
      (this.sendNext < this.writeOffset && this.sendNext < this.peerWindow) ||
      (this.localClosed && !this.finAcked && !this.finInFlight && this.sendNext >= this.finOffset)
    )
  }

  private ackFrame(now: number): SessionFrame {
    this.advertised = Math.max(this.advertised, this.consumed + RECEIVE_WINDOW_BYTES)
    const delayMillis =
      this.ackDeadline === Number.POSITIVE_INFINITY
        ? 0
        : Math.max(0, Math.round(now - (this.ackDeadline - Duration.toMillis(MAX_ACK_DELAY))))
    this.ackElicitingUnacked = 0
    this.ackDeadline = Number.POSITIVE_INFINITY
    this.ackNow = false
    // Ranges far below the largest are of no use to the sender (it declared those packets lost long ago).
    const floor = this.received[0]!.hi - ACK_RANGE_SPAN
    const ranges = this.received.filter((range) => range.hi >= floor)
    return { _tag: "Ack", ranges, delayMillis, window: this.advertised }
  }

  /** sliceSend copies stream bytes [start, end) out of the send buffer. */
  private sliceSend(start: number, end: number): Uint8Array {
    const out = new Uint8Array(end - start)
    let lo = 0
    let hi = this.chunks.length - 1
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1
      if (this.chunks[mid]!.offset <= start) lo = mid
      else hi = mid - 1
    }
    let at = start
    for (let i = lo; at < end && i < this.chunks.length; i++) {
      const chunk = this.chunks[i]!
      const from = at - chunk.offset
      const take = Math.min(chunk.bytes.length - from, end - at)
      out.set(chunk.bytes.subarray(from, from + take), at - start)
      at += take
    }
    return out
  }

  /** nextRetransmit takes the next lost range still unacked, at most `room` bytes of it. */
  private nextRetransmit(room: number): [number, number] | undefined {
    while (this.retransmit.length > 0) {
      const range = this.retransmit[0]!
      let start = Math.max(range[0], this.sendBase)
      // skip parts acked out of order
      for (const [s, e] of this.acked) {
        if (e <= start) continue
        if (s <= start) start = e
        else break
      }
      if (start >= range[1]) {
        this.retransmit.shift()
        continue
      }
      let end = Math.min(range[1], start + room)
      for (const [s] of this.acked) {
        if (s > start) {
          end = Math.min(end, s)
          break
        }
      }
      if (end >= range[1]) this.retransmit.shift()
      else range[0] = end
      return [start, end]
    }
    return undefined
  }

  private buildPacket(now: number): Uint8Array | undefined {
    if (!this.live && !this.ackNow) return undefined
    const header = this.state === "opening" ? OPEN_HEADER_BYTES : SHORT_HEADER_BYTES
    let room = MAX_DATAGRAM_BYTES - header - AEAD_TAG_BYTES
    // An unverified remote gets no more bytes than it sent (ACKs are always answered: each is smaller than what it acks).
    let allowance = this.verified
      ? Number.POSITIVE_INFINITY
      : this.bytesIn - this.bytesOut - header - AEAD_TAG_BYTES
    const frames: Array<SessionFrame> = []
    if (this.ackNow || (this.ackElicitingUnacked > 0 && this.received.length > 0)) {
      if (this.received.length > 0) {
        const ack = this.ackFrame(now)
        frames.push(ack)
        room -= frameSize(ack)
        allowance -= frameSize(ack)
      } else {
        this.ackNow = false
      }
    }
    room = Math.min(room, allowance)
    const ranges: Array<readonly [number, number]> = []
    let fin = false
    let retransmitted = false
    if (this.live && this.canSendData()) {
      while (room > STREAM_FRAME_OVERHEAD) {
        const range = this.nextRetransmit(room - STREAM_FRAME_OVERHEAD)
        if (range === undefined) break
        const finHere = this.localClosed && range[1] === this.finOffset && !this.finAcked
        frames.push({
          _tag: "Stream",
          offset: range[0],
          data: this.sliceSend(range[0], range[1]),
          fin: finHere,
        })
        room -= STREAM_FRAME_OVERHEAD + range[1] - range[0]
        ranges.push(range)
        retransmitted = true
        if (finHere) {
          fin = true
          this.finInFlight = true
        }
      }
      const limit = Math.min(this.writeOffset, this.peerWindow)
      if (room > STREAM_FRAME_OVERHEAD && this.sendNext < limit) {
        const start = this.sendNext
        const end = Math.min(limit, start + room - STREAM_FRAME_OVERHEAD)
        const finHere = this.localClosed && end === this.finOffset
        frames.push({ _tag: "Stream", offset: start, data: this.sliceSend(start, end), fin: finHere })
        room -= STREAM_FRAME_OVERHEAD + end - start
        ranges.push([start, end])
        this.sendNext = end
        if (finHere) {
          fin = true
          this.finInFlight = true
        }
      }
      if (
        !fin &&
        this.localClosed &&
        !this.finAcked &&
        !this.finInFlight &&
        this.sendNext >= this.finOffset &&
        room > STREAM_FRAME_OVERHEAD
      ) {
        frames.push({ _tag: "Stream", offset: this.finOffset, data: new Uint8Array(0), fin: true })
        ranges.push([this.finOffset, this.finOffset])
        fin = true
        this.finInFlight = true
      }
    }
    let ping = false
    if (this.live && this.pingWanted && room >= 1) {
      this.pingWanted = false
      if (ranges.length === 0) {
        frames.push({ _tag: "Ping" })
        ping = true
      }
    }
    if (frames.length === 0) return undefined
    const pn = this.nextPn
    const packet = this.seal(now, frames)
    if (packet === undefined) return undefined
    if (ranges.length > 0 || ping) {
      this.sent.push({ pn, time: now, size: packet.length, ranges, fin, ping, gone: false })
      this.bytesInFlight += packet.length
      this.lastAckElicitingSent = now
      if (retransmitted) this.packetsRetransmitted++
      if (this.probes > 0) this.probes--
    }
    return packet
  }

  private seal(now: number, frames: ReadonlyArray<SessionFrame>): Uint8Array | undefined {
    if (this.nextPn > MAX_PACKET_NUMBER) {
      this.fail(
        now,
        new TransportError({ reason: "reset", detail: `udp session ${this.id} ran out of packet numbers` }),
      )
      return undefined
    }
    const pn = this.nextPn++
    const type = this.state === "opening" ? SESSION_OPEN : SESSION_DATA
    const header = encodeSessionHeader({
      type,
      sessionId: this.sessionId,
      packetNumber: pn,
      publicKey: type === SESSION_OPEN ? this.localPublicKey : undefined,
    })
    const packet = seal(this.crypto, header, pn, encodeFrames(frames))
    this.lastSent = now
    this.bytesOut += packet.length
    this.packetsSent++
    this.largestDatagram = Math.max(this.largestDatagram, packet.length)
    return packet
  }

  /** maybeFinish ends a closed session once its FIN and every byte before it are acked (a FIN's ACK alone does not say earlier packets arrived). */
  maybeFinish(now: number): void {
    if (this.live && this.localClosed && this.finAcked && this.sendBase >= this.finOffset && this.readClosed)
      this.end("finished", now, undefined)
  }

  stats(): SessionStats {
    return {
      packetsSent: this.packetsSent,
      packetsReceived: this.packetsReceived,
      packetsRetransmitted: this.packetsRetransmitted,
      duplicatesReceived: this.duplicatesReceived,
      smoothedRttMillis: this.srtt,
      rtoMillis: this.rto(),
      congestionWindowBytes: this.cwnd,
      bytesInFlight: this.bytesInFlight,
      largestDatagramBytes: this.largestDatagram,
      receiveBufferedBytes:
        this.recvOffset -
        Math.min(this.consumed, this.recvOffset) +
        this.outOfOrder.reduce((n, seg) => n + seg.bytes.length, 0),
    }
  }
}

/**
 * makeSessionEndpoint takes over `socket`'s received stream and serves sessions on it until the
 * scope closes (then every session's read fails with `reset`). The caller must not read
 * `socket.received` itself: non-session datagrams arrive on `other.received`.
 */
export const makeSessionEndpoint = (
  socket: DatagramSocket,
  options: SessionEndpointOptions,
): Effect.Effect<SessionEndpoint, never, Scope.Scope> =>
  Effect.gen(function* () {
    const scope = yield* Effect.scope
    const keys = options.keys
    const maxSessions = options.maxSessions ?? MAX_SESSIONS
    const acceptInbound = options.acceptInbound ?? true
    const admitOpen = options.admitOpen
    const sessions = new Map<string, { session: Session; wake: () => void }>()
    const accepted = yield* Effect.acquireRelease(
      Queue.dropping<UdpConnection>(ACCEPT_BACKLOG),
      Queue.shutdown,
    )
    const otherInbox = yield* Effect.acquireRelease(
      Mailbox.make<ReceivedDatagram>({ capacity: RECEIVE_BUFFER_DATAGRAMS, strategy: "dropping" }),
      (mailbox) => mailbox.shutdown,
    )
    const counters = { authFailures: 0, malformed: 0, unknownSession: 0, refusedOpens: 0, otherDropped: 0 }
    let openTokens = OPEN_RATE_PER_SECOND
    let openTokensAt = 0
    let endpointClosed = false

    /** drive is a session's one sending fiber: step, send, then sleep until the next deadline or a wake. */
    const drive = (key: string, session: Session, signal: Queue.Queue<void>) =>
      Effect.gen(function* () {
        let armedAt = Number.POSITIVE_INFINITY
        let timer: Fiber.RuntimeFiber<void> | undefined
        while (true) {
          const now = yield* Clock.currentTimeMillis
          const packets = session.step(now)
          for (const packet of packets) yield* Effect.ignore(socket.send(session.remote, packet))
          if (session.expired(now)) {
            if (sessions.get(key)?.session === session) sessions.delete(key)
            if (timer !== undefined) yield* Fiber.interruptFork(timer)
            return
          }
          if (session.more()) {
            yield* Effect.yieldNow()
            continue
          }
          // A timer that is due but made no progress (nothing could be sent) is retried a little later, never spun on.
          const due = session.deadline()
          if (due <= now && packets.length > 0) continue
          const deadline = Math.max(due, now + 1)
          if (deadline < armedAt - TIMER_SLACK_MILLIS || armedAt <= now) {
            armedAt = deadline
            if (timer !== undefined) yield* Fiber.interruptFork(timer)
            timer = yield* Effect.forkIn(
              Effect.interruptible(
                Effect.andThen(
                  Effect.sleep(Duration.millis(deadline - now)),
                  () => void Queue.unsafeOffer(signal, undefined),
                ),
              ),
              scope,
            )
          }
          yield* Queue.take(signal)
        }
      })

    const connectionOf = (session: Session, wake: () => void): UdpConnection => ({
      id: session.id,
      remote: session.remote,
      local: socket.local,
      direction: session.initiator ? "outbound" : "inbound",
      transport: "udp",
      sessionId: session.sessionId,
      remotePublicKey: session.remotePublicKey,
      read: Stream.repeatEffectChunkOption(
        Effect.flatMap(Effect.mapError(session.inbox.takeAll, Option.some), ([chunk, done]) =>
          Effect.suspend(() => {
            let bytes = 0
            for (const c of chunk) bytes += c.length
            if (bytes > 0 && session.consumedByReader(bytes)) wake()
            if (Chunk.isEmpty(chunk) && done) return Effect.fail(Option.none())
            return Effect.succeed(chunk)
          }),
        ),
      ),
      write: (bytes) =>
        Effect.suspend(() => {
          const error = session.write(bytes)
          if (error !== undefined) return Effect.fail(error)
          wake()
          return Effect.void
        }),
      pendingWriteBytes: Effect.sync(() => (session.live ? session.pendingWriteBytes() : 0)),
      close: Effect.sync(() => {
        session.close()
        wake()
      }),
      abort: Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.sync(() => {
          session.abort(now)
          wake()
        }),
      ),
      stats: Effect.sync(() => session.stats()),
    })

    const start = (key: string, session: Session): Effect.Effect<UdpConnection> =>
      Effect.gen(function* () {
        const signal = yield* Queue.sliding<void>(1)
        const wake = () => void Queue.unsafeOffer(signal, undefined)
        sessions.set(key, { session, wake })
        yield* Effect.forkIn(Effect.interruptible(drive(key, session, signal)), scope)
        return connectionOf(session, wake)
      })

    const takeOpenToken = (now: number): boolean => {
      openTokens = Math.min(
        OPEN_RATE_PER_SECOND,
        openTokens + ((now - openTokensAt) * OPEN_RATE_PER_SECOND) / 1000,
      )
      openTokensAt = now
      if (openTokens < 1) return false
      openTokens -= 1
      return true
    }

    /** handle routes one received datagram (the endpoint's receive fiber). */
    const handle = (datagram: ReceivedDatagram): Effect.Effect<void> =>
      Effect.gen(function* () {
        if (!isSessionDatagram(datagram.data)) {
          if (!otherInbox.unsafeOffer(datagram)) counters.otherDropped++
          return
        }
        const header = decodeSessionHeader(datagram.data)
        if (Either.isLeft(header)) {
          counters.malformed++
          return
        }
        const h = header.right
        const now = yield* Clock.currentTimeMillis
        const key = keyOf(datagram.from, h.sessionId)
        const entry = sessions.get(key)
        if (entry !== undefined) {
          const session = entry.session
          if (h.publicKey !== undefined && compareBytes(h.publicKey, session.remotePublicKey) !== 0) {
            counters.authFailures++
            return
          }
          const plaintext = open(session.crypto, datagram.data, h.length, h.packetNumber)
          if (plaintext === undefined) {
            counters.authFailures++
            return
          }
          const frames = decodeFrames(plaintext)
          if (Either.isLeft(frames)) {
            counters.malformed++
            return
          }
          session.receive(now, h.packetNumber, frames.right, datagram.data.length)
          entry.wake()
          return
        }
        if (h.publicKey === undefined) {
          counters.unknownSession++
          return
        }
        // the source's own admission before the endpoint-wide OPEN rate, so one IP's flood (or a banned
        // IP) does not spend the tokens every other source's OPENs need
        if (
          !acceptInbound ||
          endpointClosed ||
          sessions.size >= maxSessions ||
          (admitOpen !== undefined && !(yield* admitOpen(datagram.from))) ||
          !takeOpenToken(now)
        ) {
          counters.refusedOpens++
          return
        }
        const crypto = deriveSessionCrypto(keys, h.publicKey, h.sessionId)
        const plaintext =
          crypto === undefined ? undefined : open(crypto, datagram.data, h.length, h.packetNumber)
        if (crypto === undefined || plaintext === undefined) {
          counters.authFailures++
          return
        }
        const frames = decodeFrames(plaintext)
        if (Either.isLeft(frames)) {
          counters.malformed++
          return
        }
        if (yield* Queue.isFull(accepted)) {
          counters.refusedOpens++
          return
        }
        const inbox = yield* Mailbox.make<Uint8Array, TransportError>()
        const session = new Session(
          datagram.from,
          h.sessionId,
          crypto,
          keys.publicKey,
          h.publicKey,
          false,
          inbox,
          now,
        )
        session.receive(now, h.packetNumber, frames.right, datagram.data.length)
        const conn = yield* start(key, session)
        yield* Queue.offer(accepted, conn)
      })

    yield* Effect.forkScoped(Effect.interruptible(Stream.runForEach(socket.received, handle)))
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        endpointClosed = true
        for (const { session } of sessions.values()) {
          session.fail(0, new TransportError({ reason: "reset", detail: "udp endpoint closed" }))
        }
        sessions.clear()
      }),
    )

    const connect = (
      connectOptions: ConnectOptions,
    ): Effect.Effect<UdpConnection, TransportError, Scope.Scope> =>
      Effect.acquireRelease(
        Effect.gen(function* () {
          if (endpointClosed) {
            return yield* Effect.fail(new TransportError({ reason: "closed", detail: "udp endpoint closed" }))
          }
          const sessionId = connectOptions.sessionId ?? (yield* Random.nextIntBetween(1, 0x7fff_ffff))
          const remote = connectOptions.remote
          const key = keyOf(remote, sessionId)
          if (sessions.has(key)) {
            return yield* Effect.fail(
              new TransportError({
                reason: "in-use",
                detail: `session ${sessionId} to ${remote.host}:${remote.port} exists`,
              }),
            )
          }
          const crypto = deriveSessionCrypto(keys, connectOptions.remotePublicKey, sessionId)
          if (crypto === undefined) {
            return yield* Effect.fail(
              new TransportError({ reason: "refused", detail: "unusable remote public key" }),
            )
          }
          const now = yield* Clock.currentTimeMillis
          const inbox = yield* Mailbox.make<Uint8Array, TransportError>()
          const session = new Session(
            remote,
            sessionId,
            crypto,
            keys.publicKey,
            connectOptions.remotePublicKey.slice(),
            true,
            inbox,
            now,
          )
          const conn = yield* start(key, session)
          const answered = yield* Effect.interruptible(Deferred.await(session.established)).pipe(
            Effect.timeoutOption(CONNECT_TIMEOUT),
            Effect.either,
          )
          if (Either.isRight(answered) && Option.isSome(answered.right)) return conn
          // The session lingers (CLOSED_LINGER) so a late answer is met with RESET, not a new session.
          session.fail(
            yield* Clock.currentTimeMillis,
            new TransportError({ reason: "timeout", detail: "connect timed out" }),
          )
          return yield* Effect.fail(
            Either.isLeft(answered)
              ? answered.left
              : new TransportError({
                  reason: "timeout",
                  detail: `no answer from ${remote.host}:${remote.port} in ${Duration.format(CONNECT_TIMEOUT)}`,
                }),
          )
        }),
        (conn) => conn.close,
      )

    const other: DatagramSocket = {
      local: socket.local,
      send: socket.send,
      received: Mailbox.toStream(otherInbox),
      close: otherInbox.shutdown,
    }

    return {
      local: socket.local,
      publicKey: keys.publicKey,
      connect,
      accepted,
      other,
      stats: Effect.sync(() => ({ sessions: sessions.size, ...counters })),
    }
  })
