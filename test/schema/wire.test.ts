import { Either } from "effect"
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { regtest, testnet } from "../../src/consensus/params.js"
import { decodeBlock, encodeBlock } from "../../src/schema/block.js"
import {
  encodeMessage,
  FRAME_HEADER_BYTES,
  type FrameEvent,
  Framer,
  frameChecksum,
  MAX_FRAME_PAYLOAD,
} from "../../src/schema/frame.js"
import { MAX_U64 } from "../../src/schema/primitives.js"
import {
  AddrMessage,
  BlockMessage,
  CFCheckptMessage,
  CFHeadersMessage,
  CFilterMessage,
  COMMANDS,
  decodePayload,
  encodePayload,
  GetAddrMessage,
  GetCFCheckptMessage,
  GetCFHeadersMessage,
  GetCFiltersMessage,
  GetDataMessage,
  GetHeadersMessage,
  GetProofMessage,
  HeadersMessage,
  INV_BLOCK,
  INV_TX,
  type InvItem,
  InvMessage,
  MAX_ADDR_ENTRIES,
  MAX_HEADERS,
  MAX_INV_ENTRIES,
  MAX_LOCATOR_HASHES,
  maxPayloadBytes,
  NotFoundMessage,
  PingMessage,
  PongMessage,
  ProofMessage,
  RejectMessage,
  SERVICE_FULL,
  SERVICE_MINER,
  SendHeadersMessage,
  TxMessage,
  UdpAddrMessage,
  VerackMessage,
  VersionMessage,
  type WireMessage,
} from "../../src/schema/wire.js"
import { arbBlock, arbHeader, arbTx, bytes32, mutate, u32 } from "../support/arbitraries.js"
import { concat } from "../support/bytes.js"

const SEED = 0x5eed
const MAGIC = regtest.magic

const u16 = fc.integer({ min: 0, max: 0xffff })
const u64 = fc.bigInt({ min: 0n, max: MAX_U64 })
const host = fc.uint8Array({ minLength: 16, maxLength: 16 })
const ascii = (maxLength: number) =>
  fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength })
const invItems = fc.array(fc.record({ type: fc.constantFrom(INV_TX, INV_BLOCK), hash: bytes32 }), {
  maxLength: 20,
})

/** Every message kind, with any field values the schemas allow. */
const arbMessage: fc.Arbitrary<WireMessage> = fc.oneof(
  fc
    .record({
      protocolVersion: u32,
      services: u32,
      bestHeight: u32,
      userAgent: ascii(256),
      nonce: u64,
      listenPort: u16,
      theirAddress: fc.record({ host, port: u16 }),
    })
    .map((f) => new VersionMessage(f)),
  fc.constant(undefined).map(() => new VerackMessage()),
  u64.map((nonce) => new PingMessage({ nonce })),
  u64.map((nonce) => new PongMessage({ nonce })),
  invItems.map((items) => new InvMessage({ items })),
  invItems.map((items) => new GetDataMessage({ items })),
  invItems.map((items) => new NotFoundMessage({ items })),
  arbTx.map((tx) => new TxMessage({ tx })),
  arbBlock.map((block) => new BlockMessage({ block })),
  fc
    .record({ locator: fc.array(bytes32, { maxLength: 101 }), stop: bytes32 })
    .map((f) => new GetHeadersMessage(f)),
  fc.array(arbHeader, { maxLength: 30 }).map((headers) => new HeadersMessage({ headers })),
  fc.constant(undefined).map(() => new GetAddrMessage()),
  fc
    .array(fc.record({ time: u32, services: u32, host, port: u16 }), { maxLength: 30 })
    .map((entries) => new AddrMessage({ entries })),
  fc
    .array(fc.record({ time: u32, services: u32, nodeKey: bytes32, host, port: u16 }), { maxLength: 30 })
    .map((entries) => new UdpAddrMessage({ entries })),
  fc
    .record({ command: ascii(12), reason: ascii(111), hash: fc.option(bytes32, { nil: undefined }) })
    .map(({ command, reason, hash }) =>
      hash === undefined
        ? new RejectMessage({ command, reason })
        : new RejectMessage({ command, reason, hash }),
    ),
  fc.constant(undefined).map(() => new SendHeadersMessage()),
  fc
    .record({ filterType: fc.integer({ min: 0, max: 255 }), startHeight: u32, stopHash: bytes32 })
    .chain((f) => fc.constantFrom(new GetCFiltersMessage(f), new GetCFHeadersMessage(f))),
  fc
    .record({
      filterType: fc.integer({ min: 0, max: 255 }),
      blockHash: bytes32,
      filter: fc.uint8Array({ maxLength: 300 }),
    })
    .map((f) => new CFilterMessage(f)),
  fc
    .record({
      filterType: fc.integer({ min: 0, max: 255 }),
      stopHash: bytes32,
      previousFilterHeader: bytes32,
      filterHashes: fc.array(bytes32, { maxLength: 30 }),
    })
    .map((f) => new CFHeadersMessage(f)),
  fc
    .record({ filterType: fc.integer({ min: 0, max: 255 }), stopHash: bytes32 })
    .map((f) => new GetCFCheckptMessage(f)),
  fc
    .record({
      filterType: fc.integer({ min: 0, max: 255 }),
      stopHash: bytes32,
      filterHeaders: fc.array(bytes32, { maxLength: 30 }),
    })
    .map((f) => new CFCheckptMessage(f)),
  fc
    .record({ blockHash: bytes32, txids: fc.array(bytes32, { maxLength: 30 }) })
    .map((f) => new GetProofMessage(f)),
  fc.uint8Array({ maxLength: 2_000 }).map((bytes) => new ProofMessage({ bytes })),
)

