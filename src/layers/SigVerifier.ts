import * as crypto from "node:crypto"
import * as os from "node:os"
import type { Worker } from "node:worker_threads"
import { Context, Effect, Either, Layer, Queue, Schema, type Scope } from "effect"
import type { SignatureBackend, SignatureCheck } from "../consensus/signature.js"
import { loadDefaultBackend, Signatures } from "./Signatures.js"
import { restartDelay, startWorkerThread } from "./workerThread.js"

/**
 * SigVerifierService verifies the signatures a block or transaction collected (`Connected.signatureChecks`),
 * in parallel on a worker pool or inline, behind a cache of signatures already found valid.
 */
export interface SigVerifierService {
  /**
   * verifyAll checks every signature (in parallel across the pool) and returns the index of the first
   * invalid one in input order, or -1. Checks already in the cache are skipped; valid ones are added.
   * Any fiber may call it, concurrently; with the pool the calling thread stays free while workers verify.
   */
  readonly verifyAll: (checks: ReadonlyArray<SignatureCheck>) => Effect.Effect<number>
  /**
   * txVerified answers whether every signature of the transaction with this txid was verified before
   * (Core's script-execution cache, keyed by txid). Sound because a txid commits to the signatures,
   * the outpoints and the outputs, and the coin at an outpoint is fixed by the txid that created it,
   * so the same txid always signs the same sighashes. Synchronous: consensus asks it per transaction.
   */
  readonly txVerified: (txid: Uint8Array) => boolean
  /** markTxVerified records transactions whose every signature verified (valid results only). */
  readonly markTxVerified: (txids: ReadonlyArray<Uint8Array>) => void
  /** stats for metrics/benchmarks */
  readonly stats: Effect.Effect<SigVerifierStats>
}

/** SigVerifierStats counts cache traffic since the layer started; `workers` is the live worker threads. */
export interface SigVerifierStats {
  readonly workers: number
  readonly cacheHits: number
  readonly cacheMisses: number
  readonly cacheSize: number
}

/**
 * SigVerifier verifies batches of BIP340 signatures. `layerPool` spreads them over worker threads so
 * the node's fibers keep running during a block's verification (Core's script-check queue, `-par`);
 * `layerInline` verifies on the calling fiber (tests, the simulator, one-core machines).
 */
export class SigVerifier extends Context.Tag("fibercoin/SigVerifier")<SigVerifier, SigVerifierService>() {}

/**
 * SigVerifierUnavailable is why `layerPool` could not start its workers (the worker script failed to
 * load, or a thread died before it was ready).
 */
export class SigVerifierUnavailable extends Schema.TaggedError<SigVerifierUnavailable>()(
  "SigVerifierUnavailable",
  { reason: Schema.String },
) {
  override get message(): string {
    return `signature worker pool unavailable: ${this.reason}`
  }
}

/**
 * SigWorkerLost is the defect a `verifyAll` dies with when a worker thread running part of its batch
 * dies (crash, out of memory, terminated from outside) or the pool shuts down under it. The pool
 * replaces the thread; the caller learns nothing about the signatures, so it must not treat this as
 * "invalid" (which would reject a valid block) nor as "valid".
 */
export class SigWorkerLost extends Schema.TaggedError<SigWorkerLost>()("SigWorkerLost", {
  reason: Schema.String,
}) {
  override get message(): string {
    return `signature verification lost: ${this.reason}`
  }
}

// ---------------------------------------------------------------------------------------------------
// Packed layout and worker protocol (shared with sigWorker.ts)

/** checkBytes is the packed size of one check: msg (32) ‖ sig (64) ‖ pubkey (32). */
export const checkBytes = 128
/** msgOffset, sigOffset and keyOffset locate the parts of a packed check. */
export const msgOffset = 0
/** sigOffset: see msgOffset. */
export const sigOffset = 32
/** keyOffset: see msgOffset. */
export const keyOffset = 96

/**
 * SigWorkerRequest asks a worker to verify packed checks `start .. start + count` of `buffer` (shared
 * with every worker, so no bytes are copied) and to answer the first invalid position.
 */
export interface SigWorkerRequest {
  readonly id: number
  readonly buffer: SharedArrayBuffer
  readonly start: number
  readonly count: number
}

