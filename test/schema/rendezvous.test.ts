import { Either } from "effect"
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { MAX_DATAGRAM_BYTES } from "../../src/layers/Datagram.js"
import { DecodeError } from "../../src/schema/DecodeError.js"
import { MAX_U64 } from "../../src/schema/primitives.js"
import {
  COOKIE_BYTES,
  CookieChallenge,
  decodeRendezvous,
  EchoReply,
  EchoRequest,
  encodedSize,
  encodeRendezvous,
  FLAG_SYMMETRIC_NAT,
  IntroduceRequest,
  Introduction,
  isRendezvousType,
  MAX_BYTES,
  MAX_HOST_BYTES,
  MAX_RENDEZVOUS_BYTES,
  Punch,
  PunchAck,
  REFUSED_REASONS,
  Refused,
  Registered,
  RegisterRequest,
  type RendezvousMessage,
  TYPE_OF,
} from "../../src/schema/rendezvous.js"

const bytes = (n: number, fill = 7) => new Uint8Array(n).fill(fill)
const identity = {
  nodeKey: bytes(32, 1),
  sessionKey: bytes(32, 2),
  flags: FLAG_SYMMETRIC_NAT,
  timestamp: 1_700_000_000_000n,
  sig: bytes(64, 3),
}
const longHost = "h".repeat(MAX_HOST_BYTES)

/** samples holds every message type, with the longest host where it has one. */
const samples: ReadonlyArray<RendezvousMessage> = [
  new EchoRequest({ txid: 1, cookie: bytes(COOKIE_BYTES) }),
  new EchoReply({ txid: 0xffffffff, observed: { host: "203.0.113.7", port: 18445 } }),
  new EchoReply({ txid: 2, observed: { host: longHost, port: 65535 } }),
  new CookieChallenge({ txid: 3, cookie: bytes(COOKIE_BYTES, 9) }),
  new RegisterRequest({ txid: 4, cookie: bytes(COOKIE_BYTES), identity }),
  new Registered({ txid: 5, ttlSeconds: 90, observed: { host: "2001:db8::1", port: 1 } }),
  new IntroduceRequest({ txid: 6, cookie: bytes(COOKIE_BYTES), target: bytes(32, 4), identity }),
  new Introduction({
    txid: 0,
    nodeKey: bytes(32, 5),
    sessionKey: bytes(32, 6),
    flags: 0,
    endpoint: { host: longHost, port: 0 },
  }),
  ...REFUSED_REASONS.map((reason, i) => new Refused({ txid: 7 + i, reason })),
  new Punch({ nonce: MAX_U64, sender: bytes(32, 8) }),
  new PunchAck({ nonce: 1n, sender: bytes(32, 9) }),
]

const decodeError = (data: Uint8Array): DecodeError => {
  const decoded = decodeRendezvous(data)
  if (Either.isRight(decoded)) throw new Error(`decoded ${decoded.right._tag} from bad input`)
  expect(decoded.left).toBeInstanceOf(DecodeError)
  return decoded.left
}

