import * as crypto from "node:crypto"
import { Data, Either } from "effect"
import { Writer } from "./codec.js"
import { DecodeError } from "./DecodeError.js"
import {
  type Command,
  decodePayload,
  isCommand,
  maxPayloadBytes,
  payloadSize,
  type WireMessage,
  writePayload,
} from "./wire.js"

/** FRAME_HEADER_BYTES is the frame header: magic 4 ‖ command 12 (ASCII, NUL-padded) ‖ length u32 LE ‖ checksum 4. */
export const FRAME_HEADER_BYTES = 24
/** MAX_FRAME_PAYLOAD caps any frame's payload (4 MB); each command's own cap is at most this. */
export const MAX_FRAME_PAYLOAD = 4_000_000

const MAGIC_BYTES = 4
const COMMAND_OFFSET = 4
const COMMAND_BYTES = 12
const LENGTH_OFFSET = 16
const CHECKSUM_OFFSET = 20

/**
 * frameChecksum is the first 4 bytes of sha256d(payload), as in Bitcoin's frame header. It catches
 * corruption, not forgery: anyone can compute it.
 */
export const frameChecksum = (payload: Uint8Array): Uint8Array =>
  crypto.hash("sha256", crypto.hash("sha256", payload, "buffer"), "buffer").subarray(0, 4)

/**
 * encodeMessage returns a full frame: `magic` (4 bytes, NetworkParams.magic) ‖ command ‖ length ‖
 * checksum ‖ payload. Like encodePayload it trusts the message to keep to its command's caps.
 */
export const encodeMessage = (magic: Uint8Array, msg: WireMessage): Uint8Array => {
  const size = payloadSize(msg)
  const w = new Writer(FRAME_HEADER_BYTES + size)
  w.raw(magic.subarray(0, MAGIC_BYTES))
  const command = msg._tag
  for (let i = 0; i < COMMAND_BYTES; i++) w.u8(i < command.length ? command.charCodeAt(i) : 0)
  w.u32(size)
  w.u32(0)
  writePayload(w, msg)
  const frame = w.finish()
  frame.set(frameChecksum(frame.subarray(FRAME_HEADER_BYTES)), CHECKSUM_OFFSET)
  return frame
}

/**
 * encodeRawFrame frames an already-encoded payload (a block read from storage, a transaction's
 * bytes from the mempool) without decoding and re-encoding it. The caller vouches that `payload` is
 * a valid `command` payload within its cap.
 */
export const encodeRawFrame = (magic: Uint8Array, command: Command, payload: Uint8Array): Uint8Array => {
  const frame = new Uint8Array(FRAME_HEADER_BYTES + payload.length)
  frame.set(magic.subarray(0, MAGIC_BYTES), 0)
  for (let i = 0; i < command.length; i++) frame[COMMAND_OFFSET + i] = command.charCodeAt(i)
  new DataView(frame.buffer, frame.byteOffset, FRAME_HEADER_BYTES).setUint32(
    LENGTH_OFFSET,
    payload.length,
    true,
  )
  frame.set(frameChecksum(payload), CHECKSUM_OFFSET)
  frame.set(payload, FRAME_HEADER_BYTES)
  return frame
}

/** FrameEvent is what a Framer yields per frame: a decoded message or the typed reason it was refused. */
export type FrameEvent = Data.TaggedEnum<{
  Message: { readonly message: WireMessage }
  /** a frame of a command the Framer was told to pass undecoded (see `Framer` options): checksum checked, length within the cap */
  Raw: { readonly command: Command; readonly payload: Uint8Array }
  Error: { readonly error: DecodeError }
}>
/** FrameEvent constructors and matchers (`FrameEvent.Message({ message })`, `FrameEvent.$is("Error")`). */
export const FrameEvent = Data.taggedEnum<FrameEvent>()

const headerError = (reason: DecodeError["reason"], what: string, offset: number): DecodeError =>
  new DecodeError({ reason, what, offset })

/** readCommand reads the 12-byte command field: printable ASCII, then NULs only, naming a known command. */
const readCommand = (header: Uint8Array): Either.Either<Command, DecodeError> => {
  let end = 0
  while (end < COMMAND_BYTES && header[COMMAND_OFFSET + end] !== 0) end++
  let name = ""
  for (let i = 0; i < COMMAND_BYTES; i++) {
    const c = header[COMMAND_OFFSET + i]!
    if (i < end ? c < 0x21 || c > 0x7e : c !== 0) {
      return Either.left(headerError("invalid-value", "frame.command", COMMAND_OFFSET + i))
    }
    if (i < end) name += String.fromCharCode(c)
  }
  return isCommand(name)
    ? Either.right(name)
    : Either.left(headerError("invalid-value", "frame.command", COMMAND_OFFSET))
}

const sameMagic = (header: Uint8Array, magic: Uint8Array): boolean =>
  header[0] === magic[0] && header[1] === magic[1] && header[2] === magic[2] && header[3] === magic[3]

