import { Either, Schema } from "effect"
import { Reader, Writer } from "./codec.js"
import { DecodeError } from "./DecodeError.js"
import { Bytes32, U32 } from "./primitives.js"
import { U16, U64 } from "./wire.js"

/**
 * The rendezvous protocol (issue 8): the datagrams a node's UDP port speaks besides UDP sessions.
 * Every datagram starts with its type byte, in 0x00–0x3f (the session layer's packets use 0x40–0x7f,
 * so one demux can tell them apart by the first byte). Integers are little-endian as in the rest of the
 * wire, except ports, which are big-endian as in Bitcoin's net addresses.
 *
 * | type | message | fields after the type byte | bytes |
 * |---|---|---|---|
 * | 0x01 | echo | txid u32, cookie 16 | 21 |
 * | 0x02 | echo-reply | txid u32, observed endpoint | 9–72 |
 * | 0x03 | cookie | txid u32, cookie 16 | 21 |
 * | 0x04 | register | txid u32, cookie 16, identity | 158 |
 * | 0x05 | registered | txid u32, ttl seconds u32, observed endpoint | 13–76 |
 * | 0x06 | introduce | txid u32, cookie 16, target node key 32, identity | 190 |
 * | 0x07 | introduction | txid u32, node key 32, session key 32, flags u8, endpoint | 74–137 |
 * | 0x08 | refused | txid u32, reason u8 | 6 |
 * | 0x09 | punch | nonce u64, sender node key 32 | 41 |
 * | 0x0a | punch-ack | nonce u64, sender node key 32 | 41 |
 *
 * identity = node key 32 (BIP340 x-only), session key 32 (X25519), flags u8, timestamp u64 (ms since
 * the epoch), signature 64 (BIP340, over the digest the Rendezvous actor computes, which covers the
 * cookie, so a captured registration cannot be replayed from another source address).
 * endpoint = host (varint length 1–64, printable ASCII: an IP literal or a sim host name), port u16.
 *
 * Anti-amplification is built into the sizes: every request a server answers before the source has
 * proved it receives (echo, register, introduce without a valid cookie) is at least as large as the
 * `cookie` challenge (21 bytes), and nothing else goes to such a source.
 */

/** RENDEZVOUS_TYPE_MAX is the highest type byte of the rendezvous protocol; 0x40 and up belong to sessions. */
export const RENDEZVOUS_TYPE_MAX = 0x3f

/** COOKIE_BYTES is the size of the stateless address-validation cookie (a truncated HMAC-SHA256). */
export const COOKIE_BYTES = 16
/** NO_COOKIE is the all-zero cookie a client sends before it holds one. */
export const NO_COOKIE: Uint8Array = new Uint8Array(COOKIE_BYTES)
/** MAX_HOST_BYTES caps an endpoint's host text (an IPv6 literal with a zone fits). */
export const MAX_HOST_BYTES = 64
/** FLAG_SYMMETRIC_NAT marks an identity whose NAT maps per destination (its echo endpoints differ by server). */
export const FLAG_SYMMETRIC_NAT = 1
/** KNOWN_FLAGS: any other flag bit is refused (room to grow behind a version bump, not silently). */
export const KNOWN_FLAGS = FLAG_SYMMETRIC_NAT

/** Cookie is the 16-byte address-validation token (all zero: none yet). */
export const Cookie = Schema.Uint8ArrayFromSelf.pipe(
  Schema.filter((b) => b.length === COOKIE_BYTES, {
    message: () => `expected exactly ${COOKIE_BYTES} bytes`,
  }),
)
/** Signature64 is a BIP340 signature. */
export const Signature64 = Schema.Uint8ArrayFromSelf.pipe(
  Schema.filter((b) => b.length === 64, { message: () => "expected exactly 64 bytes" }),
)
/** Txid is a request id (u32), chosen by the requester and echoed in the answer. */
const Txid = U32
const Flags = Schema.Number.pipe(
  Schema.int(),
  Schema.between(0, 0xff),
  Schema.filter((f) => (f & ~KNOWN_FLAGS) === 0, { message: () => "unknown flag bits" }),
)

const isHostText = (s: string): boolean => {
  if (s.length === 0 || s.length > MAX_HOST_BYTES) return false
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c <= 0x20 || c > 0x7e) return false
  }
  return true
}

/** RendezvousEndpoint is a host (IP literal or sim name, 1–64 printable ASCII, no spaces) and port. */
export const RendezvousEndpoint = Schema.Struct({
  host: Schema.String.pipe(
    Schema.filter(isHostText, { message: () => "host of 1-64 printable ASCII bytes" }),
  ),
  port: U16,
})
export type RendezvousEndpoint = typeof RendezvousEndpoint.Type

