/**
 * headerKernel wraps the generated SHA-256d WebAssembly module (sha256d.ts) in plain functions over
 * header bytes, midstates and targets. One instance per thread: its memory holds the current job, so
 * calls must not interleave, which synchronous calls on one thread cannot.
 */
import { HEADER_BYTES } from "../../schema/block.js"
import { kernelLayout, kernelModuleBytes } from "./sha256d.js"

/**
 * PreparedHeader is what a header costs to hash per nonce once its fixed part is done: the SHA-256
 * state after bytes 0..63 (the midstate) and the 3 words of bytes 64..75 (the merkle root's last 4
 * bytes, time, bits), all as SHA-256 reads them (big-endian words).
 */
export interface PreparedHeader {
  readonly midstate: Uint32Array
  readonly tail: Uint32Array
}

/** HeaderKernel is the kernel's API; any thread may load one and call it synchronously. */
export interface HeaderKernel {
  /** prepare computes a header's midstate and tail; the header's own nonce is ignored. */
  readonly prepare: (header80: Uint8Array) => PreparedHeader
  /** hashHeader is sha256d of the header with `nonce`, the 32 bytes node:crypto would give. */
  readonly hashHeader: (header: PreparedHeader, nonce: number) => Uint8Array
  /**
   * scan returns the first nonce in `start .. start + count - 1` whose header hash, read big-endian,
   * is at most `target` (8 words, see targetWords), or -1. Needs start + count ≤ 2^32 and count < 2^31.
   * Four nonces per SIMD instruction: about 6 M nonces/s on one core of the 2-core AMD EPYC dev box.
   */
  readonly scan: (header: PreparedHeader, target: Uint32Array, start: number, count: number) => number
}

/** MAX_SCAN is the most nonces one scan call may cover (its answer is an i32 offset). */
export const MAX_SCAN = 0x7fffffff

const U256_MAX = (1n << 256n) - 1n

/** targetWords splits a 256-bit target into 8 words, most significant first (clamped to 0 .. 2^256-1). */
export const targetWords = (target: bigint): Uint32Array => {
  let t = target < 0n ? 0n : target > U256_MAX ? U256_MAX : target
  const words = new Uint32Array(8)
  for (let i = 7; i >= 0; i--) {
    words[i] = Number(t & 0xffffffffn)
    t >>= 32n
  }
  return words
}

/**
 * WasmApi is the part of the WebAssembly JS API used here. The project's `lib` (ES2023, no DOM) does not
 * declare it, and @types/node 20 only declares an empty namespace, so it is typed locally.
 */
interface WasmApi {
  readonly Module: new (bytes: Uint8Array) => object
  readonly Instance: new (module: object, imports: object) => { readonly exports: Record<string, unknown> }
  readonly Memory: abstract new (...args: ReadonlyArray<never>) => { readonly buffer: ArrayBuffer }
}

const wasm = (globalThis as unknown as { readonly WebAssembly: WasmApi }).WebAssembly

interface KernelExports {
  readonly memory: { readonly buffer: ArrayBuffer }
  readonly compress: () => void
  readonly hash: (nonce: number) => void
  readonly scan: (start: number, count: number) => number
}

const isKernelExports = (u: Record<string, unknown>): u is Record<string, unknown> & KernelExports =>
  u.memory instanceof wasm.Memory &&
  typeof u.compress === "function" &&
  typeof u.hash === "function" &&
  typeof u.scan === "function"

let loaded: HeaderKernel | undefined

/**
 * loadHeaderKernel generates, compiles and instantiates the kernel once per thread (about 50 ms the
 * first time), then returns the same instance. Throws if this runtime lacks WebAssembly SIMD.
 */
export const loadHeaderKernel = (): HeaderKernel => {
  if (loaded !== undefined) return loaded
  const instance = new wasm.Instance(new wasm.Module(kernelModuleBytes()), {})
  const exports = instance.exports
  if (!isKernelExports(exports)) throw new Error("header kernel: unexpected exports")
  // The memory never grows, so this view stays valid. Words are stored in the platform's order,
  // which is little-endian wherever WebAssembly runs, as the module reads them.
  const words = new Uint32Array(exports.memory.buffer)
  const at = (offset: number): number => offset / 4

  const load = (header: PreparedHeader): void => {
    words.set(header.midstate, at(kernelLayout.midstate))
    words.set(header.tail, at(kernelLayout.tail))
  }

  const kernel: HeaderKernel = {
    prepare: (header80) => {
      if (header80.length !== HEADER_BYTES) throw new RangeError(`a header is ${HEADER_BYTES} bytes`)
      const view = new DataView(header80.buffer, header80.byteOffset, header80.byteLength)
      for (let i = 0; i < 16; i++) words[at(kernelLayout.block) + i] = view.getUint32(4 * i)
      exports.compress()
      const midstate = words.slice(at(kernelLayout.midstate), at(kernelLayout.midstate) + 8)
      const tail = Uint32Array.from([view.getUint32(64), view.getUint32(68), view.getUint32(72)])
      return { midstate, tail }
    },
    hashHeader: (header, nonce) => {
      load(header)
      exports.hash(nonce >>> 0)
      const out = new Uint8Array(32)
      const view = new DataView(out.buffer)
      for (let i = 0; i < 8; i++) view.setUint32(4 * i, words[at(kernelLayout.digest) + i]!)
      return out
    },
    scan: (header, target, start, count) => {
      if (!(Number.isInteger(start) && Number.isInteger(count) && start >= 0 && count >= 0))
        throw new RangeError(`scan: bad range ${start} + ${count}`)
      if (count > MAX_SCAN || start + count > 0x100000000)
        throw new RangeError(`scan: range ${start} + ${count} leaves the nonce space`)
      if (target.length !== 8) throw new RangeError("scan: the target is 8 words")
      load(header)
      words.set(target, at(kernelLayout.target))
      const found = exports.scan(start | 0, count | 0)
      return found < 0 ? -1 : start + found
    },
  }
  loaded = kernel
  return kernel
}
