import { Either } from "effect"
import { decodeWith, type Reader, varintSize, Writer } from "./codec.js"
import { DecodeError } from "./DecodeError.js"

/**
 * The UDP session packet format (issue 8): what `src/layers/UdpSession.ts` sends over one
 * DatagramSocket. The first byte of every datagram on a node's UDP port says whose it is:
 *
 * - 0x00–0x3f: the rendezvous protocol (echo, register, introduce, punch);
 * - 0x40–0x7f: sessions (0x40 `SESSION_DATA`, 0x41 `SESSION_OPEN`; the rest reserved);
 * - 0x80–0xff: reserved, dropped.
 *
 * A session packet is
 * ```
 * type u8 | session id u32 LE | packet number u32 LE | [OPEN only: initiator's X25519 public key, 32 bytes]
 * | ChaCha20-Poly1305 ciphertext of the frames | 16-byte tag
 * ```
 * The header (9 or 41 bytes) is the AEAD's associated data, so it is authenticated though not
 * encrypted. The plaintext is a sequence of frames, each led by a type byte:
 * ```
 * 0x01 PING
 * 0x02 ACK     largest acked pn u32 | ack delay ms varint | receive window (max stream offset) u64
 *              | range count varint (≤ MAX_ACK_RANGES) | first range length varint | (gap varint, length varint)*
 * 0x03 STREAM  offset u64 | length varint | bytes
 * 0x04 STREAM  with FIN (the stream ends at offset + length)
 * 0x05 RESET
 * ```
 * Ack ranges are QUIC's (RFC 9000 §19.3) with a gap of `previous smallest − this largest − 1`.
 */

/** SESSION_DATA is the type byte of a packet of an established session. */
export const SESSION_DATA = 0x40
/** SESSION_OPEN is the type byte of an initiator's packets until it hears from the responder; it carries the initiator's public key. */
export const SESSION_OPEN = 0x41
/** isSessionDatagram says whether a datagram belongs to the session range (0x40–0x7f) rather than rendezvous. */
export const isSessionDatagram = (data: Uint8Array): boolean =>
  data.length > 0 && data[0]! >= 0x40 && data[0]! <= 0x7f

/** SHORT_HEADER_BYTES is the header of a SESSION_DATA packet; OPEN_HEADER_BYTES adds the 32-byte public key. */
export const SHORT_HEADER_BYTES = 9
export const OPEN_HEADER_BYTES = 41
/** PUBLIC_KEY_BYTES is an X25519 public key. */
export const PUBLIC_KEY_BYTES = 32
/** AEAD_TAG_BYTES is the Poly1305 tag after the ciphertext. */
export const AEAD_TAG_BYTES = 16
/** MAX_ACK_RANGES caps the ranges of one ACK frame (what a receiver remembers and what a decoder accepts). */
export const MAX_ACK_RANGES = 32
/** MAX_PACKET_NUMBER is the last packet number; a session that would go past it is reset (its nonces would repeat). */
export const MAX_PACKET_NUMBER = 0xffff_ffff

/** SessionHeader is a packet's cleartext header. */
export interface SessionHeader {
  readonly type: typeof SESSION_DATA | typeof SESSION_OPEN
  readonly sessionId: number
  readonly packetNumber: number
  /** publicKey is the initiator's X25519 key, on SESSION_OPEN packets only. */
  readonly publicKey: Uint8Array | undefined
  /** length is the header's size: where the ciphertext starts. */
  readonly length: number
}

/** AckRange is an inclusive range of packet numbers. */
export interface AckRange {
  readonly lo: number
  readonly hi: number
}

/** SessionFrame is one frame of a packet's plaintext. */
export type SessionFrame =
  | { readonly _tag: "Ping" }
  | {
      readonly _tag: "Ack"
      /** ranges, highest first, disjoint and not adjacent */
      readonly ranges: ReadonlyArray<AckRange>
      readonly delayMillis: number
      /** window is the stream offset up to which the receiver will buffer (absolute, never shrinks) */
      readonly window: number
    }
  | { readonly _tag: "Stream"; readonly offset: number; readonly data: Uint8Array; readonly fin: boolean }
  | { readonly _tag: "Reset" }

const FRAME_PING = 0x01
const FRAME_ACK = 0x02
const FRAME_STREAM = 0x03
const FRAME_STREAM_FIN = 0x04
const FRAME_RESET = 0x05
const U32_MAX = 0xffff_ffff

/** STREAM_FRAME_OVERHEAD is a STREAM frame's bytes besides its data, at most (type, offset, 3-byte length). */
export const STREAM_FRAME_OVERHEAD = 12

/** encodeSessionHeader writes a packet header (the AEAD's associated data). */
export const encodeSessionHeader = (header: Omit<SessionHeader, "length">): Uint8Array => {
  const open = header.type === SESSION_OPEN
  const w = new Writer(open ? OPEN_HEADER_BYTES : SHORT_HEADER_BYTES)
  w.u8(header.type)
  w.u32(header.sessionId)
  w.u32(header.packetNumber)
  if (open) {
    if (header.publicKey?.length !== PUBLIC_KEY_BYTES)
      throw new Error("SESSION_OPEN needs a 32-byte public key")
    w.raw(header.publicKey)
  }
  return w.finish()
}

/**
 * decodeSessionHeader reads the header of an untrusted datagram; the rest (ciphertext and tag, at
 * least the tag's 16 bytes) is left to the AEAD. A type outside 0x40/0x41 is `invalid-value`.
 */