/**
 * SigWorkerReply is a worker's message: `Ready` once its backend is loaded, then one `Verified` per
 * request, with `bad` the first invalid position (in the buffer, not the request) or -1.
 */
export type SigWorkerReply =
  | { readonly _tag: "Ready"; readonly backend: string; readonly fallbackReason?: string }
  | { readonly _tag: "Verified"; readonly id: number; readonly bad: number }

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null

/** isSigWorkerRequest guards the worker's inbox. */
export const isSigWorkerRequest = (u: unknown): u is SigWorkerRequest =>
  isRecord(u) &&
  typeof u.id === "number" &&
  u.buffer instanceof SharedArrayBuffer &&
  typeof u.start === "number" &&
  typeof u.count === "number" &&
  (u.start + u.count) * checkBytes <= u.buffer.byteLength

/** isSigWorkerReply guards the pool's inbox. */
export const isSigWorkerReply = (u: unknown): u is SigWorkerReply =>
  isRecord(u) &&
  ((u._tag === "Ready" && typeof u.backend === "string") ||
    (u._tag === "Verified" && typeof u.id === "number" && typeof u.bad === "number"))

// ---------------------------------------------------------------------------------------------------
// The cache

/** defaultCacheEntries bounds the cache: about 35 MB of keys, measured (Core's default is 32 MiB). */
export const defaultCacheEntries = 500_000

/**
 * SignatureCache remembers checks that verified VALID, keyed by sha256(msg ‖ sig ‖ pubkey), so a
 * transaction verified on mempool acceptance is not verified again when its block arrives (Core's
 * CSignatureCache). Least recently used entries are evicted beyond `capacity`.
 *
 * Why only valid results: an invalid signature is free to produce, so caching failures would let a
 * peer fill the cache with junk and evict the useful entries; and a valid signature can never become
 * invalid, so a cached "valid" is never stale.
 *
 * Why the key covers all three parts: a signature is valid only for its exact message AND key. A key
 * over (sig, pubkey) would let an attacker reuse a cached valid signature under a different message
 * (spend with someone's old signature); over (msg, sig) a different key; over (msg, pubkey) a forged
 * signature. The key is the full 32-byte digest: truncating to 16 bytes would leave a 2^64 birthday
 * search for an invalid check that collides with a valid one, and a collision IS a forgery here.
 *
 * Owned by one service instance; every method runs synchronously, so concurrent fibers cannot
 * interleave inside it.
 */
interface SignatureCache {
  /** has answers whether `key` is cached, counting a hit or a miss and refreshing the entry. */
  readonly has: (key: string) => boolean
  readonly add: (key: string) => void
  readonly counts: () => {
    readonly cacheHits: number
    readonly cacheMisses: number
    readonly cacheSize: number
  }
}

const makeCache = (capacity: number): SignatureCache => {
  // A Set iterates in insertion order: re-inserting on a hit makes the first element the LRU one.
  const entries = new Set<string>()
  let hits = 0
  let misses = 0
  return {
    has: (key) => {
      if (entries.delete(key)) {
        entries.add(key)
        hits++
        return true
      }
      misses++
      return false
    },
    add: (key) => {
      if (capacity <= 0) return
      entries.delete(key)
      entries.add(key)
      if (entries.size > capacity) {
        const oldest = entries.values().next()
        if (oldest.done !== true) entries.delete(oldest.value)
      }
    },
    counts: () => ({ cacheHits: hits, cacheMisses: misses, cacheSize: entries.size }),
  }
}

/** TxCache is the txid-level cache behind `txVerified`: the same bounded LRU, keyed by the txid's bytes. */
const makeTxCache = (capacity: number): Pick<SigVerifierService, "txVerified" | "markTxVerified"> => {
  const cache = makeCache(capacity)
  const key = (txid: Uint8Array) =>
    Buffer.from(txid.buffer, txid.byteOffset, txid.byteLength).toString("latin1")
  return {
    txVerified: (txid) => cache.has(key(txid)),
    markTxVerified: (txids) => {
      for (const txid of txids) cache.add(key(txid))
    },
  }
}

/** cacheKey is sha256 of one packed check as a 32-char binary string (with the packing, ~0.5 µs). */
const cacheKey = (packed: Uint8Array): string => crypto.hash("sha256", packed, "binary")

const hasBip340Lengths = (c: SignatureCheck): boolean =>
  c.msg.length === 32 && c.sig.length === 64 && c.pubkey.length === 32

