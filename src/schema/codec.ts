import { Either } from "effect"
import { DecodeError } from "./DecodeError.js"

/**
 * Reader is a bounded cursor over untrusted bytes. Every read checks the remaining length first, and
 * every count is checked against both its cap and the bytes left (count × smallest element size), so
 * no allocation is ever sized by an untrusted number. Failures are thrown as DecodeError inside the
 * decoder and turned into an Either by `decodeWith`; callers never see an exception.
 *
 * `bytesCopied` counts every byte the reader copied out of the input; tests assert it never exceeds
 * the input length.
 */
export class Reader {
  pos = 0
  bytesCopied = 0
  private readonly view: DataView

  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  }

  get remaining(): number {
    return this.bytes.length - this.pos
  }

  fail(reason: DecodeError["reason"], what: string): never {
    throw new DecodeError({ reason, what, offset: this.pos })
  }

  private need(n: number, what: string): void {
    if (n > this.bytes.length - this.pos) this.fail("truncated", what)
  }

  u8(what: string): number {
    this.need(1, what)
    return this.bytes[this.pos++]!
  }

  u32(what: string): number {
    this.need(4, what)
    const v = this.view.getUint32(this.pos, true)
    this.pos += 4
    return v
  }

  u64(what: string): bigint {
    this.need(8, what)
    const v = this.view.getBigUint64(this.pos, true)
    this.pos += 8
    return v
  }

  /**
   * bytesN copies `n` bytes out of the input, so a decoded value never pins or aliases a buffer the
   * caller may reuse (a socket's, LMDB's).
   */
  bytesN(n: number, what: string): Uint8Array {
    this.need(n, what)
    const out = allocBytes(n)
    out.set(this.bytes.subarray(this.pos, this.pos + n))
    this.pos += n
    this.bytesCopied += n
    return out
  }

  /**
   * varint reads Bitcoin's CompactSize and rejects non-minimal encodings (a value that fits a shorter
   * form) and values above `cap`.
   */
  varint(what: string, cap: number): number {
    const start = this.pos
    const first = this.u8(what)
    let value: number
    if (first < 0xfd) {
      value = first
    } else if (first === 0xfd) {
      this.need(2, what)
      value = this.view.getUint16(this.pos, true)
      this.pos += 2
      if (value < 0xfd) this.failAt(start, "non-canonical-varint", what)
    } else if (first === 0xfe) {
      value = this.u32(what)
      if (value <= 0xffff) this.failAt(start, "non-canonical-varint", what)
    } else {
      const big = this.u64(what)
      if (big <= 0xffffffffn) this.failAt(start, "non-canonical-varint", what)
      this.failAt(start, "length-exceeds-cap", what)
    }
    if (value > cap) this.failAt(start, "length-exceeds-cap", what)
    return value
  }

  /** count reads a varint element count and checks `count × minElementBytes` fits in what is left. */
  count(what: string, cap: number, minElementBytes: number): number {
    const start = this.pos
    const n = this.varint(what, cap)
    if (n * minElementBytes > this.remaining) this.failAt(start, "length-exceeds-input", what)
    return n
  }

  /** varBytes reads a length-prefixed byte string of at most `cap` bytes. */
  varBytes(what: string, cap: number): Uint8Array {
    const start = this.pos
    const n = this.varint(what, cap)
    if (n > this.remaining) this.failAt(start, "length-exceeds-input", what)
    return this.bytesN(n, what)
  }

  end(what: string): void {
    if (this.pos !== this.bytes.length) this.fail("trailing-bytes", what)
  }

  private failAt(offset: number, reason: DecodeError["reason"], what: string): never {
    this.pos = offset
    this.fail(reason, what)
  }
}

const SLAB_BYTES = 8192
const MAX_SLAB_ALLOC = 1024
let slab = new ArrayBuffer(SLAB_BYTES)
let slabOffset = 0

/**
 * allocBytes returns `n` zeroed bytes as a plain Uint8Array. V8 keeps typed arrays of up to 64 bytes on
 * its heap (cheap), but gives a larger one its own off-heap backing store, about 20× the cost; encoders
 * and decoders allocate several per transaction, so mid-sized ones are carved from a shared 8 KiB slab
 * (as Node's Buffer pool does). A live value pins its slab, which bounds the waste to the slab size.
 */
export const allocBytes = (n: number): Uint8Array => {
  if (n <= 64 || n > MAX_SLAB_ALLOC) return new Uint8Array(n)
  if (slabOffset + n > SLAB_BYTES) {
    slab = new ArrayBuffer(SLAB_BYTES)
    slabOffset = 0
  }
  const out = new Uint8Array(slab, slabOffset, n)
  slabOffset = (slabOffset + n + 7) & ~7
  return out
}

/** Writer fills a buffer of a size computed up front; encoders never reallocate. */
export class Writer {
  pos = 0
  readonly bytes: Uint8Array
  private readonly view: DataView

  constructor(size: number) {
    this.bytes = allocBytes(size)
    this.view = new DataView(this.bytes.buffer, this.bytes.byteOffset, size)
  }

  u8(v: number): void {
    this.bytes[this.pos++] = v
  }

  u32(v: number): void {
    this.view.setUint32(this.pos, v, true)
    this.pos += 4
  }

  u64(v: bigint): void {
    this.view.setBigUint64(this.pos, v, true)
    this.pos += 8
  }

  raw(b: Uint8Array): void {
    this.bytes.set(b, this.pos)
    this.pos += b.length
  }

  varint(v: number): void {
    if (v < 0xfd) {
      this.u8(v)
    } else if (v <= 0xffff) {
      this.u8(0xfd)
      this.view.setUint16(this.pos, v, true)
      this.pos += 2
    } else {
      this.u8(0xfe)
      this.u32(v)
    }
  }

  varBytes(b: Uint8Array): void {
    this.varint(b.length)
    this.raw(b)
  }

  /** finish returns the buffer, asserting the size computed up front was exact. */
  finish(): Uint8Array {
    if (this.pos !== this.bytes.length)
      throw new Error(`encoder size mismatch: ${this.pos} != ${this.bytes.length}`)
    return this.bytes
  }
}

/** varintSize is the encoded length of a CompactSize. */
export const varintSize = (v: number): number => (v < 0xfd ? 1 : v <= 0xffff ? 3 : 5)

/**
 * decodeWith runs a reader-based decoder over the whole input, requiring every byte to be consumed,
 * and returns the value or the typed DecodeError. `maxBytes` refuses oversized input before reading.
 */
export const decodeWith =
  <A>(what: string, maxBytes: number, read: (r: Reader) => A) =>
  (bytes: Uint8Array): Either.Either<A, DecodeError> => {
    if (bytes.length > maxBytes) {
      return Either.left(new DecodeError({ reason: "length-exceeds-cap", what, offset: 0 }))
    }
    const r = new Reader(bytes)
    try {
      const value = read(r)
      r.end(what)
      return Either.right(value)
    } catch (e) {
      if (e instanceof DecodeError) return Either.left(e)
      throw e
    }
  }
