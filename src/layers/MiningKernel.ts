import * as os from "node:os"
import type { Worker } from "node:worker_threads"
import { Context, Deferred, Effect, Either, FiberId, Layer, Option, Queue, type Scope } from "effect"
import { sha256d } from "../consensus/hash.js"
import { hashToBigInt } from "../consensus/pow.js"
import { type BlockHeader, encodeHeader } from "../schema/block.js"
import { loadHeaderKernel, targetWords } from "./kernel/headerKernel.js"
import { restartDelay, startWorkerThread } from "./workerThread.js"

export type { HeaderKernel, PreparedHeader } from "./kernel/headerKernel.js"
export { loadHeaderKernel, targetWords } from "./kernel/headerKernel.js"

/**
 * MiningKernelService searches the nonce space of a block header for a proof of work. The header's
 * first 64 bytes are hashed once (the midstate); each nonce then costs two SHA-256 compressions, four
 * nonces at a time in a WebAssembly SIMD kernel. The Miner actor's fibers call it; any fiber may.
 */
export interface MiningKernelService {
  /**
   * search looks at nonces from `header.nonce` up to 2^32 - 1 for one whose header hash, read
   * big-endian (pow.ts hashToBigInt), is at most `target`; none when there is none. Interrupting it
   * cancels the work at once: worker threads stop at their next batch boundary (~10 ms). Searches on
   * the worker pool run one at a time; a second caller waits for the first.
   */
  readonly search: (header: BlockHeader, target: bigint) => Effect.Effect<Option.Option<number>>
  /** stats counts header hashes since the service started, for a hash rate (getmininginfo, bench). */
  readonly stats: Effect.Effect<MiningStats>
}

/** MiningStats: `workers` is the live worker threads, `hashes` the header hashes computed so far. */
export interface MiningStats {
  readonly workers: number
  readonly hashes: number
}

/**
 * MiningKernel hashes block headers for the Miner. `layerPool` runs the search on worker threads so the
 * node's fibers (RPC, peers, the Chain actor) keep their core; `layerInline` runs it on the calling
 * fiber in short slices (tests, the simulator, one-core machines).
 */
export class MiningKernel extends Context.Tag("fibercoin/MiningKernel")<
  MiningKernel,
  MiningKernelService
>() {}

// ---------------------------------------------------------------------------------------------------
// Worker protocol (shared with minerWorker.ts)

/** NONCE_SPACE is the number of nonces a header has: 2^32. */
export const NONCE_SPACE = 0x100000000

/** controlCancelled and controlNextBatch index a job's control words (an Int32Array on shared memory). */
export const controlCancelled = 0
/** controlNextBatch: see controlCancelled; the next batch a worker may claim, by Atomics.add. */
export const controlNextBatch = 1

/**
 * MinerWorkerJob asks every worker to search `header` over nonces `start .. end - 1`. Workers claim
 * batches of `batch` nonces from the shared `control` counter, so each nonce is hashed once however
 * the threads are scheduled, and stop at the next batch boundary once `control[controlCancelled]` is set.
 */
export interface MinerWorkerJob {
  readonly id: number
  readonly control: SharedArrayBuffer
  readonly header: Uint8Array
  readonly target: Uint32Array
  readonly start: number
  readonly end: number
  readonly batch: number
}

/** MinerWorkerData is each thread's `workerData`: the pool's hash counters and its slot in them. */
export interface MinerWorkerData {
  readonly stats: SharedArrayBuffer
  readonly slot: number
}

/**
 * MinerWorkerReply is a worker's message: `Ready` once its kernel is compiled and warm, then per job
 * `Found` (a nonce meeting the target) or `Exhausted` (no batch left to claim). A cancelled job
 * gets no answer.
 */
export type MinerWorkerReply =
  | { readonly _tag: "Ready" }
  | { readonly _tag: "Found"; readonly id: number; readonly nonce: number }
  | { readonly _tag: "Exhausted"; readonly id: number }

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null
const isNat = (u: unknown): u is number => typeof u === "number" && Number.isInteger(u) && u >= 0

/** isMinerWorkerJob guards the worker's inbox. */
export const isMinerWorkerJob = (u: unknown): u is MinerWorkerJob =>
  isRecord(u) &&
  isNat(u.id) &&
  u.control instanceof SharedArrayBuffer &&
  u.control.byteLength >= 8 &&
  u.header instanceof Uint8Array &&
  u.header.length === 80 &&
  u.target instanceof Uint32Array &&
  u.target.length === 8 &&
  isNat(u.start) &&
  isNat(u.end) &&
  u.start <= u.end &&
  u.end <= NONCE_SPACE &&
  isNat(u.batch) &&
  u.batch > 0

