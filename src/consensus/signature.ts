/**
 * SignatureCheck is one deferred BIP340 verification: `sig` over the 32-byte `msg` by x-only `pubkey`.
 * Consensus code collects these instead of verifying inline, so the caller can verify them on a worker
 * pool, against a cache, or in a batch.
 */
export interface SignatureCheck {
  readonly msg: Uint8Array
  readonly sig: Uint8Array
  readonly pubkey: Uint8Array
}

/**
 * SignatureBackend is a BIP340 implementation. Every backend must agree on every input (the official
 * vectors and random valid and mutated signatures), so which one runs is a speed choice only.
 * `verify` returns false (never throws) for a malformed signature, a key that does not lift to a curve
 * point, or a failed equation. Callers may call it from any fiber: backends hold no mutable state.
 */
export interface SignatureBackend {
  readonly name: "noble" | "libsecp256k1-wasm" | "libsecp256k1-native"
  readonly verify: (msg: Uint8Array, sig: Uint8Array, pubkey: Uint8Array) => boolean
  /** sign with the 32-byte secret key and 32 bytes of auxiliary randomness (BIP340's `a`). */
  readonly sign: (msg: Uint8Array, secretKey: Uint8Array, aux: Uint8Array) => Uint8Array
  /** publicKey derives the x-only public key of a secret key. */
  readonly publicKey: (secretKey: Uint8Array) => Uint8Array
}

/**
 * firstInvalid verifies checks in order and returns the index of the first that fails, or -1.
 */
export const firstInvalid = (backend: SignatureBackend, checks: ReadonlyArray<SignatureCheck>): number => {
  for (let i = 0; i < checks.length; i++) {
    const c = checks[i]!
    if (!backend.verify(c.msg, c.sig, c.pubkey)) return i
  }
  return -1
}
