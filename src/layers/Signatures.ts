import { createRequire } from "node:module"
import { schnorr } from "@noble/curves/secp256k1.js"
import { Context, Effect, Either, Layer, Schema } from "effect"
import { signSchnorr, verifySchnorr, xOnlyPointFromScalar } from "tiny-secp256k1"
import type { SignatureBackend } from "../consensus/signature.js"

/**
 * Signatures is the BIP340 Schnorr backend the node verifies and signs with. Any fiber may use it:
 * every backend is stateless. Which layer provides it is a speed choice only; the contract suite in
 * test/layers/Signatures.test.ts holds all of them to the BIP340 vectors and to each other.
 */
export class Signatures extends Context.Tag("fibercoin/Signatures")<Signatures, SignatureBackend>() {}

/**
 * SignatureBackendUnavailable is why native libsecp256k1 could not be loaded: bcrypto's addon is not
 * built, or bcrypto fell back to its pure-JS code. `layerDefault` turns it into a fallback to WASM.
 */
export class SignatureBackendUnavailable extends Schema.TaggedError<SignatureBackendUnavailable>()(
  "SignatureBackendUnavailable",
  { reason: Schema.String },
) {
  override get message(): string {
    return `native libsecp256k1 unavailable: ${this.reason}`
  }
}

const msgBytes = 32
const sigBytes = 64
const keyBytes = 32

/** hasBip340Lengths is the cheap check every backend makes before calling its library. */
const hasBip340Lengths = (msg: Uint8Array, sig: Uint8Array, pubkey: Uint8Array): boolean =>
  msg.length === msgBytes && sig.length === sigBytes && pubkey.length === keyBytes

/**
 * nobleBackend is @noble/curves' audited pure-JS BIP340 (about 1k verifies/s), the reference the
 * others are checked against. noble itself accepts messages of any length (BIP340 since 2022-12), but
 * the backend contract is 32-byte messages (all consensus signs is a sighash), as the libsecp256k1
 * builds require, so every backend answers every input alike: verify is false and sign throws for any
 * other length. noble throws on wrong lengths; verify turns that into false.
 */
export const nobleBackend: SignatureBackend = {
  name: "noble",
  verify: (msg, sig, pubkey) => {
    if (!hasBip340Lengths(msg, sig, pubkey)) return false
    try {
      return schnorr.verify(sig, msg, pubkey)
    } catch {
      return false
    }
  },
  sign: (msg, secretKey, aux) => {
    if (msg.length !== msgBytes)
      throw new RangeError(`BIP340 messages here are ${msgBytes} bytes, got ${msg.length}`)
    return schnorr.sign(msg, secretKey, aux)
  },
  publicKey: (secretKey) => schnorr.getPublicKey(secretKey),
}

/**
 * wasmBackend is libsecp256k1 compiled to WebAssembly (tiny-secp256k1, about 5k verifies/s), for
 * platforms without the native addon. tiny-secp256k1 throws rather than answering false for a wrong
 * length, a key that does not lift to a curve point, or r or s at or above the group order n; verify
 * turns all of those into false. Note r in [n, p) is a valid x-coordinate that BIP340 allows but
 * tiny-secp256k1 rejects; a valid signature with such an r needs a nonce point with x >= n (chance
 * about 2^-128 per signature, about 2^128 work to find on purpose), so no one can produce one.
 */
export const wasmBackend: SignatureBackend = {
  name: "libsecp256k1-wasm",
  verify: (msg, sig, pubkey) => {
    if (!hasBip340Lengths(msg, sig, pubkey)) return false
    try {
      return verifySchnorr(msg, pubkey, sig)
    } catch {
      return false
    }
  },
  sign: (msg, secretKey, aux) => signSchnorr(msg, secretKey, aux),
  publicKey: (secretKey) => xOnlyPointFromScalar(secretKey),
}

/** BcryptoSchnorr is the part of bcrypto's BIP340 module (`bcrypto/lib/schnorr`) we call. */
interface BcryptoSchnorr {
  readonly native: number
  readonly verify: (msg: Buffer, sig: Buffer, key: Buffer) => boolean
  readonly sign: (msg: Buffer, key: Buffer, aux: Buffer) => Buffer
  readonly publicKeyCreate: (key: Buffer) => Buffer
}

const requireFromHere = createRequire(import.meta.url)

/** requireBcryptoSchnorr loads bcrypto's BIP340 module; `secp256k1.schnorr*` is the pre-BIP340 scheme. */
const requireBcryptoSchnorr = (): unknown => requireFromHere("bcrypto/lib/schnorr")

const isBcryptoSchnorr = (mod: unknown): mod is BcryptoSchnorr =>
  typeof mod === "object" &&
  mod !== null &&
  "native" in mod &&
  "verify" in mod &&
  typeof mod.verify === "function" &&
  "sign" in mod &&
  typeof mod.sign === "function" &&
  "publicKeyCreate" in mod &&
  typeof mod.publicKeyCreate === "function"