/**
 * Unchecked is what the cache could not answer: `keys[j]` and `indices[j]` (position in the input) of
 * the j-th check left to verify, and `malformed`, the first check with a wrong part length (every
 * backend answers false for those without verifying), or -1. Only checks before it are collected:
 * those after cannot change the answer.
 */
interface Unchecked {
  readonly keys: ReadonlyArray<string>
  readonly indices: ReadonlyArray<number>
  readonly malformed: number
}

/**
 * collectUnchecked packs each check into `into` (at 128 bytes per unchecked check) or a scratch
 * buffer, hashes it, and keeps the ones the cache misses.
 */
const collectUnchecked = (
  cache: SignatureCache,
  checks: ReadonlyArray<SignatureCheck>,
  into: Uint8Array | undefined,
): Unchecked => {
  const keys: Array<string> = []
  const indices: Array<number> = []
  const target = into ?? new Uint8Array(checkBytes)
  let malformed = -1
  for (let i = 0; i < checks.length; i++) {
    const c = checks[i]!
    if (!hasBip340Lengths(c)) {
      malformed = i
      break
    }
    const at = into === undefined ? 0 : keys.length * checkBytes
    target.set(c.msg, at + msgOffset)
    target.set(c.sig, at + sigOffset)
    target.set(c.pubkey, at + keyOffset)
    const key = cacheKey(target.subarray(at, at + checkBytes))
    if (!cache.has(key)) {
      keys.push(key)
      indices.push(i)
    }
  }
  return { keys, indices, malformed }
}

// ---------------------------------------------------------------------------------------------------
// Inline

/** inlineYieldEvery is how many verifies the inline verifier runs before letting other fibers run. */
const inlineYieldEvery = 256

/**
 * makeInline verifies on the calling fiber, in input order, stopping at the first invalid check. It
 * yields every 256 verifies (~10 ms with native libsecp256k1) so a long batch does not starve the
 * other fibers completely.
 */
const makeInline = (backend: SignatureBackend, cacheEntries: number): SigVerifierService => {
  const cache = makeCache(cacheEntries)
  const verifyAll = (checks: ReadonlyArray<SignatureCheck>): Effect.Effect<number> =>
    Effect.gen(function* () {
      const { keys, indices, malformed } = collectUnchecked(cache, checks, undefined)
      for (let j = 0; j < keys.length; j++) {
        if (j > 0 && j % inlineYieldEvery === 0) yield* Effect.yieldNow()
        const c = checks[indices[j]!]!
        if (!backend.verify(c.msg, c.sig, c.pubkey)) return indices[j]!
        cache.add(keys[j]!)
      }
      return malformed
    })
  return {
    verifyAll,
    ...makeTxCache(Math.ceil(cacheEntries / 4)),
    stats: Effect.sync(() => ({ workers: 0, ...cache.counts() })),
  }
}

/** InlineOptions configures `layerInline`. */
export interface InlineOptions {
  /** cache bound in entries; default 500,000; 0 disables the cache */
  readonly cacheEntries?: number
}

/**
 * layerInline verifies on the calling fiber with the `Signatures` backend, behind the same cache as
 * the pool. For tests, the simulator (deterministic: no threads) and one-core machines.
 */
export const layerInline = (options: InlineOptions = {}): Layer.Layer<SigVerifier, never, Signatures> =>
  Layer.effect(
    SigVerifier,
    Effect.map(Signatures, (backend) => makeInline(backend, options.cacheEntries ?? defaultCacheEntries)),
  )

// ---------------------------------------------------------------------------------------------------
// Pool

/** PoolOptions configures `layerPool` and `makePool`. */
export interface PoolOptions {
  /** worker threads; default `os.availableParallelism()`; 0 means verify inline */
  readonly workers?: number
  /** cache bound in entries; default 500,000; 0 disables the cache */
  readonly cacheEntries?: number
  /**
   * checks per job; default: the batch split in 4 jobs per worker, each of 32 to 256 checks. Small
   * jobs balance the threads (one may be slowed by the main thread or another batch) and let an
   * invalid signature cancel the jobs behind it; large jobs post fewer messages.
   */
  readonly jobChecks?: number
}

/** jobsInFlight is how many jobs each worker holds: one running, one queued behind it (no idle gap). */
const jobsInFlight = 2