describe("rendezvous codecs", () => {
  it("every message type round-trips to the same bytes, and its size is what encodedSize says", () => {
    const tags = new Set(samples.map((m) => m._tag))
    expect(tags.size).toBe(Object.keys(TYPE_OF).length)
    for (const msg of samples) {
      const encoded = encodeRendezvous(msg)
      expect(encoded.length).toBe(encodedSize(msg))
      expect(encoded[0]).toBe(TYPE_OF[msg._tag])
      const decoded = decodeRendezvous(encoded)
      expect(Either.isRight(decoded)).toBe(true)
      expect(decoded).toEqual(Either.right(msg))
      expect(encodeRendezvous(Either.getOrThrow(decoded))).toEqual(encoded)
    }
  })

  it("types stay in 0x00-0x3f (sessions own 0x40-0x7f) and every datagram fits MAX_DATAGRAM_BYTES", () => {
    for (const type of Object.values(TYPE_OF)) expect(isRendezvousType(type)).toBe(true)
    expect(isRendezvousType(0x40)).toBe(false)
    expect(MAX_RENDEZVOUS_BYTES).toBeLessThanOrEqual(MAX_DATAGRAM_BYTES)
    // the longest sample of each type is exactly its cap
    for (const msg of samples) expect(encodeRendezvous(msg).length).toBeLessThanOrEqual(MAX_BYTES[msg._tag])
    expect(encodeRendezvous(samples[2]!).length).toBe(MAX_BYTES["echo-reply"])
  })

  it("the cookie challenge is no larger than any request a server answers with it (anti-amplification)", () => {
    const challenge = MAX_BYTES.cookie
    expect(challenge).toBeLessThanOrEqual(MAX_BYTES.echo)
    expect(challenge).toBeLessThanOrEqual(MAX_BYTES.register)
    expect(challenge).toBeLessThanOrEqual(MAX_BYTES.introduce)
    expect(MAX_BYTES["punch-ack"]).toBe(MAX_BYTES.punch)
  })

  it("every truncation of every message is a DecodeError", () => {
    for (const msg of samples) {
      const encoded = encodeRendezvous(msg)
      for (let n = 0; n < encoded.length; n++) {
        const error = decodeError(encoded.subarray(0, n))
        expect(["truncated", "length-exceeds-input"]).toContain(error.reason)
      }
    }
  })

  it("a trailing byte, an over-cap datagram, an unknown or session type are DecodeErrors", () => {
    for (const msg of samples) {
      const encoded = encodeRendezvous(msg)
      const longer = new Uint8Array(encoded.length + 1)
      longer.set(encoded)
      const error = decodeError(longer)
      expect(["trailing-bytes", "length-exceeds-cap"]).toContain(error.reason)
      const huge = new Uint8Array(MAX_BYTES[msg._tag] + 1)
      huge[0] = TYPE_OF[msg._tag]
      expect(decodeError(huge).reason).toBe("length-exceeds-cap")
    }
    expect(decodeError(Uint8Array.of(0x00, 0, 0, 0, 0)).what).toBe("rendezvous.type")
    expect(decodeError(Uint8Array.of(0x40, 1, 2, 3)).reason).toBe("invalid-value")
    expect(decodeError(new Uint8Array(0)).reason).toBe("truncated")
  })

  it("a host that is empty, over 64 bytes or not printable ASCII is refused", () => {
    const reply = encodeRendezvous(new EchoReply({ txid: 1, observed: { host: "a", port: 1 } }))
    const empty = Uint8Array.of(reply[0]!, 1, 0, 0, 0, 0, 0, 1)
    expect(decodeError(empty).what).toBe("echo-reply.observed.host")
    const control = Uint8Array.from(reply)
    control[6] = 0x0a // the host's one character becomes a newline
    expect(decodeError(control).reason).toBe("invalid-value")
    const over = new Uint8Array(1 + 4 + 1 + 65 + 2).fill(0x61)
    over[0] = reply[0]!
    over[5] = 65
    expect(decodeError(over).reason).toBe("length-exceeds-cap")
    expect(() => new EchoReply({ txid: 1, observed: { host: "a b", port: 1 } })).toThrow()
    expect(() => new EchoReply({ txid: 1, observed: { host: "h".repeat(65), port: 1 } })).toThrow()
  })

  it("unknown flag bits and refusal codes are refused", () => {
    const intro = encodeRendezvous(samples[7]!)
    const flagsAt = 1 + 4 + 32 + 32
    const badFlags = Uint8Array.from(intro)
    badFlags[flagsAt] = 0x02
    expect(decodeError(badFlags)).toMatchObject({ reason: "invalid-value", what: "introduction.flags" })
    const register = encodeRendezvous(samples[4]!)
    const badIdentityFlags = Uint8Array.from(register)
    badIdentityFlags[1 + 4 + COOKIE_BYTES + 64] = 0x80
    expect(decodeError(badIdentityFlags).what).toBe("register.identity.flags")
    for (const code of [0, REFUSED_REASONS.length + 1, 0xff]) {
      expect(decodeError(Uint8Array.of(TYPE_OF.refused, 1, 0, 0, 0, code)).what).toBe("refused.reason")
    }
  })

  it("random and mutated datagrams decode or fail with a DecodeError, never throw, and what decodes re-encodes", () => {
    const valid = samples.map(encodeRendezvous)
    const mutated = fc
      .tuple(fc.constantFrom(...valid), fc.nat(), fc.integer({ min: 0, max: 255 }))
      .map(([b, at, v]) => {
        const copy = Uint8Array.from(b)
        copy[at % copy.length] = v
        return copy
      })
    const random = fc
      .tuple(fc.constantFrom(...Object.values(TYPE_OF)), fc.uint8Array({ maxLength: 250 }))
      .map(([type, rest]) => Uint8Array.of(type, ...rest))
    fc.assert(
      fc.property(fc.oneof(mutated, random, fc.uint8Array({ maxLength: 300 })), (data) => {
        const decoded = decodeRendezvous(data)
        if (Either.isLeft(decoded)) {
          expect(decoded.left).toBeInstanceOf(DecodeError)
        } else {
          expect(encodeRendezvous(decoded.right)).toEqual(data)
        }
      }),
      { numRuns: 5_000, seed: 8 },
    )
  })
})
