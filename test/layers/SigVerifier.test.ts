import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Layer, Option, Scope } from "effect"
import { sha256 } from "../../src/consensus/hash.js"
import type { SignatureCheck } from "../../src/consensus/signature.js"
import { layerDefault, loadDefaultBackend } from "../../src/layers/Signatures.js"
import {
  layerInline,
  layerPool,
  makePool,
  SigVerifier,
  type SigVerifierUnavailable,
  SigWorkerLost,
} from "../../src/layers/SigVerifier.js"

const { backend } = loadDefaultBackend()
const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s)

const keyPair = (label: string): { readonly secret: Uint8Array; readonly pubkey: Uint8Array } => {
  const secret = sha256(utf8(`key/${label}`))
  return { secret, pubkey: backend.publicKey(secret) }
}

/** signed is a valid check: `label`'s key signing sha256(msgLabel). */
const signed = (label: string, msgLabel: string): SignatureCheck => {
  const { secret, pubkey } = keyPair(label)
  const msg = sha256(utf8(`msg/${msgLabel}`))
  return { msg, sig: backend.sign(msg, secret, new Uint8Array(32)), pubkey }
}

const batches = new Map<string, ReadonlyArray<SignatureCheck>>()

/** validBatch is n distinct valid checks over 8 keys, memoised per label so both layers share the signing. */
const validBatch = (label: string, n: number): ReadonlyArray<SignatureCheck> => {
  const name = `${label}/${n}`
  let batch = batches.get(name)
  if (batch === undefined) {
    batch = Array.from({ length: n }, (_, i) => signed(`${label}/${i % 8}`, `${label}/${i}`))
    batches.set(name, batch)
  }
  return batch
}

/** flipped copies a check with one bit of its signature (or message) flipped: now invalid. */
const flipped = (c: SignatureCheck, part: "sig" | "msg" = "sig"): SignatureCheck => {
  const bytes = Uint8Array.from(c[part])
  bytes[bytes.length - 1]! ^= 1
  return { ...c, [part]: bytes }
}

/** withInvalid replaces the checks at `at` by flipped copies. */
const withInvalid = (
  batch: ReadonlyArray<SignatureCheck>,
  at: ReadonlyArray<number>,
): ReadonlyArray<SignatureCheck> =>
  batch.map((c, i) => (at.includes(i) ? flipped(c, i % 2 ? "msg" : "sig") : c))

/** positionIn picks a fixed pseudo-random position in 0 .. n-1 from a label. */
const positionIn = (label: string, n: number): number =>
  new DataView(sha256(utf8(label)).buffer).getUint32(0) % n

const verifyAll = (checks: ReadonlyArray<SignatureCheck>) =>
  Effect.flatMap(SigVerifier, (v) => v.verifyAll(checks))
const stats = Effect.flatMap(SigVerifier, (v) => v.stats)

const defectOf = <A>(exit: Exit.Exit<A, unknown>): unknown =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.dieOption(exit.cause)) : undefined

type MakeLayer = (options: {
  readonly cacheEntries?: number
}) => Layer.Layer<SigVerifier, SigVerifierUnavailable>