/** isMinerWorkerData guards a worker's `workerData`. */
export const isMinerWorkerData = (u: unknown): u is MinerWorkerData =>
  isRecord(u) &&
  u.stats instanceof SharedArrayBuffer &&
  isNat(u.slot) &&
  (u.slot + 1) * 8 <= u.stats.byteLength

/** isMinerWorkerReply guards the pool's inbox. */
export const isMinerWorkerReply = (u: unknown): u is MinerWorkerReply =>
  isRecord(u) &&
  (u._tag === "Ready" ||
    (u._tag === "Found" && isNat(u.id) && isNat(u.nonce)) ||
    (u._tag === "Exhausted" && isNat(u.id)))

// ---------------------------------------------------------------------------------------------------
// Searching on the calling fiber

/**
 * inlineExpectedHashes: a target met within this many hashes on average (regtest's 2) is searched on
 * the calling fiber with node:crypto, a few microseconds, where a worker round trip would cost more
 * than the search. It keeps `generatetoaddress 101` on regtest as fast as it was.
 */
export const inlineExpectedHashes = 256

/** cryptoSlice is how many node:crypto hashes run between yields (~1 ms). */
const cryptoSlice = 1_024
/** kernelSlice is how many nonces the inline kernel scans between yields (~1.5 ms at 6 M/s). */
const kernelSlice = 8_192

/** expectedHashes is 2^256 / (target + 1), Core's block proof: the mean number of hashes to meet it. */
export const expectedHashes = (target: bigint): number =>
  target < 0n ? Number.POSITIVE_INFINITY : Number((1n << 256n) / (target + 1n))

/** HashCounter is the inline searches' share of `MiningStats.hashes`. */
interface HashCounter {
  hashes: number
}

/** searchCrypto hashes the whole header per nonce with node:crypto, yielding every ~1 ms. */
const searchCrypto = (header: BlockHeader, target: bigint, counter: HashCounter) =>
  Effect.gen(function* () {
    const bytes = encodeHeader(header)
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    let nonce = header.nonce
    while (nonce < NONCE_SPACE) {
      const end = Math.min(NONCE_SPACE, nonce + cryptoSlice)
      for (; nonce < end; nonce++) {
        view.setUint32(76, nonce, true)
        counter.hashes++
        if (hashToBigInt(sha256d(bytes)) <= target) return Option.some(nonce)
      }
      yield* Effect.yieldNow()
    }
    return Option.none()
  })

/** searchKernel scans with this thread's WebAssembly kernel, yielding every ~1.5 ms. */
const searchKernel = (header: BlockHeader, target: bigint, counter: HashCounter) =>
  Effect.gen(function* () {
    const kernel = loadHeaderKernel()
    const prepared = kernel.prepare(encodeHeader(header))
    const words = targetWords(target)
    for (let from = header.nonce; from < NONCE_SPACE; from += kernelSlice) {
      const count = Math.min(kernelSlice, NONCE_SPACE - from)
      const nonce = kernel.scan(prepared, words, from, count)
      counter.hashes += nonce < 0 ? count : nonce - from + 1
      if (nonce >= 0) return Option.some(nonce)
      yield* Effect.yieldNow()
    }
    return Option.none()
  })

const searchOnFiber = (header: BlockHeader, target: bigint, counter: HashCounter) =>
  expectedHashes(target) <= inlineExpectedHashes
    ? searchCrypto(header, target, counter)
    : searchKernel(header, target, counter)

/**
 * makeInline searches on the calling fiber: node:crypto for trivial targets, else the WebAssembly
 * kernel in slices of 8,192 nonces with a yield between them, so other fibers run every ~1.5 ms (the
 * first such search generates and compiles the kernel on this thread, ~50 ms).
 */
export const makeInline = (): MiningKernelService => {
  const counter: HashCounter = { hashes: 0 }
  return {
    search: (header, target) => Effect.suspend(() => searchOnFiber(header, target, counter)),
    stats: Effect.sync(() => ({ workers: 0, hashes: counter.hashes })),
  }
}

/** layerInline provides a MiningKernel that searches on the calling fiber (no threads). */
export const layerInline: Layer.Layer<MiningKernel> = Layer.sync(MiningKernel, makeInline)

// ---------------------------------------------------------------------------------------------------
// The worker pool

/** PoolOptions configures `makePool` and `layerPool`. */
export interface PoolOptions {
  /** worker threads; default `os.availableParallelism()`; 0 searches on the calling fiber */
  readonly workers?: number
  /** nonces per batch: how often a worker checks for cancellation (default 65,536, ~10 ms) */
  readonly batch?: number
}

/** defaultBatch is the nonces a worker hashes between looks at its job's cancel flag (~10 ms). */
const defaultBatch = 65_536

interface Slot {
  readonly index: number
  worker: Worker | undefined
  ready: boolean
  /** consecutive threads in this slot that died before `Ready` */
  failures: number
}