/** split cuts bytes at the given points (taken modulo the length). */
const split = (bytes: Uint8Array, cuts: ReadonlyArray<number>): Array<Uint8Array> => {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b)
  const chunks: Array<Uint8Array> = []
  let from = 0
  for (const p of [...points, bytes.length]) {
    chunks.push(bytes.subarray(from, p))
    from = p
  }
  return chunks
}

const LARGEST_CAP = Math.max(...COMMANDS.map(maxPayloadBytes))

/** feed pushes every chunk, asserting the framer's memory bound after each push. */
const feed = (framer: Framer, chunks: ReadonlyArray<Uint8Array>): Array<FrameEvent> => {
  const events: Array<FrameEvent> = []
  for (const chunk of chunks) {
    events.push(...framer.push(chunk))
    expect(framer.bufferedBytes).toBeLessThanOrEqual(FRAME_HEADER_BYTES + LARGEST_CAP)
  }
  return events
}

/** rawFrame builds a frame by hand, so tests can lie in any header field. */
const rawFrame = (
  command: string,
  payload: Uint8Array,
  opts: { magic?: Uint8Array; length?: number; checksum?: Uint8Array } = {},
): Uint8Array => {
  const out = new Uint8Array(FRAME_HEADER_BYTES + payload.length)
  out.set(opts.magic ?? MAGIC, 0)
  for (let i = 0; i < command.length; i++) out[4 + i] = command.charCodeAt(i)
  new DataView(out.buffer).setUint32(16, opts.length ?? payload.length, true)
  out.set(opts.checksum ?? frameChecksum(payload), 20)
  out.set(payload, FRAME_HEADER_BYTES)
  return out
}

const errorOf = (events: ReadonlyArray<FrameEvent>) => {
  expect(events).toHaveLength(1)
  const event = events[0]!
  expect(event._tag).toBe("Error")
  return event._tag === "Error" ? event.error : undefined
}

const version = new VersionMessage({
  protocolVersion: 1,
  services: SERVICE_FULL | SERVICE_MINER,
  bestHeight: 42,
  userAgent: "/fibercoin:0.1.0/",
  nonce: 0x0123456789abcdefn,
  listenPort: 18444,
  theirAddress: { host: Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1), port: 51234 },
})

