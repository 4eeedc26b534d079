import * as crypto from "node:crypto"
import { Context, Effect, Layer } from "effect"

/**
 * Entropy is the node's one source of unpredictable bytes (issue 10): wallet seeds, the node identity,
 * BIP340 auxiliary randomness, the change output's position, rendezvous cookie secrets and punch
 * nonces. It is a service rather than Effect's `Random` because `Random` is a seeded PRNG, unfit for
 * keys and secrets; a service keeps production on the OS CSPRNG (`layerCrypto`) while a simulation
 * swaps in `layerSeeded`, so one seed replays a whole run bit for bit.
 *
 * Non-secret choices (peer selection, nonces of pings, session ids, addrman buckets) stay on Effect's
 * `Random`, which a simulation seeds with `Effect.withRandom(Random.make(seed))`.
 *
 * It is a `Context.Reference` defaulting to the CSPRNG: code that is never given a layer (an
 * embedding program, a unit test) draws from the OS, as before; `Node.layer` provides
 * `NodeOptions.entropy` explicitly.
 */

/** EntropyService hands out bytes; any fiber may call it. */
export interface EntropyService {
  /** bytes is `n` fresh bytes (n ≥ 0) */
  readonly bytes: (n: number) => Effect.Effect<Uint8Array>
  /** int is a uniform integer in [0, below) for 1 ≤ below ≤ 2^32 (rejection sampling, no modulo bias) */
  readonly int: (below: number) => Effect.Effect<number>
}

/** MAX_INT_BOUND is the largest `below` `int` accepts: it draws 4 bytes at a time. */
const MAX_INT_BOUND = 2 ** 32

/** makeService builds the service over a byte source: `int` rejects the biased top of the u32 range. */
const makeService = (bytes: (n: number) => Effect.Effect<Uint8Array>): EntropyService => ({
  bytes,
  int: (below) =>
    Effect.suspend(() => {
      if (!Number.isInteger(below) || below < 1 || below > MAX_INT_BOUND)
        return Effect.dieMessage(`Entropy.int: bound ${below} outside 1..2^32`)
      // the largest multiple of `below` that fits in 2^32; draws at or above it are redrawn
      const limit = MAX_INT_BOUND - (MAX_INT_BOUND % below)
      const draw: Effect.Effect<number> = Effect.flatMap(bytes(4), (b) => {
        const v = new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true)
        return v < limit ? Effect.succeed(v % below) : draw
      })
      return draw
    }),
})

/** crypto draws from the OS CSPRNG (node:crypto randomBytes). */
const cryptoService: EntropyService = makeService((n) =>
  Effect.sync(() => new Uint8Array(crypto.randomBytes(n))),
)

export class Entropy extends Context.Reference<Entropy>()("fibercoin/Entropy", {
  defaultValue: (): EntropyService => cryptoService,
}) {}

/** layerCrypto is the production source: the OS CSPRNG. The default wherever no layer is given. */
export const layerCrypto: Layer.Layer<Entropy> = Layer.succeed(Entropy, cryptoService)

/** seedBytes is a seed as bytes: a number is its 64-bit two's complement, little-endian (a safe integer). */
const seedBytes = (seed: Uint8Array | number): Uint8Array => {
  if (typeof seed !== "number") return seed
  if (!Number.isSafeInteger(seed)) throw new RangeError(`Entropy seed ${seed} is not a safe integer`)
  const out = new Uint8Array(8)
  new DataView(out.buffer).setBigUint64(0, BigInt.asUintN(64, BigInt(seed)), true)
  return out
}

const SEEDED_TAG = "fibercoin/entropy/seeded/v1"

/**
 * deriveSeed is a child seed named `label` (e.g. a host name): SHA-256(tag ‖ seed ‖ label), so a
 * simulation gives each node its own stream from one run seed.
 */
export const deriveSeed = (seed: Uint8Array | number, label: string): Uint8Array =>
  new Uint8Array(
    crypto.createHash("sha256").update(`${SEEDED_TAG}/derive`).update(seedBytes(seed)).update(label).digest(),
  )

/**
 * makeSeeded is a deterministic stream: block i is SHA-256(tag ‖ key ‖ u64le(i)) with key =
 * SHA-256(seed); each call takes whole blocks from the counter on (no bytes carried between calls),
 * so the n-th call's answer depends only on the seed and the sizes of the calls before it.
 */
const makeSeeded = (seed: Uint8Array | number): EntropyService => {
  const key = crypto.createHash("sha256").update(seedBytes(seed)).digest()
  let counter = 0n
  const block = (): Buffer => {
    const i = Buffer.alloc(8)
    i.writeBigUInt64LE(counter++)
    return crypto.createHash("sha256").update(SEEDED_TAG).update(key).update(i).digest()
  }
  return makeService((n) =>
    Effect.sync(() => {
      const out = new Uint8Array(n)
      for (let at = 0; at < n; at += 32) out.set(block().subarray(0, Math.min(32, n - at)), at)
      return out
    }),
  )
}

/**
 * layerSeeded is a deterministic source for simulations and tests: the same seed gives the same bytes
 * in the same order (a SHA-256 counter-mode stream). NOT for production: anyone who knows or guesses
 * the seed knows every key, wallet seed and secret the node makes. Each build of the layer starts the
 * stream afresh; `Node.layer` builds it once per node.
 */
export const layerSeeded = (seed: Uint8Array | number): Layer.Layer<Entropy> =>
  Layer.sync(Entropy, () => makeSeeded(seed))

/** bytes is `n` bytes from the current Entropy (the CSPRNG unless a layer says otherwise). */
export const bytes = (n: number): Effect.Effect<Uint8Array> => Effect.flatMap(Entropy, (e) => e.bytes(n))

/** int is a uniform integer in [0, below) from the current Entropy, 1 ≤ below ≤ 2^32. */
export const int = (below: number): Effect.Effect<number> => Effect.flatMap(Entropy, (e) => e.int(below))