/**
 * Framer cuts a TCP byte stream into messages. The peer's socket handler owns one per connection and
 * calls `push` synchronously with each chunk; chunks may split anywhere and carry several frames.
 *
 * Memory is bounded before it is spent (the attack: announce a huge length, then trickle bytes): the
 * magic is checked as soon as 4 bytes arrive, and the declared length against the command's cap
 * (maxPayloadBytes) as soon as the 24-byte header is complete, so the framer never holds more than
 * 24 + that cap bytes. A payload arriving whole in one chunk is decoded in place, without a copy.
 *
 * Errors: a framing error (wrong magic, unknown or malformed command, length over the cap) loses the
 * stream position, so the framer yields that one Error and closes: every later push returns nothing.
 * A payload error (bad checksum, payload that does not decode) yields an Error and the framer goes on
 * with the next frame, whose position is known from the valid length; the caller decides whether to
 * drop the peer. Offsets of header errors are within the header; of payload errors, within the payload.
 */
export class Framer {
  private readonly header = new Uint8Array(FRAME_HEADER_BYTES)
  private headerFill = 0
  private command: Command | undefined = undefined
  private expected = 0
  private payload: Uint8Array | undefined = undefined
  private payloadFill = 0
  private isClosed = false

  /**
   * `raw` lists commands whose payloads are handed over undecoded as `Raw` events, for consumers that
   * decode them anyway with their own bounded decoder (blocks go to the Chain actor, transactions to
   * the Mempool): decoding them here too would cost a second pass over the largest payloads.
   */
  constructor(
    readonly magic: Uint8Array,
    private readonly raw: ReadonlySet<Command> = new Set(),
  ) {}

  /** closed is true after a framing error; the connection should be dropped. */
  get closed(): boolean {
    return this.isClosed
  }

  /** bufferedBytes is how many bytes of the current, incomplete frame are held. */
  get bufferedBytes(): number {
    return this.headerFill + this.payloadFill
  }

  /** push feeds one chunk of the stream and returns an event per frame it completed. Never throws. */
  push(chunk: Uint8Array): Array<FrameEvent> {
    const events: Array<FrameEvent> = []
    let i = 0
    while (!this.isClosed) {
      if (this.command === undefined) {
        if (i >= chunk.length) break
        const before = this.headerFill
        const take = Math.min(FRAME_HEADER_BYTES - before, chunk.length - i)
        this.header.set(chunk.subarray(i, i + take), before)
        this.headerFill += take
        i += take
        if (before < MAGIC_BYTES && this.headerFill >= MAGIC_BYTES && !sameMagic(this.header, this.magic)) {
          this.close(events, headerError("invalid-value", "frame.magic", 0))
          break
        }
        if (this.headerFill < FRAME_HEADER_BYTES) break
        const command = readCommand(this.header)
        if (Either.isLeft(command)) {
          this.close(events, command.left)
          break
        }
        const view = new DataView(this.header.buffer, this.header.byteOffset, FRAME_HEADER_BYTES)
        const length = view.getUint32(LENGTH_OFFSET, true)
        if (length > maxPayloadBytes(command.right) || length > MAX_FRAME_PAYLOAD) {
          this.close(events, headerError("length-exceeds-cap", "frame.length", LENGTH_OFFSET))
          break
        }
        this.command = command.right
        this.expected = length
        if (chunk.length - i >= length) {
          events.push(this.complete(chunk.subarray(i, i + length)))
          i += length
        } else {
          this.payload = new Uint8Array(length)
          this.payloadFill = 0
        }
      } else {
        if (i >= chunk.length) break
        const payload = this.payload!
        const take = Math.min(this.expected - this.payloadFill, chunk.length - i)
        payload.set(chunk.subarray(i, i + take), this.payloadFill)
        this.payloadFill += take
        i += take
        if (this.payloadFill < this.expected) break
        events.push(this.complete(payload))
      }
    }
    return events
  }

  private close(events: Array<FrameEvent>, error: DecodeError): void {
    this.isClosed = true
    this.headerFill = 0
    this.payload = undefined
    this.payloadFill = 0
    events.push(FrameEvent.Error({ error }))
  }

  /** complete checks the checksum and decodes a whole payload, then readies the framer for the next header. */
  private complete(payload: Uint8Array): FrameEvent {
    const command = this.command!
    const sum = frameChecksum(payload)
    const h = this.header
    const checksumOk =
      sum[0] === h[CHECKSUM_OFFSET] &&
      sum[1] === h[CHECKSUM_OFFSET + 1] &&
      sum[2] === h[CHECKSUM_OFFSET + 2] &&
      sum[3] === h[CHECKSUM_OFFSET + 3]
    this.command = undefined
    this.headerFill = 0
    this.payload = undefined
    this.payloadFill = 0
    if (!checksumOk) {
      return FrameEvent.Error({ error: headerError("invalid-value", "frame.checksum", CHECKSUM_OFFSET) })
    }
    if (this.raw.has(command)) return FrameEvent.Raw({ command, payload })
    return Either.match(decodePayload(command, payload), {
      onLeft: (error) => FrameEvent.Error({ error }),
      onRight: (message) => FrameEvent.Message({ message }),
    })
  }
}