/** contract is the behaviour every SigVerifier layer owes its callers. */
const contract = (name: string, make: MakeLayer): void => {
  describe(name, () => {
    it.layer(make({}))((it) => {
      it.effect("an all-valid batch answers -1, and so does an empty one", () =>
        Effect.gen(function* () {
          expect(yield* verifyAll(validBatch("all-valid", 2000))).toBe(-1)
          expect(yield* verifyAll([])).toBe(-1)
        }),
      )

      it.effect("one invalid check answers exactly its index", () =>
        Effect.gen(function* () {
          const at = positionIn(`one-invalid/${name}`, 2000)
          expect(yield* verifyAll(withInvalid(validBatch("one-invalid", 2000), [at]))).toBe(at)
        }),
      )

      it.effect("several invalid checks answer the smallest index", () =>
        Effect.gen(function* () {
          const batch = withInvalid(validBatch("several", 2000), [1999, 1700, 523, 524, 1200])
          expect(yield* verifyAll(batch)).toBe(523)
        }),
      )

      it.effect("a check with a wrong part length is invalid without verifying", () =>
        Effect.gen(function* () {
          const batch = [...validBatch("malformed", 10)]
          batch[7] = { ...batch[7]!, sig: batch[7]!.sig.subarray(0, 63) }
          expect(yield* verifyAll(batch)).toBe(7)
          batch[4] = flipped(batch[4]!)
          expect(yield* verifyAll(batch)).toBe(4)
        }),
      )

      it.effect("a second verifyAll of a valid batch is answered from the cache", () =>
        Effect.gen(function* () {
          const batch = validBatch("twice", 2000)
          expect(yield* verifyAll(batch)).toBe(-1)
          const before = yield* stats
          expect(yield* verifyAll(batch)).toBe(-1)
          const after = yield* stats
          expect(after.cacheHits - before.cacheHits).toBe(batch.length)
          expect(after.cacheMisses).toBe(before.cacheMisses)
        }),
      )

      it.effect("an invalid check is never cached", () =>
        Effect.gen(function* () {
          const batch = withInvalid(validBatch("bad-twice", 500), [300])
          expect(yield* verifyAll(batch)).toBe(300)
          const before = yield* stats
          expect(yield* verifyAll(batch)).toBe(300)
          const after = yield* stats
          // the 300 valid checks before it were cached; the bad one missed again
          expect(after.cacheHits - before.cacheHits).toBe(300)
          expect(after.cacheMisses - before.cacheMisses).toBeGreaterThanOrEqual(1)
        }),
      )

      it.effect("the cache key covers message, signature and key", () =>
        Effect.gen(function* () {
          const original = signed("alice", "pay bob")
          expect(yield* verifyAll([original])).toBe(-1)
          const otherKey = signed("carol", "pay bob")
          const otherMsg = signed("alice", "pay mallory")
          const before = yield* stats
          expect(yield* verifyAll([otherKey, otherMsg])).toBe(-1)
          const after = yield* stats
          expect(after.cacheMisses - before.cacheMisses).toBe(2)
          expect(after.cacheHits).toBe(before.cacheHits)
          // the cached signature reused under another message or key is still verified, and fails
          expect(yield* verifyAll([{ ...original, msg: otherMsg.msg }])).toBe(0)
          expect(yield* verifyAll([{ ...original, pubkey: otherKey.pubkey }])).toBe(0)
        }),
      )
    })

    it.layer(make({ cacheEntries: 100 }))((it) => {
      it.effect("the cache holds at most cacheEntries, evicting the least recently used", () =>
        Effect.gen(function* () {
          const batch = validBatch("bound", 1000)
          expect(yield* verifyAll(batch)).toBe(-1)
          expect((yield* stats).cacheSize).toBeLessThanOrEqual(100)
          const before = yield* stats
          expect(yield* verifyAll(batch.slice(900))).toBe(-1)
          expect((yield* stats).cacheHits - before.cacheHits).toBe(100)
        }),
      )
    })
  })
}

contract("layerPool({ workers: 2 })", (options) => layerPool({ workers: 2, ...options }))
contract("layerInline", (options) => layerInline(options).pipe(Layer.provide(layerDefault)))

