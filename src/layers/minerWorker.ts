/**
 * minerWorker is the entry of one MiningKernel pool thread (`makePool` starts it; never import it). It
 * compiles the header kernel once, warms it up, answers `Ready`, then runs each job to its end:
 * it claims batches of nonces from the job's shared counter until one meets the target (`Found`), none
 * is left (`Exhausted`), or the job's cancel flag is set (no answer). The thread is busy for the whole
 * job, so cancellation goes through shared memory, not messages. A job it cannot read is a broken
 * invariant: it throws, the thread dies, and the pool replaces it.
 */
import { readlinkSync } from "node:fs"
import { setPriority } from "node:os"
import { parentPort, workerData } from "node:worker_threads"
import { loadHeaderKernel, targetWords } from "./kernel/headerKernel.js"
import {
  controlCancelled,
  controlNextBatch,
  isMinerWorkerData,
  isMinerWorkerJob,
  type MinerWorkerJob,
  type MinerWorkerReply,
} from "./MiningKernel.js"

const port = parentPort
if (port === null) throw new Error("minerWorker is a worker thread entry; MiningKernel.makePool starts it")
const data: unknown = workerData
if (!isMinerWorkerData(data)) throw new Error("minerWorker: malformed workerData")
const stats = new BigInt64Array(data.stats)
const slot = data.slot

/**
 * lowerPriority runs this thread at nice 19, as Bitcoin Core's miner threads ran at the lowest thread
 * priority: when the main thread (RPC, peers, the Chain actor) wakes up it gets a core at once instead
 * of waiting for a time slice (RPC p99 while mining drops from ~5 ms to ~1-2 ms on 2 cores), and an
 * idle main thread leaves the miners the whole machine. Linux only (the thread's id comes from
 * /proc/thread-self); elsewhere the thread keeps its priority.
 */
const lowerPriority = (): void => {
  try {
    const tid = Number(readlinkSync("/proc/thread-self").split("/").pop())
    if (Number.isInteger(tid) && tid > 0) setPriority(tid, 19)
  } catch {
    // not Linux, or not allowed: mining still works, the main thread just shares the cores evenly
  }
}

lowerPriority()
const kernel = loadHeaderKernel()

// Warm-up: V8 compiles WebAssembly with its baseline compiler first and optimizes hot functions
// later; a few scans with an impossible target get `scan` optimized before the first real job.
const warm = kernel.prepare(new Uint8Array(80))
for (let i = 0; i < 4; i++) kernel.scan(warm, targetWords(0n), i * 16_384, 16_384)

const reply = (message: MinerWorkerReply): void => port.postMessage(message)

/** run hashes batches of the job until it is found, exhausted or cancelled. */
const run = (job: MinerWorkerJob): void => {
  const control = new Int32Array(job.control)
  if (Atomics.load(control, controlCancelled) !== 0) return
  const header = kernel.prepare(job.header)
  while (Atomics.load(control, controlCancelled) === 0) {
    const from = job.start + Atomics.add(control, controlNextBatch, 1) * job.batch
    if (from >= job.end) {
      reply({ _tag: "Exhausted", id: job.id })
      return
    }
    const count = Math.min(job.batch, job.end - from)
    const nonce = kernel.scan(header, job.target, from, count)
    Atomics.add(stats, slot, BigInt(nonce < 0 ? count : nonce - from + 1))
    if (nonce >= 0) {
      reply({ _tag: "Found", id: job.id, nonce })
      return
    }
  }
}

port.on("message", (message: unknown) => {
  if (!isMinerWorkerJob(message)) throw new Error("minerWorker: malformed job")
  run(message)
})

reply({ _tag: "Ready" })
