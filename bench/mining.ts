/**
 * The mining benchmark (bench/run.ts adds its rows):
 *
 * - mining: the MiningKernel pool's header hashes per second on one worker per core, searching an
 *   impossible target for a few seconds; baseline = OpenSSL's SHA-256 limit on the same cores, measured
 *   in the same run: `openssl speed -evp sha256 -bytes 64` bytes/s × cores / 64 bytes per compression
 *   / 2 compressions per header hash (with a midstate, a header hash is two compressions).
 * - mining-rpc-p99: the 99th percentile latency of 500 sequential HTTP requests to a server on the main
 *   thread that answers at once, while the pool mines; baseline = the same with the pool idle.
 */
import { spawnSync } from "node:child_process"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as os from "node:os"
import { Duration, Effect, Fiber } from "effect"
import { makePool } from "../src/layers/MiningKernel.js"
import type { BlockHash } from "../src/schema/primitives.js"

/** MiningBench is what `miningBench` measured. */
export interface MiningBench {
  readonly workers: number
  readonly hashesPerSecond: number
  /** header hashes/s OpenSSL's SHA-256 allows on `workers` cores; NaN when openssl is missing */
  readonly baseline: number
  readonly rpcP99Ms: number
  readonly rpcIdleP99Ms: number
}

const HASH_SECONDS = 4
const REQUESTS = 500

/**
 * opensslSha256BytesPerSecond runs `openssl speed -evp sha256 -bytes 64 -seconds 3` (one core) and
 * reads its 64-byte column; undefined, with a message, when openssl is missing or says something else.
 */
const opensslSha256BytesPerSecond = (): number | undefined => {
  const run = spawnSync("openssl", ["speed", "-evp", "sha256", "-bytes", "64", "-seconds", "3"], {
    encoding: "utf8",
  })
  if (run.error !== undefined || run.status !== 0) {
    console.error(
      `mining: openssl unavailable (${run.error?.message ?? run.stderr.trim()}); no baseline, ratio NaN`,
    )
    return undefined
  }
  // "The 'numbers' are in 1000s of bytes per second processed." then "sha256   478641.62k"
  const row = /^sha256\s+([\d.]+)k\s*$/m.exec(run.stdout)
  if (row === null) {
    console.error("mining: cannot read openssl speed's sha256 row; no baseline, ratio NaN")
    return undefined
  }
  return Number(row[1]) * 1000
}

/**
 * p99Ms sends `n` sequential GET requests on one keep-alive connection, after 200 that warm up the HTTP
 * code paths, and answers the 99th percentile.
 */
const p99Ms = (port: number, n: number) =>
  Effect.promise(async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    const once = () =>
      new Promise<void>((resolve, reject) => {
        const req = http.get({ host: "127.0.0.1", port, path: "/", agent }, (res) => {
          res.resume()
          res.on("end", resolve)
        })
        req.on("error", reject)
      })
    for (let i = 0; i < 200; i++) await once()
    const times: Array<number> = []
    for (let i = 0; i < n; i++) {
      const t0 = performance.now()
      await once()
      times.push(performance.now() - t0)
    }
    agent.destroy()
    times.sort((a, b) => a - b)
    return times[Math.min(times.length - 1, Math.ceil(times.length * 0.99) - 1)]!
  })

/** miningBench measures the pool's hash rate, OpenSSL's limit on the same cores, and RPC p99 latency. */
export const miningBench = (): Effect.Effect<MiningBench> =>
  Effect.scoped(
    Effect.gen(function* () {
      const workers = os.availableParallelism()
      const opensslBytes = opensslSha256BytesPerSecond()
      const baseline = opensslBytes === undefined ? Number.NaN : (opensslBytes * workers) / 64 / 2

      const server = http.createServer((_, res) => res.end("{}"))
      yield* Effect.acquireRelease(
        Effect.promise(() => new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))),
        () => Effect.promise(() => new Promise<void>((resolve) => server.close(() => resolve()))),
      )
      const port = (server.address() as AddressInfo).port
      const rpcIdleP99Ms = yield* p99Ms(port, REQUESTS)

      const pool = yield* makePool({ workers })
      const header = {
        version: 1,
        prev: new Uint8Array(32).fill(1) as BlockHash,
        merkleRoot: new Uint8Array(32).fill(2),
        time: 1_800_000_000,
        bits: 0x1d00ffff,
        nonce: 0,
      }
      // target 0: no header hash meets it, so the workers hash until interrupted
      const mining = yield* Effect.fork(pool.search(header, 0n))
      while ((yield* pool.stats).workers < workers || (yield* pool.stats).hashes === 0)
        yield* Effect.sleep(Duration.millis(20))
      yield* Effect.sleep(Duration.millis(500))
      const h0 = (yield* pool.stats).hashes
      const t0 = performance.now()
      yield* Effect.sleep(Duration.seconds(HASH_SECONDS))
      const hashesPerSecond = (((yield* pool.stats).hashes - h0) / (performance.now() - t0)) * 1000
      const rpcP99Ms = yield* p99Ms(port, REQUESTS)
      yield* Fiber.interrupt(mining)
      return { workers, hashesPerSecond, baseline, rpcP99Ms, rpcIdleP99Ms }
    }),
  )