/** Job is the search the pool is running: its request, the workers yet to answer, and its caller. */
interface Job {
  readonly request: MinerWorkerJob
  readonly control: Int32Array
  readonly pending: Set<Slot>
  settled: boolean
  readonly resume: (result: Effect.Effect<Option.Option<number>>) => void
}

/**
 * makePool builds a MiningKernel on `workers` threads in the current scope. Threads start on the first
 * search that needs them (a node that never mines a real target never starts them) and each compiles
 * the kernel once. A search posts one job to every thread; they claim 64 Ki-nonce batches from a shared
 * counter, and the first `Found` cancels the rest through shared memory, so no thread hashes a stale
 * template for more than one batch. Trivial targets are searched on the calling fiber (see
 * `inlineExpectedHashes`); if no thread can start, every search runs on the calling fiber, with a warning.
 * A thread that dies is replaced (with backoff if replacements keep dying); the batch it was hashing
 * is skipped. Closing the scope cancels the running job and terminates the threads.
 */
export const makePool = (
  options: PoolOptions & { readonly workers: number },
): Effect.Effect<MiningKernelService, never, Scope.Scope> =>
  Effect.gen(function* () {
    const scope = yield* Effect.scope
    const batch = Math.max(4, Math.floor(options.batch ?? defaultBatch))
    const counters = new SharedArrayBuffer(8 * options.workers)
    const stats = new BigInt64Array(counters)
    const inline: HashCounter = { hashes: 0 }
    const slots: ReadonlyArray<Slot> = Array.from({ length: options.workers }, (_, index) => ({
      index,
      worker: undefined,
      ready: false,
      failures: 0,
    }))
    const deaths = yield* Queue.unbounded<{ readonly slot: Slot; readonly reason: string }>()
    const lock = yield* Effect.makeSemaphore(1)
    let active: Job | undefined
    let nextJobId = 0
    let closed = false
    let started: Deferred.Deferred<boolean> | undefined

    const live = (): ReadonlyArray<Slot> => slots.filter((s) => s.worker !== undefined && s.ready)

    const settle = (job: Job, result: Option.Option<number>): void => {
      if (job.settled) return
      job.settled = true
      Atomics.store(job.control, controlCancelled, 1)
      if (active === job) active = undefined
      for (const s of slots) s.worker?.unref()
      job.resume(Effect.succeed(result))
    }

    /** claimedAll: every batch of the job has been handed out (so a thread that answers nothing lost one). */
    const claimedAll = (job: Job): boolean =>
      job.request.start + Atomics.load(job.control, controlNextBatch) * batch >= job.request.end

    const maybeExhausted = (job: Job): void => {
      if (job.pending.size === 0 && claimedAll(job)) settle(job, Option.none())
    }

    const post = (job: Job, slot: Slot): void => {
      if (slot.worker === undefined || job.settled) return
      job.pending.add(slot)
      slot.worker.ref()
      slot.worker.postMessage(job.request)
    }

    const onReply = (slot: Slot, worker: Worker, reply: MinerWorkerReply): void => {
      const job = active
      switch (reply._tag) {
        case "Ready":
          if (slot.worker !== worker) return
          slot.ready = true
          slot.failures = 0
          worker.unref()
          if (job !== undefined && !claimedAll(job)) post(job, slot)
          return
        case "Found":
          if (job?.request.id === reply.id) settle(job, Option.some(reply.nonce))
          return
        case "Exhausted":
          if (job?.request.id === reply.id) {
            job.pending.delete(slot)
            maybeExhausted(job)
          }
          return
      }
    }

    const onDeath = (slot: Slot, worker: Worker, reason: string): void => {
      if (slot.worker !== worker) return
      if (!slot.ready) slot.failures++
      slot.worker = undefined
      slot.ready = false
      if (active?.pending.delete(slot)) maybeExhausted(active)
      if (!closed) Queue.unsafeOffer(deaths, { slot, reason })
    }

    const spawn = (slot: Slot): Worker => {
      const worker = startWorkerThread(import.meta.url, "minerWorker", { stats: counters, slot: slot.index })
      slot.worker = worker
      slot.ready = false
      worker.on("message", (message: unknown) => {
        if (isMinerWorkerReply(message)) return onReply(slot, worker, message)
        onDeath(slot, worker, "sent an unknown message")
        void worker.terminate()
      })
      worker.on("error", (error) => onDeath(slot, worker, error.message))
      worker.on("exit", (code) => onDeath(slot, worker, `exited with code ${code}`))
      return worker
    }

    /** whenSettled waits until a fresh thread is ready or gone. */
    const whenSettled = (slot: Slot, worker: Worker): Effect.Effect<void> =>
      Effect.async<void>((resume) => {
        if (slot.worker !== worker || slot.ready) return resume(Effect.void)
        const done = (): void => resume(Effect.void)
        const onMessage = (m: unknown): void => {
          if (isMinerWorkerReply(m) && m._tag === "Ready") done()
        }
        worker.on("message", onMessage)
        worker.on("exit", done)
        return Effect.sync(() => {
          worker.off("message", onMessage)
          worker.off("exit", done)
        })
      })

    /** startThreads spawns every slot and answers whether at least one thread came up. */
    const startThreads = Effect.gen(function* () {
      const spawned = Either.try(() => slots.map((slot) => [slot, spawn(slot)] as const))
      if (Either.isLeft(spawned)) {
        yield* Effect.logWarning(
          `mining workers cannot start (${String(spawned.left)}); mining on the main thread`,
        )
        return false
      }
      yield* Effect.forEach(spawned.right, ([slot, worker]) => whenSettled(slot, worker), {
        concurrency: "unbounded",
        discard: true,
      })
      if (live().length > 0) return true
      yield* Effect.logWarning("no mining worker started; mining on the main thread")
      closed = true
      for (const s of slots) void s.worker?.terminate()
      return false
    })

    /** ensureStarted starts the threads once, in the pool's scope, and answers whether they run. */
    const ensureStarted: Effect.Effect<boolean> = Effect.suspend(() => {
      if (started === undefined) {
        const deferred = Deferred.unsafeMake<boolean>(FiberId.none)
        started = deferred
        return Effect.zipRight(
          Effect.forkIn(
            Effect.flatMap(startThreads, (ok) => Deferred.succeed(deferred, ok)),
            scope,
          ),
          Deferred.await(deferred),
        )
      }
      return Deferred.await(started)
    })

    const searchThreads = (header: BlockHeader, target: bigint): Effect.Effect<Option.Option<number>> =>
      Effect.async<Option.Option<number>>((resume) => {
        const shared = new SharedArrayBuffer(8)
        const control = new Int32Array(shared)
        const job: Job = {
          request: {
            id: nextJobId++,
            control: shared,
            header: encodeHeader(header),
            target: targetWords(target),
            start: header.nonce,
            end: NONCE_SPACE,
            batch,
          },
          control,
          pending: new Set(),
          settled: false,
          resume,
        }
        active = job
        for (const slot of live()) post(job, slot)
        return Effect.sync(() => {
          job.settled = true
          Atomics.store(control, controlCancelled, 1)
          if (active === job) active = undefined
          for (const s of slots) s.worker?.unref()
        })
      })

    const search = (header: BlockHeader, target: bigint): Effect.Effect<Option.Option<number>> =>
      Effect.suspend(() => {
        if (expectedHashes(target) <= inlineExpectedHashes) return searchCrypto(header, target, inline)
        return Effect.flatMap(ensureStarted, (threads) =>
          threads && !closed
            ? lock.withPermits(1)(searchThreads(header, target))
            : searchKernel(header, target, inline),
        )
      })

    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        closed = true
        if (active !== undefined) settle(active, Option.none())
        const running = slots.flatMap((s) => (s.worker === undefined ? [] : [s.worker]))
        for (const s of slots) s.worker = undefined
        yield* Effect.forEach(running, (w) => Effect.promise(() => w.terminate()), {
          concurrency: "unbounded",
          discard: true,
        })
      }),
    )

    // The supervisor: replaces dead threads, backing off while replacements die before `Ready`.
    yield* Effect.forkScoped(
      Effect.forever(
        Effect.gen(function* () {
          const { slot, reason } = yield* Queue.take(deaths)
          yield* Effect.logWarning(`mining worker ${slot.index} died (${reason}); replacing it`)
          if (slot.failures > 0) yield* Effect.sleep(restartDelay(slot.failures))
          if (!closed && slot.worker === undefined) {
            const spawned = Either.try(() => spawn(slot))
            if (Either.isLeft(spawned)) {
              slot.failures++
              Queue.unsafeOffer(deaths, { slot, reason: String(spawned.left) })
            }
          }
        }),
      ),
    )

    const service: MiningKernelService = {
      search,
      stats: Effect.sync(() => {
        let hashes = inline.hashes
        for (let i = 0; i < stats.length; i++) hashes += Number(Atomics.load(stats, i))
        return { workers: live().length, hashes }
      }),
    }
    return service
  })

/**
 * layerPool provides a MiningKernel on `workers` threads (default one per core); `workers: 0` searches
 * on the calling fiber (`layerInline`).
 */
export const layerPool = (options: PoolOptions = {}): Layer.Layer<MiningKernel> => {
  const workers = options.workers ?? os.availableParallelism()
  if (workers <= 0) return layerInline
  return Layer.scoped(MiningKernel, makePool({ ...options, workers }))
}