const defaultJobChecks = (unchecked: number, workers: number): number =>
  Math.min(256, Math.max(32, Math.ceil(unchecked / (Math.max(1, workers) * 4))))

/** Batch is one verifyAll call in flight: its packed checks and the jobs still able to change its answer. */
interface Batch {
  readonly buffer: SharedArrayBuffer
  readonly unchecked: Unchecked
  /** jobs queued or running whose result could still lower `bad` */
  readonly jobs: Set<Job>
  /** the smallest invalid packed position found so far, or keys.length */
  bad: number
  settled: boolean
  readonly resume: (result: Effect.Effect<number>) => void
}

interface Job {
  readonly id: number
  readonly batch: Batch
  readonly start: number
  readonly count: number
}

interface Slot {
  readonly index: number
  worker: Worker | undefined
  ready: boolean
  /** consecutive threads in this slot that died before `Ready` */
  startupFailures: number
  readonly inFlight: Map<number, Job>
}

/** Death is a worker thread's end, for the supervisor. */
interface Death {
  readonly slot: Slot
  readonly reason: string
  readonly beforeReady: boolean
}

/**
 * SigWorkerPool is what `makePool` returns: the service, and `threads`, the Worker in each slot
 * (undefined while a slot waits for its replacement), so tests can kill one from outside.
 */
export interface SigWorkerPool {
  readonly service: SigVerifierService
  readonly threads: Effect.Effect<ReadonlyArray<Worker | undefined>>
}

/**
 * makePool starts `workers` threads in the current scope and waits until each has loaded its backend.
 * Closing the scope kills queued and running batches with `SigWorkerLost` and terminates the threads.
 * A thread that dies is replaced by a supervisor fiber (immediately, or with backoff if replacements
 * keep dying before they are ready); the batches it was running die with `SigWorkerLost`. `layerPool`
 * is the usual entry; tests use this for `threads`.
 */