/** Identity is what a node signs to register or ask for an introduction. */
export const Identity = Schema.Struct({
  nodeKey: Bytes32,
  sessionKey: Bytes32,
  flags: Flags,
  timestamp: U64,
  sig: Signature64,
})
export type Identity = typeof Identity.Type

/** EchoRequest asks a server which endpoint it sees us at (STUN's binding request). */
export class EchoRequest extends Schema.TaggedClass<EchoRequest>()("echo", { txid: Txid, cookie: Cookie }) {}

/** EchoReply tells the requester its observed (public) endpoint; only sent to a cookie-verified source. */
export class EchoReply extends Schema.TaggedClass<EchoReply>()("echo-reply", {
  txid: Txid,
  observed: RendezvousEndpoint,
}) {}

/** CookieChallenge answers a request without a valid cookie: the source echoes it to prove it receives. */
export class CookieChallenge extends Schema.TaggedClass<CookieChallenge>()("cookie", {
  txid: Txid,
  cookie: Cookie,
}) {}

/** RegisterRequest keeps a signed registration at a server; repeated as keepalive (fresh timestamp). */
export class RegisterRequest extends Schema.TaggedClass<RegisterRequest>()("register", {
  txid: Txid,
  cookie: Cookie,
  identity: Identity,
}) {}

/** Registered confirms a registration, with the endpoint it is kept under and how long it lasts. */
export class Registered extends Schema.TaggedClass<Registered>()("registered", {
  txid: Txid,
  ttlSeconds: U32,
  observed: RendezvousEndpoint,
}) {}

/** IntroduceRequest asks a server to introduce the signer to the node registered under `target`. */
export class IntroduceRequest extends Schema.TaggedClass<IntroduceRequest>()("introduce", {
  txid: Txid,
  cookie: Cookie,
  target: Bytes32,
  identity: Identity,
}) {}

/**
 * Introduction tells one side of an introduction the other's node key, session key, flags and public
 * endpoint. `txid` is the requester's request id, 0 in the one sent to the target.
 */
export class Introduction extends Schema.TaggedClass<Introduction>()("introduction", {
  txid: Txid,
  nodeKey: Bytes32,
  sessionKey: Bytes32,
  flags: Flags,
  endpoint: RendezvousEndpoint,
}) {}

/** REFUSED_REASONS names each refusal; the wire carries its index + 1. */
export const REFUSED_REASONS = [
  "unknown-target",
  "registrations-full",
  "ip-registrations-full",
  "bad-signature",
  "stale-timestamp",
  "not-serving",
] as const
export type RefusedReason = (typeof REFUSED_REASONS)[number]

/** Refused says why a verified request was not served. */
export class Refused extends Schema.TaggedClass<Refused>()("refused", {
  txid: Txid,
  reason: Schema.Literal(...REFUSED_REASONS),
}) {}

/** Punch is a hole-punching probe: `nonce` is the sender's, to be echoed back in a PunchAck. */
export class Punch extends Schema.TaggedClass<Punch>()("punch", { nonce: U64, sender: Bytes32 }) {}

/** PunchAck echoes a probe's nonce back to where the probe came from. */
export class PunchAck extends Schema.TaggedClass<PunchAck>()("punch-ack", { nonce: U64, sender: Bytes32 }) {}

/** RendezvousMessage is every rendezvous datagram. */
export const RendezvousMessage = Schema.Union(
  EchoRequest,
  EchoReply,
  CookieChallenge,
  RegisterRequest,
  Registered,
  IntroduceRequest,
  Introduction,
  Refused,
  Punch,
  PunchAck,
)
export type RendezvousMessage = typeof RendezvousMessage.Type

/** TYPE_OF is each message's type byte. */
export const TYPE_OF: { readonly [K in RendezvousMessage["_tag"]]: number } = {
  echo: 0x01,
  "echo-reply": 0x02,
  cookie: 0x03,
  register: 0x04,
  registered: 0x05,
  introduce: 0x06,
  introduction: 0x07,
  refused: 0x08,
  punch: 0x09,
  "punch-ack": 0x0a,
}

const IDENTITY_BYTES = 32 + 32 + 1 + 8 + 64
const ENDPOINT_MAX_BYTES = 1 + MAX_HOST_BYTES + 2