describe("wire messages", () => {
  it("every message round-trips through encodeMessage and a Framer fed in random chunks", () => {
    fc.assert(
      fc.property(
        fc.array(arbMessage, { minLength: 1, maxLength: 6 }),
        fc.array(fc.nat(), { maxLength: 12 }),
        (messages, cuts) => {
          const stream = concat(...messages.map((m) => encodeMessage(MAGIC, m)))
          const framer = new Framer(MAGIC)
          const events = feed(framer, split(stream, cuts))
          expect(events.map((e) => e._tag)).toEqual(messages.map(() => "Message"))
          expect(events.map((e) => (e._tag === "Message" ? e.message : undefined))).toEqual(messages)
          expect(framer.bufferedBytes).toBe(0)
          expect(framer.closed).toBe(false)
        },
      ),
      { seed: SEED, numRuns: 400 },
    )
  })

  it("payloads are canonical: any payload that decodes re-encodes to the same bytes", () => {
    fc.assert(
      fc.property(
        arbMessage.chain((m) => fc.tuple(fc.constant(m), mutate(encodePayload(m)))),
        ([message, mutated]) => {
          const payload = encodePayload(message)
          const decoded = decodePayload(message._tag, payload)
          expect(decoded).toEqual(Either.right(message))
          if (Either.isRight(decoded)) expect(encodePayload(decoded.right)).toEqual(payload)
          const other = decodePayload(message._tag, mutated)
          if (Either.isRight(other)) expect(encodePayload(other.right)).toEqual(mutated)
        },
      ),
      { seed: SEED, numRuns: 2_000 },
    )
  })

  it("a frame split byte by byte still decodes", () => {
    // genesis holds node Buffers; a decoded copy holds plain Uint8Arrays, as decoded messages do
    const block = new BlockMessage({ block: Either.getOrThrow(decodeBlock(encodeBlock(regtest.genesis))) })
    const stream = concat(...[encodeMessage(MAGIC, version), encodeMessage(MAGIC, block)])
    const framer = new Framer(MAGIC)
    const events = feed(
      framer,
      Array.from(stream, (b) => Uint8Array.of(b)),
    )
    expect(events).toHaveLength(2)
    expect(events[0]).toMatchObject({ _tag: "Message", message: version })
    expect(events[1]).toMatchObject({ _tag: "Message", message: block })
  })

  it("every command name fits the frame header's 12-byte command field", () => {
    // a longer name would be cut to 12 bytes on the wire, which the receiver cannot decode
    expect(COMMANDS.filter((c) => c.length > 12)).toEqual([])
  })

  it("per-command caps follow the entry caps and fit a 4 MB frame", () => {
    expect(maxPayloadBytes("inv")).toBe(3 + MAX_INV_ENTRIES * 36)
    expect(maxPayloadBytes("getdata")).toBe(3 + MAX_INV_ENTRIES * 36)
    expect(maxPayloadBytes("headers")).toBe(3 + MAX_HEADERS * 80)
    expect(maxPayloadBytes("getheaders")).toBe(1 + MAX_LOCATOR_HASHES * 32 + 32)
    expect(maxPayloadBytes("addr")).toBe(3 + MAX_ADDR_ENTRIES * 26)
    expect(maxPayloadBytes("block")).toBe(2_000_000)
    expect(maxPayloadBytes("tx")).toBe(1_000_000)
    expect(maxPayloadBytes("verack")).toBe(0)
    expect(maxPayloadBytes("version")).toBeLessThan(300)
    expect(LARGEST_CAP).toBeLessThanOrEqual(MAX_FRAME_PAYLOAD)
    expect(encodePayload(version).length).toBeLessThanOrEqual(maxPayloadBytes("version"))
  })

  it("message constructors enforce the entry caps", () => {
    const item = { type: INV_TX, hash: new Uint8Array(32) } as const
    expect(() => new InvMessage({ items: Array.from({ length: MAX_INV_ENTRIES + 1 }, () => item) })).toThrow()
    expect(() => new VersionMessage({ ...version, userAgent: "bad\n" })).toThrow()
  })
})