/** asBuffer views a Uint8Array as a Buffer without copying; bcrypto asserts Buffer.isBuffer. */
const asBuffer = (u: Uint8Array): Buffer =>
  Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength)

/**
 * loadNativeBackend loads libsecp256k1 through bcrypto's node-gyp addon (about 24k verifies/s). It
 * fails when the module cannot be required or when bcrypto silently fell back to pure JS (`native`
 * is not 2, e.g. the addon was not built or NODE_BACKEND=js). bcrypto answers false rather than
 * throwing for bad keys and r or s out of range, and false for messages that are not 32 bytes; verify
 * still checks lengths first and catches any throw. `load` exists so tests can simulate a missing addon.
 */
export const loadNativeBackend = (
  load: () => unknown = requireBcryptoSchnorr,
): Either.Either<SignatureBackend, SignatureBackendUnavailable> => {
  const unavailable = (reason: string) => Either.left(new SignatureBackendUnavailable({ reason }))
  let mod: unknown
  try {
    mod = load()
  } catch (cause) {
    return unavailable(
      `cannot load bcrypto/lib/schnorr: ${cause instanceof Error ? cause.message : String(cause)}`,
    )
  }
  if (!isBcryptoSchnorr(mod)) return unavailable("bcrypto/lib/schnorr has an unknown shape")
  if (mod.native !== 2) return unavailable(`bcrypto runs its pure-JS fallback (native = ${mod.native})`)
  const bcrypto = mod
  return Either.right({
    name: "libsecp256k1-native",
    verify: (msg, sig, pubkey) => {
      if (!hasBip340Lengths(msg, sig, pubkey)) return false
      try {
        return bcrypto.verify(asBuffer(msg), asBuffer(sig), asBuffer(pubkey))
      } catch {
        return false
      }
    },
    sign: (msg, secretKey, aux) =>
      new Uint8Array(bcrypto.sign(asBuffer(msg), asBuffer(secretKey), asBuffer(aux))),
    publicKey: (secretKey) => new Uint8Array(bcrypto.publicKeyCreate(asBuffer(secretKey))),
  })
}

/**
 * BackendChoice is what `loadDefaultBackend` picked, and why it fell back when it did.
 */
export interface BackendChoice {
  readonly backend: SignatureBackend
  readonly fallbackReason?: string
}

/**
 * chooseBackend prefers native libsecp256k1 and falls back to the WASM build. It takes the native
 * loader as a parameter so tests can simulate a machine without the addon; use `loadDefaultBackend`.
 */
export const chooseBackend = (
  loadNative: () => Either.Either<SignatureBackend, SignatureBackendUnavailable>,
): BackendChoice =>
  Either.match(loadNative(), {
    onLeft: (error) => ({ backend: wasmBackend, fallbackReason: error.message }),
    onRight: (backend) => ({ backend }),
  })

/**
 * loadDefaultBackend picks a backend without an Effect runtime, for benchmarks and worker threads:
 * native libsecp256k1 if its addon loads, else the WASM build, with `fallbackReason` saying why.
 */
export const loadDefaultBackend = (): BackendChoice => chooseBackend(() => loadNativeBackend())

/** layerNoble provides the pure-JS noble backend. */
export const layerNoble: Layer.Layer<Signatures> = Layer.succeed(Signatures, nobleBackend)

/** layerWasm provides libsecp256k1 compiled to WebAssembly. */
export const layerWasm: Layer.Layer<Signatures> = Layer.succeed(Signatures, wasmBackend)

/** layerNative provides native libsecp256k1, or fails if bcrypto's addon is not loaded. */
export const layerNative: Layer.Layer<Signatures, SignatureBackendUnavailable> = Layer.effect(
  Signatures,
  Effect.suspend(() => loadNativeBackend()),
)

/**
 * layerFromChoice builds the layer for a backend choice, logging one warning that names the reason
 * when the choice fell back. `layerDefault` is `layerFromChoice(loadDefaultBackend)`; tests pass a
 * choice with a failing native loader to see the fallback.
 */
export const layerFromChoice = (choose: () => BackendChoice): Layer.Layer<Signatures> =>
  Layer.effect(
    Signatures,
    Effect.gen(function* () {
      const { backend, fallbackReason } = choose()
      if (fallbackReason !== undefined) {
        yield* Effect.logWarning(`signatures: falling back to ${backend.name}: ${fallbackReason}`)
      }
      return backend
    }),
  )

/**
 * layerDefault provides native libsecp256k1 when its addon is built, else the WASM build (logging
 * why once). This is the layer a node runs with; it never fails.
 */
export const layerDefault: Layer.Layer<Signatures> = layerFromChoice(loadDefaultBackend)