/** MAX_BYTES is each type's largest encoding (type byte included); longer datagrams are refused unread. */
export const MAX_BYTES: { readonly [K in RendezvousMessage["_tag"]]: number } = {
  echo: 1 + 4 + COOKIE_BYTES,
  "echo-reply": 1 + 4 + ENDPOINT_MAX_BYTES,
  cookie: 1 + 4 + COOKIE_BYTES,
  register: 1 + 4 + COOKIE_BYTES + IDENTITY_BYTES,
  registered: 1 + 4 + 4 + ENDPOINT_MAX_BYTES,
  introduce: 1 + 4 + COOKIE_BYTES + 32 + IDENTITY_BYTES,
  introduction: 1 + 4 + 32 + 32 + 1 + ENDPOINT_MAX_BYTES,
  refused: 1 + 4 + 1,
  punch: 1 + 8 + 32,
  "punch-ack": 1 + 8 + 32,
}

/** MAX_RENDEZVOUS_BYTES is the largest rendezvous datagram (an introduce). */
export const MAX_RENDEZVOUS_BYTES = Math.max(...Object.values(MAX_BYTES))

const tagOfType = new Map<number, RendezvousMessage["_tag"]>(
  Object.entries(TYPE_OF).map(([tag, type]) => [type, tag as RendezvousMessage["_tag"]]),
)

/** isRendezvousType tells whether a datagram's first byte belongs to this protocol (a demux's test). */
export const isRendezvousType = (type: number): boolean => type >= 0 && type <= RENDEZVOUS_TYPE_MAX

// ---------------------------------------------------------------------------------------------------
// Codecs

const trusted = true

const readU16 = (r: Reader, what: string): number => (r.u8(what) << 8) | r.u8(what)
const writeU16 = (w: Writer, v: number): void => {
  w.u8(v >>> 8)
  w.u8(v & 0xff)
}

const readEndpoint = (r: Reader, what: string): RendezvousEndpoint => {
  const start = r.pos
  const bytes = r.varBytes(`${what}.host`, MAX_HOST_BYTES)
  const host = String.fromCharCode(...bytes)
  if (!isHostText(host)) {
    r.pos = start
    r.fail("invalid-value", `${what}.host`)
  }
  return { host, port: readU16(r, `${what}.port`) }
}
const endpointSize = (ep: RendezvousEndpoint): number => 1 + ep.host.length + 2
const writeEndpoint = (w: Writer, ep: RendezvousEndpoint): void => {
  w.u8(ep.host.length)
  for (let i = 0; i < ep.host.length; i++) w.u8(ep.host.charCodeAt(i))
  writeU16(w, ep.port)
}

const readFlags = (r: Reader, what: string): number => {
  const f = r.u8(what)
  if ((f & ~KNOWN_FLAGS) !== 0) {
    r.pos--
    r.fail("invalid-value", what)
  }
  return f
}

const readIdentity = (r: Reader, what: string): Identity => ({
  nodeKey: r.bytesN(32, `${what}.nodeKey`),
  sessionKey: r.bytesN(32, `${what}.sessionKey`),
  flags: readFlags(r, `${what}.flags`),
  timestamp: r.u64(`${what}.timestamp`),
  sig: r.bytesN(64, `${what}.sig`),
})
const writeIdentity = (w: Writer, id: Identity): void => {
  w.raw(id.nodeKey)
  w.raw(id.sessionKey)
  w.u8(id.flags)
  w.u64(id.timestamp)
  w.raw(id.sig)
}