export const makePool = (
  options: PoolOptions & { readonly workers: number },
): Effect.Effect<SigWorkerPool, SigVerifierUnavailable, Scope.Scope> =>
  Effect.gen(function* () {
    const cache = makeCache(options.cacheEntries ?? defaultCacheEntries)
    const deaths = yield* Queue.unbounded<Death>()
    const slots: ReadonlyArray<Slot> = Array.from({ length: options.workers }, (_, index) => ({
      index,
      worker: undefined,
      ready: false,
      startupFailures: 0,
      inFlight: new Map(),
    }))
    const queue: Array<Job> = []
    let nextJobId = 0
    let closed = false
    let warnings: Array<string> = []

    const settle = (batch: Batch, result: Effect.Effect<number>): void => {
      if (batch.settled) return
      batch.settled = true
      batch.jobs.clear()
      batch.resume(result)
    }

    /** finish answers a batch once no job can lower its answer, caching every check before `bad`. */
    const finish = (batch: Batch): void => {
      const { keys, indices, malformed } = batch.unchecked
      for (let j = 0; j < batch.bad; j++) cache.add(keys[j]!)
      settle(batch, Effect.succeed(batch.bad < keys.length ? indices[batch.bad]! : malformed))
    }

    const post = (slot: Slot, worker: Worker, job: Job): void => {
      if (slot.inFlight.size === 0) worker.ref()
      slot.inFlight.set(job.id, job)
      const request: SigWorkerRequest = {
        id: job.id,
        buffer: job.batch.buffer,
        start: job.start,
        count: job.count,
      }
      worker.postMessage(request)
    }

    /**
     * pump hands queued jobs to the least busy threads, up to `jobsInFlight` each. A replacement still
     * loading (a few hundred ms) gets jobs only when no thread is ready, so it does not hold them idle.
     */
    const pump = (): void => {
      while (queue.length > 0) {
        const anyReady = slots.some((s) => s.worker !== undefined && s.ready)
        let best: Slot | undefined
        for (const s of slots) {
          if (s.worker !== undefined && (s.ready || !anyReady) && s.inFlight.size < jobsInFlight) {
            if (best === undefined || s.inFlight.size < best.inFlight.size) best = s
          }
        }
        if (best === undefined || best.worker === undefined) return
        const job = queue.shift()!
        if (job.batch.jobs.has(job)) post(best, best.worker, job)
      }
    }

    const onVerified = (slot: Slot, worker: Worker, id: number, bad: number): void => {
      const job = slot.inFlight.get(id)
      if (job === undefined) return
      slot.inFlight.delete(id)
      if (slot.inFlight.size === 0) worker.unref()
      const batch = job.batch
      if (batch.jobs.delete(job)) {
        if (bad >= 0 && bad < batch.bad) {
          batch.bad = bad
          // Jobs behind the first invalid check cannot change the answer: drop them (queued ones
          // are skipped by pump, running ones are ignored when they answer).
          for (const other of batch.jobs) if (other.start >= bad) batch.jobs.delete(other)
        }
        if (batch.jobs.size === 0) finish(batch)
      }
      pump()
    }

    /**
     * onDeath retires a slot's thread (once: `error` is followed by `exit`), kills the batches it was
     * running, and asks the supervisor for a replacement.
     */
    const onDeath = (slot: Slot, worker: Worker, reason: string): void => {
      if (slot.worker !== worker) return
      const beforeReady = !slot.ready
      slot.worker = undefined
      slot.ready = false
      for (const job of slot.inFlight.values()) {
        if (job.batch.jobs.has(job)) {
          settle(job.batch, Effect.die(new SigWorkerLost({ reason: `worker ${slot.index} died: ${reason}` })))
        }
      }
      slot.inFlight.clear()
      if (!closed) {
        Queue.unsafeOffer(deaths, { slot, reason, beforeReady })
        pump()
      }
    }

    const spawn = (slot: Slot): Worker => {
      const worker = startWorkerThread(import.meta.url, "sigWorker")
      slot.worker = worker
      slot.ready = false
      worker.on("message", (message: unknown) => {
        if (!isSigWorkerReply(message)) {
          onDeath(slot, worker, "sent an unknown message")
          void worker.terminate()
        } else if (message._tag === "Verified") {
          onVerified(slot, worker, message.id, message.bad)
        } else if (slot.worker === worker) {
          slot.ready = true
          slot.startupFailures = 0
          if (message.fallbackReason !== undefined) {
            warnings.push(`signatures: workers fall back to ${message.backend}: ${message.fallbackReason}`)
          }
          if (slot.inFlight.size === 0) worker.unref()
          pump()
        }
      })
      worker.on("error", (error) => onDeath(slot, worker, error.message))
      worker.on("messageerror", (error) => {
        onDeath(slot, worker, `message error: ${error.message}`)
        void worker.terminate()
      })
      worker.on("exit", (code) => onDeath(slot, worker, `exited with code ${code}`))
      return worker
    }

    /** whenReady waits for a fresh thread's `Ready`, or fails when it dies first. */
    const whenReady = (slot: Slot, worker: Worker): Effect.Effect<void, SigVerifierUnavailable> =>
      Effect.async<void, SigVerifierUnavailable>((resume) => {
        // The events may have fired already (the runtime can yield between spawn and here).
        if (slot.ready && slot.worker === worker) return resume(Effect.void)
        if (slot.worker !== worker) {
          return resume(
            Effect.fail(new SigVerifierUnavailable({ reason: `worker ${slot.index} died starting` })),
          )
        }
        const onMessage = (message: unknown): void => {
          if (isSigWorkerReply(message) && message._tag === "Ready") resume(Effect.void)
        }
        const onError = (error: Error): void =>
          resume(
            Effect.fail(new SigVerifierUnavailable({ reason: `worker ${slot.index}: ${error.message}` })),
          )
        const onExit = (code: number): void =>
          resume(
            Effect.fail(
              new SigVerifierUnavailable({ reason: `worker ${slot.index} exited with code ${code}` }),
            ),
          )
        worker.on("message", onMessage)
        worker.on("error", onError)
        worker.on("exit", onExit)
        return Effect.sync(() => {
          worker.off("message", onMessage)
          worker.off("error", onError)
          worker.off("exit", onExit)
        })
      })

    const shutdown = Effect.gen(function* () {
      closed = true
      const lost = new SigWorkerLost({ reason: "the signature worker pool shut down" })
      for (const job of queue) settle(job.batch, Effect.die(lost))
      queue.length = 0
      const running: Array<Worker> = []
      for (const slot of slots) {
        for (const job of slot.inFlight.values()) settle(job.batch, Effect.die(lost))
        slot.inFlight.clear()
        if (slot.worker !== undefined) running.push(slot.worker)
        slot.worker = undefined
      }
      yield* Effect.forEach(running, (w) => Effect.promise(() => w.terminate()), { concurrency: "unbounded" })
    })

    yield* Effect.addFinalizer(() => shutdown)
    const started = yield* Effect.try({
      try: () => slots.map((slot) => [slot, spawn(slot)] as const),
      catch: (cause) => new SigVerifierUnavailable({ reason: `cannot start a worker: ${String(cause)}` }),
    })
    yield* Effect.forEach(started, ([slot, worker]) => whenReady(slot, worker), { concurrency: "unbounded" })
    const logWarnings = Effect.suspend(() => {
      const pending = warnings
      warnings = []
      return Effect.forEach(pending, (w) => Effect.logWarning(w), { discard: true })
    })
    yield* logWarnings

    // The supervisor: replaces dead threads, backing off while replacements die before `Ready`.
    yield* Effect.forkScoped(
      Effect.forever(
        Effect.gen(function* () {
          const { slot, reason, beforeReady } = yield* Queue.take(deaths)
          if (beforeReady) slot.startupFailures++
          yield* Effect.logWarning(`signature worker ${slot.index} died (${reason}); replacing it`)
          if (slot.startupFailures > 0) yield* Effect.sleep(restartDelay(slot.startupFailures))
          if (!closed && slot.worker === undefined) {
            const spawned = Either.try(() => spawn(slot))
            if (Either.isLeft(spawned)) {
              Queue.unsafeOffer(deaths, { slot, reason: String(spawned.left), beforeReady: true })
            } else {
              pump()
            }
          }
          yield* logWarnings
        }),
      ),
    )

    const verifyAll = (checks: ReadonlyArray<SignatureCheck>): Effect.Effect<number> =>
      Effect.suspend(() => {
        if (closed) return Effect.die(new SigWorkerLost({ reason: "the signature worker pool is shut down" }))
        if (checks.length === 0) return Effect.succeed(-1)
        const buffer = new SharedArrayBuffer(checks.length * checkBytes)
        const unchecked = collectUnchecked(cache, checks, new Uint8Array(buffer))
        const n = unchecked.keys.length
        if (n === 0) return Effect.succeed(unchecked.malformed)
        return Effect.async<number>((resume) => {
          const batch: Batch = { buffer, unchecked, jobs: new Set(), bad: n, settled: false, resume }
          const live = slots.filter((s) => s.worker !== undefined).length
          const size = Math.max(1, Math.floor(options.jobChecks ?? defaultJobChecks(n, live)))
          for (let start = 0; start < n; start += size) {
            const job: Job = { id: nextJobId++, batch, start, count: Math.min(size, n - start) }
            batch.jobs.add(job)
            queue.push(job)
          }
          pump()
          // Interrupted: forget the batch; its running jobs finish in their threads and are ignored.
          return Effect.sync(() => {
            batch.settled = true
            batch.jobs.clear()
          })
        })
      })

    const service: SigVerifierService = {
      verifyAll,
      ...makeTxCache(Math.ceil((options.cacheEntries ?? defaultCacheEntries) / 4)),
      stats: Effect.sync(() => ({
        workers: slots.filter((s) => s.worker !== undefined).length,
        ...cache.counts(),
      })),
    }
    return {
      service,
      threads: Effect.sync(() => slots.map((s) => s.worker)),
    }
  })

/**
 * layerPool provides a SigVerifier backed by `workers` worker threads (default: one per core), each
 * loading `loadDefaultBackend()` (native libsecp256k1, else WASM) once. It fails with
 * SigVerifierUnavailable when the threads cannot start. `workers: 0` verifies inline on the calling
 * fiber with `loadDefaultBackend()`.
 */
export const layerPool = (options: PoolOptions = {}): Layer.Layer<SigVerifier, SigVerifierUnavailable> => {
  const workers = options.workers ?? os.availableParallelism()
  if (workers <= 0) {
    return Layer.sync(SigVerifier, () =>
      makeInline(loadDefaultBackend().backend, options.cacheEntries ?? defaultCacheEntries),
    )
  }
  return Layer.scoped(
    SigVerifier,
    Effect.map(makePool({ ...options, workers }), (pool) => pool.service),
  )
}