describe("layerPool", () => {
  it.effect("workers: 0 verifies inline", () =>
    Effect.gen(function* () {
      expect(yield* verifyAll(withInvalid(validBatch("zero", 50), [20]))).toBe(20)
      expect((yield* stats).workers).toBe(0)
    }).pipe(Effect.provide(layerPool({ workers: 0 }))),
  )

  it.scopedLive("the calling thread stays free while the workers verify", () =>
    Effect.gen(function* () {
      const pool = yield* makePool({ workers: 2 })
      let ticks = 0
      const ticker = yield* Effect.fork(
        Effect.forever(
          Effect.zipRight(
            Effect.sleep("1 millis"),
            Effect.sync(() => ticks++),
          ),
        ),
      )
      expect(yield* pool.service.verifyAll(validBatch("free", 2000))).toBe(-1)
      yield* Fiber.interrupt(ticker)
      // 2,000 verifies take tens of milliseconds; inline, the timer could not fire until the end
      expect(ticks).toBeGreaterThanOrEqual(3)
    }),
  )

  it.scopedLive("answers correctly after a worker is terminated from outside, and replaces it", () =>
    Effect.gen(function* () {
      const pool = yield* makePool({ workers: 2 })
      const [victim] = yield* pool.threads
      yield* Effect.promise(() => victim!.terminate())
      const batch = withInvalid(validBatch("after-kill", 1000), [640, 900])
      expect(yield* pool.service.verifyAll(batch)).toBe(640)
      // the supervisor starts a new thread in the dead slot
      yield* Effect.repeat(pool.threads, {
        until: (threads) => threads[0] !== undefined && threads[0] !== victim,
      })
      expect((yield* pool.service.stats).workers).toBe(2)
      expect(yield* pool.service.verifyAll(withInvalid(validBatch("after-replace", 1000), [333]))).toBe(333)
    }),
  )

  it.scopedLive("a batch whose worker dies fails with SigWorkerLost instead of hanging", () =>
    Effect.gen(function* () {
      // one job of 2,000 checks keeps the only thread busy for tens of milliseconds
      const pool = yield* makePool({ workers: 1, jobChecks: 2000 })
      const [thread] = yield* pool.threads
      const fiber = yield* Effect.fork(pool.service.verifyAll(validBatch("dies", 2000)))
      yield* Effect.repeat(Fiber.status(fiber), { until: (s) => s._tag === "Suspended" })
      yield* Effect.promise(() => thread!.terminate())
      expect(defectOf(yield* Fiber.await(fiber))).toBeInstanceOf(SigWorkerLost)
      // the replacement takes the next batch
      expect(yield* pool.service.verifyAll(withInvalid(validBatch("dies-next", 100), [42]))).toBe(42)
    }),
  )

  it.live("closing the scope fails in-flight work and terminates the threads", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const pool = yield* Scope.extend(makePool({ workers: 2, jobChecks: 1000 }), scope)
      const threads = yield* pool.threads
      const fiber = yield* Effect.fork(pool.service.verifyAll(validBatch("shutdown", 2000)))
      yield* Effect.repeat(Fiber.status(fiber), { until: (s) => s._tag === "Suspended" })
      yield* Scope.close(scope, Exit.void)
      expect(defectOf(yield* Fiber.await(fiber))).toBeInstanceOf(SigWorkerLost)
      expect(threads.map((t) => t?.threadId)).toEqual([-1, -1])
      expect(defectOf(yield* Effect.exit(pool.service.verifyAll(validBatch("shutdown", 10))))).toBeInstanceOf(
        SigWorkerLost,
      )
    }),
  )
})

describe("the txid-level cache (txVerified / markTxVerified)", () => {
  it.scoped("remembers transactions marked verified, and nothing else, within its bound", () =>
    Effect.gen(function* () {
      const v = yield* SigVerifier
      const txid = (i: number) => new Uint8Array(32).fill(i)
      expect(v.txVerified(txid(1))).toBe(false)
      v.markTxVerified([txid(1), txid(2)])
      expect(v.txVerified(txid(1))).toBe(true)
      expect(v.txVerified(txid(2))).toBe(true)
      expect(v.txVerified(txid(3))).toBe(false)
      // bound: cacheEntries / 4 = 25 txids
      v.markTxVerified(Array.from({ length: 100 }, (_, i) => txid(10 + i)))
      const kept = Array.from({ length: 100 }, (_, i) => v.txVerified(txid(10 + i))).filter(Boolean).length
      expect(kept).toBe(25)
    }).pipe(Effect.provide(layerInline({ cacheEntries: 100 }).pipe(Layer.provide(layerDefault)))),
  )
})