const readBody = (r: Reader, tag: RendezvousMessage["_tag"]): RendezvousMessage => {
  switch (tag) {
    case "echo":
      return new EchoRequest(
        { txid: r.u32("echo.txid"), cookie: r.bytesN(COOKIE_BYTES, "echo.cookie") },
        trusted,
      )
    case "echo-reply":
      return new EchoReply(
        { txid: r.u32("echo-reply.txid"), observed: readEndpoint(r, "echo-reply.observed") },
        trusted,
      )
    case "cookie":
      return new CookieChallenge(
        { txid: r.u32("cookie.txid"), cookie: r.bytesN(COOKIE_BYTES, "cookie.cookie") },
        trusted,
      )
    case "register":
      return new RegisterRequest(
        {
          txid: r.u32("register.txid"),
          cookie: r.bytesN(COOKIE_BYTES, "register.cookie"),
          identity: readIdentity(r, "register.identity"),
        },
        trusted,
      )
    case "registered":
      return new Registered(
        {
          txid: r.u32("registered.txid"),
          ttlSeconds: r.u32("registered.ttlSeconds"),
          observed: readEndpoint(r, "registered.observed"),
        },
        trusted,
      )
    case "introduce":
      return new IntroduceRequest(
        {
          txid: r.u32("introduce.txid"),
          cookie: r.bytesN(COOKIE_BYTES, "introduce.cookie"),
          target: r.bytesN(32, "introduce.target"),
          identity: readIdentity(r, "introduce.identity"),
        },
        trusted,
      )
    case "introduction":
      return new Introduction(
        {
          txid: r.u32("introduction.txid"),
          nodeKey: r.bytesN(32, "introduction.nodeKey"),
          sessionKey: r.bytesN(32, "introduction.sessionKey"),
          flags: readFlags(r, "introduction.flags"),
          endpoint: readEndpoint(r, "introduction.endpoint"),
        },
        trusted,
      )
    case "refused": {
      const txid = r.u32("refused.txid")
      const code = r.u8("refused.reason")
      const reason = REFUSED_REASONS[code - 1]
      if (reason === undefined) {
        r.pos--
        r.fail("invalid-value", "refused.reason")
      }
      return new Refused({ txid, reason }, trusted)
    }
    case "punch":
      return new Punch({ nonce: r.u64("punch.nonce"), sender: r.bytesN(32, "punch.sender") }, trusted)
    case "punch-ack":
      return new PunchAck(
        { nonce: r.u64("punch-ack.nonce"), sender: r.bytesN(32, "punch-ack.sender") },
        trusted,
      )
  }
}

/** encodedSize is a message's exact encoding size, type byte included. */
export const encodedSize = (msg: RendezvousMessage): number => {
  switch (msg._tag) {
    case "echo-reply":
      return 1 + 4 + endpointSize(msg.observed)
    case "registered":
      return 1 + 4 + 4 + endpointSize(msg.observed)
    case "introduction":
      return 1 + 4 + 32 + 32 + 1 + endpointSize(msg.endpoint)
    default:
      return MAX_BYTES[msg._tag]
  }
}

/**
 * encodeRendezvous returns a message's datagram. The caller keeps to the schema (the constructors
 * check it unless validation is disabled); the encoder does not re-check.
 */
export const encodeRendezvous = (msg: RendezvousMessage): Uint8Array => {
  const w = new Writer(encodedSize(msg))
  w.u8(TYPE_OF[msg._tag])
  switch (msg._tag) {
    case "echo":
    case "cookie":
      w.u32(msg.txid)
      w.raw(msg.cookie)
      break
    case "echo-reply":
      w.u32(msg.txid)
      writeEndpoint(w, msg.observed)
      break
    case "register":
      w.u32(msg.txid)
      w.raw(msg.cookie)
      writeIdentity(w, msg.identity)
      break
    case "registered":
      w.u32(msg.txid)
      w.u32(msg.ttlSeconds)
      writeEndpoint(w, msg.observed)
      break
    case "introduce":
      w.u32(msg.txid)
      w.raw(msg.cookie)
      w.raw(msg.target)
      writeIdentity(w, msg.identity)
      break
    case "introduction":
      w.u32(msg.txid)
      w.raw(msg.nodeKey)
      w.raw(msg.sessionKey)
      w.u8(msg.flags)
      writeEndpoint(w, msg.endpoint)
      break
    case "refused":
      w.u32(msg.txid)
      w.u8(REFUSED_REASONS.indexOf(msg.reason) + 1)
      break
    case "punch":
    case "punch-ack":
      w.u64(msg.nonce)
      w.raw(msg.sender)
      break
  }
  return w.finish()
}

/**
 * decodeRendezvous decodes one untrusted datagram: an empty datagram is `truncated`, an unknown type
 * (or one of the session layer's) `invalid-value` at `rendezvous.type`, a datagram over its type's cap
 * `length-exceeds-cap` before any read, and every byte must be consumed. Never throws.
 */
export const decodeRendezvous = (bytes: Uint8Array): Either.Either<RendezvousMessage, DecodeError> => {
  if (bytes.length === 0) {
    return Either.left(new DecodeError({ reason: "truncated", what: "rendezvous.type", offset: 0 }))
  }
  const tag = tagOfType.get(bytes[0]!)
  if (tag === undefined) {
    return Either.left(new DecodeError({ reason: "invalid-value", what: "rendezvous.type", offset: 0 }))
  }
  if (bytes.length > MAX_BYTES[tag]) {
    return Either.left(new DecodeError({ reason: "length-exceeds-cap", what: tag, offset: 0 }))
  }
  const r = new Reader(bytes)
  r.pos = 1
  try {
    const msg = readBody(r, tag)
    r.end(tag)
    return Either.right(msg)
  } catch (e) {
    if (e instanceof DecodeError) return Either.left(e)
    throw e
  }
}