export const decodeSessionHeader = (data: Uint8Array): Either.Either<SessionHeader, DecodeError> => {
  if (data.length === 0)
    return Either.left(new DecodeError({ reason: "truncated", what: "session header", offset: 0 }))
  const type = data[0]!
  if (type !== SESSION_DATA && type !== SESSION_OPEN) {
    return Either.left(new DecodeError({ reason: "invalid-value", what: "session packet type", offset: 0 }))
  }
  const length = type === SESSION_OPEN ? OPEN_HEADER_BYTES : SHORT_HEADER_BYTES
  if (data.length < length + AEAD_TAG_BYTES) {
    return Either.left(new DecodeError({ reason: "truncated", what: "session packet", offset: 0 }))
  }
  return decodeWith("session header", length, (r) => {
    r.u8("session packet type")
    const sessionId = r.u32("session id")
    const packetNumber = r.u32("packet number")
    const publicKey = type === SESSION_OPEN ? r.bytesN(PUBLIC_KEY_BYTES, "initiator public key") : undefined
    return { type, sessionId, packetNumber, publicKey, length } as SessionHeader
  })(data.subarray(0, length))
}

const ackSize = (frame: Extract<SessionFrame, { _tag: "Ack" }>): number => {
  const ranges = frame.ranges
  let size = 1 + 4 + varintSize(frame.delayMillis) + 8 + varintSize(ranges.length - 1)
  size += varintSize(ranges[0]!.hi - ranges[0]!.lo)
  for (let i = 1; i < ranges.length; i++) {
    size += varintSize(ranges[i - 1]!.lo - ranges[i]!.hi - 1) + varintSize(ranges[i]!.hi - ranges[i]!.lo)
  }
  return size
}

/** frameSize is a frame's encoded length. */
export const frameSize = (frame: SessionFrame): number => {
  switch (frame._tag) {
    case "Ping":
    case "Reset":
      return 1
    case "Ack":
      return ackSize(frame)
    case "Stream":
      return 1 + 8 + varintSize(frame.data.length) + frame.data.length
  }
}

/** encodeFrames writes frames into one plaintext. An ACK needs at least one range. */
export const encodeFrames = (frames: ReadonlyArray<SessionFrame>): Uint8Array => {
  let size = 0
  for (const frame of frames) size += frameSize(frame)
  const w = new Writer(size)
  for (const frame of frames) {
    switch (frame._tag) {
      case "Ping":
        w.u8(FRAME_PING)
        break
      case "Reset":
        w.u8(FRAME_RESET)
        break
      case "Ack": {
        const ranges = frame.ranges
        w.u8(FRAME_ACK)
        w.u32(ranges[0]!.hi)
        w.varint(frame.delayMillis)
        w.u64(BigInt(frame.window))
        w.varint(ranges.length - 1)
        w.varint(ranges[0]!.hi - ranges[0]!.lo)
        for (let i = 1; i < ranges.length; i++) {
          w.varint(ranges[i - 1]!.lo - ranges[i]!.hi - 1)
          w.varint(ranges[i]!.hi - ranges[i]!.lo)
        }
        break
      }
      case "Stream":
        w.u8(frame.fin ? FRAME_STREAM_FIN : FRAME_STREAM)
        w.u64(BigInt(frame.offset))
        w.varBytes(frame.data)
        break
    }
  }
  return w.finish()
}

const safeU64 = (r: Reader, what: string): number => {
  const v = r.u64(what)
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) r.fail("invalid-value", what)
  return Number(v)
}

const readAck = (r: Reader): SessionFrame => {
  const largest = r.u32("ack largest")
  const delayMillis = r.varint("ack delay", U32_MAX)
  const window = safeU64(r, "ack window")
  const extra = r.count("ack ranges", MAX_ACK_RANGES - 1, 2)
  const first = r.varint("ack first range", U32_MAX)
  if (first > largest) r.fail("invalid-value", "ack first range")
  const ranges: Array<AckRange> = [{ lo: largest - first, hi: largest }]
  let lo = largest - first
  for (let i = 0; i < extra; i++) {
    const gap = r.varint("ack gap", U32_MAX)
    const length = r.varint("ack range length", U32_MAX)
    const hi = lo - gap - 1
    if (gap < 1 || hi - length < 0) r.fail("invalid-value", "ack range")
    lo = hi - length
    ranges.push({ lo, hi })
  }
  return { _tag: "Ack", ranges, delayMillis, window }
}

/**
 * decodeFrames reads a packet's authenticated plaintext. Bounded: the input is at most one datagram,
 * an ACK holds at most MAX_ACK_RANGES ranges, a STREAM's length is checked against what is left, and
 * offsets past 2^53 are refused. An unknown frame type is `invalid-value`.
 */
export const decodeFrames = decodeWith("session frames", 1_200, (r) => {
  const frames: Array<SessionFrame> = []
  while (r.remaining > 0) {
    const type = r.u8("frame type")
    switch (type) {
      case FRAME_PING:
        frames.push({ _tag: "Ping" })
        break
      case FRAME_RESET:
        frames.push({ _tag: "Reset" })
        break
      case FRAME_ACK:
        frames.push(readAck(r))
        break
      case FRAME_STREAM:
      case FRAME_STREAM_FIN: {
        const offset = safeU64(r, "stream offset")
        const data = r.varBytes("stream data", 1_200)
        if (offset + data.length > Number.MAX_SAFE_INTEGER) r.fail("invalid-value", "stream offset")
        frames.push({ _tag: "Stream", offset, data, fin: type === FRAME_STREAM_FIN })
        break
      }
      default:
        r.fail("invalid-value", "frame type")
    }
  }
  return frames
})