describe("decoding untrusted bytes never throws", () => {
  const arbCommand = fc.oneof(fc.constantFrom(...COMMANDS), fc.string({ maxLength: 14 }))

  it("decodePayload on random bytes and any command string returns an Either", () => {
    fc.assert(
      fc.property(arbCommand, fc.uint8Array({ maxLength: 300 }), (command, payload) => {
        const result = decodePayload(command, payload)
        expect(Either.isEither(result)).toBe(true)
        if (Either.isRight(result)) expect(encodePayload(result.right)).toEqual(payload)
      }),
      { seed: SEED, numRuns: 10_000 },
    )
  })

  it("the Framer on random bytes, with or without a valid-looking header, never throws", () => {
    const header = fc
      .tuple(fc.constantFrom(...COMMANDS), fc.nat({ max: 400 }))
      .map(([command, length]) => rawFrame(command, new Uint8Array(0), { length }))
    fc.assert(
      fc.property(
        fc.option(header, { nil: undefined }),
        fc.uint8Array({ maxLength: 400 }),
        fc.array(fc.nat(), { maxLength: 6 }),
        (prefix, body, cuts) => {
          const framer = new Framer(MAGIC)
          const events = feed(framer, split(concat(...[prefix ?? new Uint8Array(0), body]), cuts))
          for (const e of events) expect(["Message", "Error"]).toContain(e._tag)
          if (framer.closed) expect(framer.push(body)).toEqual([])
        },
      ),
      { seed: SEED, numRuns: 10_000 },
    )
  })

  it("the Framer on mutated frames never throws, and whatever decodes re-encodes to its payload", () => {
    fc.assert(
      fc.property(
        arbMessage.chain((m) => mutate(encodeMessage(MAGIC, m))),
        fc.array(fc.nat(), { maxLength: 6 }),
        (frame, cuts) => {
          const framer = new Framer(MAGIC)
          const events = feed(framer, split(frame, cuts))
          for (const e of events) expect(["Message", "Error"]).toContain(e._tag)
          const first = events[0]
          if (first?._tag === "Message") {
            const again = encodeMessage(MAGIC, first.message)
            expect(again).toEqual(frame.subarray(0, again.length))
          }
        },
      ),
      { seed: SEED, numRuns: 5_000 },
    )
  })
})

describe("the Framer refuses bad frames with typed errors", () => {
  it("a header announcing 100 MB is refused as soon as the header is complete, before any payload", () => {
    const framer = new Framer(MAGIC)
    const header = rawFrame("block", new Uint8Array(0), { length: 100_000_000 })
    for (let i = 0; i < FRAME_HEADER_BYTES - 1; i++) {
      expect(framer.push(header.subarray(i, i + 1))).toEqual([])
      expect(framer.bufferedBytes).toBeLessThanOrEqual(FRAME_HEADER_BYTES)
    }
    const error = errorOf(framer.push(header.subarray(FRAME_HEADER_BYTES - 1)))
    expect(error).toMatchObject({ reason: "length-exceeds-cap", what: "frame.length" })
    expect(framer.bufferedBytes).toBeLessThanOrEqual(FRAME_HEADER_BYTES)
    expect(framer.closed).toBe(true)
    expect(framer.push(new Uint8Array(1_000))).toEqual([])
    expect(framer.bufferedBytes).toBe(0)
  })

  it("a length over that command's cap (inv: 60,000 entries' worth; ping: 9 bytes) is refused", () => {
    for (const [command, length] of [
      ["inv", 3 + 60_000 * 36],
      ["ping", 9],
      ["verack", 1],
      ["block", MAX_FRAME_PAYLOAD],
    ] as const) {
      const framer = new Framer(MAGIC)
      const error = errorOf(framer.push(rawFrame(command, new Uint8Array(0), { length })))
      expect(error).toMatchObject({ reason: "length-exceeds-cap", what: "frame.length" })
      expect(framer.bufferedBytes).toBeLessThanOrEqual(FRAME_HEADER_BYTES)
    }
  })

  it("another network's magic is refused as soon as the 4 magic bytes arrive", () => {
    const framer = new Framer(MAGIC)
    const frame = encodeMessage(testnet.magic, version)
    const error = errorOf(framer.push(frame.subarray(0, 4)))
    expect(error).toMatchObject({ reason: "invalid-value", what: "frame.magic" })
    expect(framer.closed).toBe(true)
    expect(framer.push(encodeMessage(MAGIC, version))).toEqual([])
  })

  it("an unknown command is a typed error, from the Framer and from decodePayload", () => {
    const framer = new Framer(MAGIC)
    const error = errorOf(framer.push(rawFrame("mempoolx", new Uint8Array(0))))
    expect(error).toMatchObject({ _tag: "DecodeError", reason: "invalid-value", what: "frame.command" })
    expect(framer.closed).toBe(true)
    // NUL padding followed by garbage is not a command either
    const padded = rawFrame("ping", new Uint8Array(8))
    padded[15] = 0x41
    expect(errorOf(new Framer(MAGIC).push(padded))).toMatchObject({ what: "frame.command" })
    const direct = decodePayload("mempoolx", new Uint8Array(0))
    expect(Either.isLeft(direct) && direct.left).toMatchObject({
      reason: "invalid-value",
      what: "frame.command",
    })
    expect(Either.isLeft(decodePayload("toString", new Uint8Array(0)))).toBe(true)
  })

  it("a bad checksum is a typed error; the framer goes on with the next frame", () => {
    const framer = new Framer(MAGIC)
    const bad = encodeMessage(MAGIC, new PingMessage({ nonce: 7n }))
    bad[20]! ^= 1
    const events = framer.push(concat(...[bad, encodeMessage(MAGIC, new PongMessage({ nonce: 7n }))]))
    expect(events).toHaveLength(2)
    expect(events[0]).toMatchObject({
      _tag: "Error",
      error: { reason: "invalid-value", what: "frame.checksum" },
    })
    expect(events[1]).toMatchObject({ _tag: "Message", message: new PongMessage({ nonce: 7n }) })
    expect(framer.closed).toBe(false)
  })

  it("a payload that does not decode is a typed error; the framer goes on with the next frame", () => {
    const framer = new Framer(MAGIC)
    const events = framer.push(
      concat(...[rawFrame("ping", new Uint8Array(7)), encodeMessage(MAGIC, version)]),
    )
    expect(events).toHaveLength(2)
    expect(events[0]).toMatchObject({ _tag: "Error", error: { reason: "truncated", what: "ping.nonce" } })
    expect(events[1]).toMatchObject({ _tag: "Message", message: version })
  })

  it("inv with 50,001 entries and headers with 2,001 are refused", () => {
    const item: InvItem = { type: INV_BLOCK, hash: new Uint8Array(32) }
    const items = Array.from({ length: MAX_INV_ENTRIES + 1 }, () => item)
    const inv = new InvMessage({ items }, true)
    expect(errorOf(new Framer(MAGIC).push(encodeMessage(MAGIC, inv)))).toMatchObject({
      reason: "length-exceeds-cap",
      what: "frame.length",
    })
    const invPayload = encodePayload(inv)
    expect(Either.isLeft(decodePayload("inv", invPayload))).toBe(true)
    // a count of 50,001 inside the byte cap is refused by the count check, before reading entries
    const lying = concat(...[Uint8Array.of(0xfd, 0x51, 0xc3), new Uint8Array(36)])
    const counted = decodePayload("inv", lying)
    expect(Either.isLeft(counted) && counted.left).toMatchObject({
      reason: "length-exceeds-cap",
      what: "inv.items",
    })

    const header = regtest.genesis.header
    const headers = new HeadersMessage(
      { headers: Array.from({ length: MAX_HEADERS + 1 }, () => header) },
      true,
    )
    expect(errorOf(new Framer(MAGIC).push(encodeMessage(MAGIC, headers)))).toMatchObject({
      reason: "length-exceeds-cap",
      what: "frame.length",
    })
    const lyingHeaders = decodePayload(
      "headers",
      concat(...[Uint8Array.of(0xfd, 0xd1, 0x07), new Uint8Array(80)]),
    )
    expect(Either.isLeft(lyingHeaders) && lyingHeaders.left).toMatchObject({
      reason: "length-exceeds-cap",
      what: "headers.headers",
    })
  })

  it("a block message's payload is the block's canonical encoding", () => {
    const block = regtest.genesis
    expect(encodePayload(new BlockMessage({ block }))).toEqual(encodeBlock(block))
  })
})
