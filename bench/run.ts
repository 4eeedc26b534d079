/**
 * npm run bench [-- --json]: fibercoin's benchmarks. Each result is a ratio against a baseline
 * measured in the same run on the same machine, so the numbers mean something on a noisy box:
 *
 * - verify-<backend>: raw BIP340 verifications per second on one core; baseline = the fastest backend.
 * - block-validation: the node's validation path for a 2,000-transaction block with a cold cache
 *   (decode, every context-free and contextual rule, connect against the UTXO view, every signature
 *   on the SigVerifier worker pool, one worker per core), in inputs per second; baseline = the fastest
 *   backend's raw single-core rate × cores, measured on the very same signatures.
 * - block-validation-1core: the same with signatures verified inline on one core; baseline = the raw
 *   single-core rate.
 * - block-validation-cached: the same block when its transactions were verified before (the mempool's
 *   case); baseline = block-validation's value, so the ratio is the speed-up (aim ≥ 10).
 * - import-rss: peak resident memory of a node process (bench/importer.mjs, the built code) while its
 *   Chain actor imports 10,000 blocks into LMDB; baseline = its resident memory after the first 1,000
 *   blocks, so a ratio near 1 means memory stays flat as the chain grows.
 * - import-heap: the same process's V8 heap in use after a full GC at 10,000 blocks; baseline = the
 *   same after 1,000 blocks (what grows is the in-memory header tree, ~2 KB a block, and the bounded
 *   verification caches).
 * - ibd-loopback / ibd-loopback-1peer: a fresh node syncing a 1,200-block chain of real signed
 *   transactions over TCP on 127.0.0.1 from three / one peer processes, in blocks/s; baseline = the same
 *   node importing the same blocks locally (`--reindex`-style), in the same run (see bench/ibd.ts).
 * - mining: the miner's header hashes/s on one worker thread per core; baseline = OpenSSL's SHA-256
 *   limit on the same cores (`openssl speed -evp sha256 -bytes 64`, two compressions per header hash).
 * - mining-rpc-p99: p99 latency of a trivial HTTP call on the main thread while the workers mine;
 *   baseline = the same with the workers idle (see bench/mining.ts).
 * - snapshot-load: UTXO entries/s a fresh node loads from a 200,000-coin snapshot file into LMDB (every
 *   chunk hashed, decoded, written, folded into the MuHash); baseline = raw LMDB puts of the same
 *   entries, 10,000 a transaction, in the same run (see bench/snapshot.ts).
 */
import { spawnSync } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import * as os from "node:os"
import { join } from "node:path"
import { Effect, Either, Layer } from "effect"
import { validateWithVerifier } from "../src/actors/Chain.js"
import { checkAndConnect, decodeBlockWithTxids } from "../src/consensus/checkBlock.js"
import { regtest } from "../src/consensus/params.js"
import type { SignatureBackend } from "../src/consensus/signature.js"
import { layerDefault, loadNativeBackend, nobleBackend, wasmBackend } from "../src/layers/Signatures.js"
import * as SigVerifier from "../src/layers/SigVerifier.js"
import { encodeBlock } from "../src/schema/block.js"
import { encodeBlockFile } from "../src/schema/blockFile.js"
import { pay, TestChain, testKey } from "../test/support/chain.js"
import { buildFixture } from "./fixtures.js"
import { ibdBench } from "./ibd.js"
import { miningBench } from "./mining.js"
import { snapshotBench } from "./snapshot.js"

interface Result {
  readonly name: string
  readonly value: number
  readonly unit: string
  readonly baseline: number
  readonly ratio: number
}

const json = process.argv.includes("--json")
const TXS = 2_000
const RUNS = 7
const IMPORT_BLOCKS = 10_000
const cores = os.availableParallelism()

/** median of `runs` timings (ms) of `f`, after one warm-up run. */
const timeMedian = <E, R>(runs: number, f: Effect.Effect<void, E, R>) =>
  Effect.gen(function* () {
    yield* f
    const times: Array<number> = []
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now()
      yield* f
      times.push(performance.now() - t0)
    }
    times.sort((a, b) => a - b)
    return times[Math.floor(times.length / 2)]!
  })

const result = (name: string, value: number, unit: string, baseline: number): Result => ({
  name,
  value,
  unit,
  baseline,
  ratio: value / baseline,
})

/**
 * importRss grows a 10,000-block chain (one spend per block), writes it to a file, and has
 * bench/importer.ts import it into LMDB in a process of its own, reporting its resident memory.
 */
const importRss = (backend: SignatureBackend) =>
  Effect.gen(function* () {
    const miner = testKey(backend, 1)
    const fixture = new TestChain(regtest, backend, miner)
    for (let h = 1; h <= IMPORT_BLOCKS; h++) {
      // any mature coin worth splitting (coinbases shrink to nothing after ~30 regtest halvings)
      const coin = fixture.matureCoins().find((s) => s.coin.value >= 4000n)
      const half = (coin?.coin.value ?? 0n) / 2n
      const txs =
        coin === undefined ? [] : [fixture.spend([coin], [pay(miner, half), pay(miner, half - 1000n)])]
      // one second apart: the node checks "too new" against the real clock
      fixture.connect(fixture.candidate(txs, { time: fixture.times[fixture.times.length - 1]! + 1 }))
    }
    const dir = mkdtempSync(join(os.tmpdir(), "fibercoin-bench-"))
    const blocksFile = join(dir, "blocks.bin")
    writeFileSync(blocksFile, encodeBlockFile(regtest.magic, fixture.blocks.slice(1).map(encodeBlock)))
    const run = spawnSync(
      process.execPath,
      ["--expose-gc", "bench/importer.mjs", blocksFile, join(dir, "node")],
      {
        encoding: "utf8",
        maxBuffer: 16 * 1024 * 1024,
      },
    )
    rmSync(dir, { recursive: true, force: true })
    if (run.status !== 0) return yield* Effect.die(new Error(`importer failed: ${run.stderr}`))
    const report = JSON.parse(run.stdout.trim().split("\n").pop()!) as {
      seconds: number
      rss: Array<number>
      heap: Array<number>
    }
    return {
      seconds: report.seconds,
      rssAfterFirst: report.rss[9]!,
      rssPeak: Math.max(...report.rss),
      heapAfterFirst: report.heap[0]!,
      heapLast: report.heap[report.heap.length - 1]!,
    }
  })

const main = Effect.gen(function* () {
  const native = loadNativeBackend()
  const backends: Array<SignatureBackend> = [nobleBackend, wasmBackend]
  if (Either.isRight(native)) backends.push(native.right)
  else console.error(`native libsecp256k1 unavailable (${native.left.reason}); the baseline is the WASM rate`)
  const signer = backends[backends.length - 1]!
  const fixture = buildFixture(signer, TXS)

  const decoded = decodeBlockWithTxids(fixture.bytes)
  if (Either.isLeft(decoded)) return yield* Effect.die(decoded.left)
  const probe = checkAndConnect(decoded.right.block, fixture.ctx, fixture.view, decoded.right.txids)
  if (Either.isLeft(probe)) return yield* Effect.die(new Error(`bench block invalid: ${probe.left.message}`))
  const checks = probe.right.signatureChecks
  if (checks.length !== TXS)
    return yield* Effect.die(new Error(`expected ${TXS} checks, got ${checks.length}`))

  // Raw single-core rates on the block's own signatures.
  const results: Array<Result> = []
  const rates: Array<{ backend: SignatureBackend; perSecond: number }> = []
  for (const b of backends) {
    const sample = b.name === "noble" ? checks.slice(0, 200) : checks
    const ms = yield* timeMedian(
      b.name === "noble" ? 3 : RUNS,
      Effect.sync(() => {
        for (const c of sample)
          if (!b.verify(c.msg, c.sig, c.pubkey)) throw new Error(`${b.name} rejected a signature`)
      }),
    )
    rates.push({ backend: b, perSecond: (sample.length / ms) * 1000 })
  }
  const fastest = rates.reduce((a, b) => (b.perSecond > a.perSecond ? b : a))
  for (const r of rates)
    results.push(result(`verify-${r.backend.name}`, r.perSecond, "verifies/s", fastest.perSecond))

  /** validate runs the node's path: decode, then validateWithVerifier (the Chain actor's own validation). */
  const validate = (verifier: SigVerifier.SigVerifierService) =>
    Effect.gen(function* () {
      const d = decodeBlockWithTxids(fixture.bytes)
      if (Either.isLeft(d)) return yield* Effect.die(d.left)
      const v = yield* validateWithVerifier(verifier, d.right.block, fixture.ctx, fixture.view, d.right.txids)
      if (Either.isLeft(v)) return yield* Effect.die(new Error(v.left.message))
    })

  const perSecond = (ms: number) => (TXS / ms) * 1000
  // Cold: caches of size 0, so nothing verified is remembered between runs.
  const pool = (yield* SigVerifier.makePool({ workers: cores, cacheEntries: 0 })).service
  const cold = perSecond(yield* timeMedian(RUNS, validate(pool)))
  results.push(result("block-validation", cold, "inputs/s", fastest.perSecond * cores))

  const inline = yield* SigVerifier.SigVerifier.pipe(
    Effect.provide(SigVerifier.layerInline({ cacheEntries: 0 }).pipe(Layer.provide(layerDefault))),
  )
  const oneCore = perSecond(yield* timeMedian(RUNS, validate(inline)))
  results.push(result("block-validation-1core", oneCore, "inputs/s", fastest.perSecond))

  // Cached: the block's transactions were verified before (as on mempool acceptance).
  const warm = (yield* SigVerifier.makePool({ workers: cores })).service
  warm.markTxVerified(decoded.right.txids.slice(1))
  const cached = perSecond(yield* timeMedian(RUNS, validate(warm)))
  results.push(result("block-validation-cached", cached, "inputs/s", cold))

  const rss = yield* importRss(signer)
  results.push(result("import-rss", rss.rssPeak, "MB", rss.rssAfterFirst))
  results.push(result("import-heap", rss.heapLast, "MB", rss.heapAfterFirst))

  const ibd = yield* ibdBench(signer)
  results.push(result("ibd-loopback", ibd.threePeersPerSecond, "blocks/s", ibd.localPerSecond))
  results.push(result("ibd-loopback-1peer", ibd.onePeerPerSecond, "blocks/s", ibd.localPerSecond))

  const mining = yield* miningBench()
  results.push(result("mining", mining.hashesPerSecond, "hashes/s", mining.baseline))
  results.push(result("mining-rpc-p99", mining.rpcP99Ms, "ms", mining.rpcIdleP99Ms))

  const snapshot = yield* snapshotBench()
  results.push(result("snapshot-load", snapshot.loadPerSecond, "entries/s", snapshot.rawPutPerSecond))

  if (json) {
    for (const r of results) console.log(JSON.stringify(r))
  } else {
    console.log(
      `fibercoin benchmarks (${cores} cores; median of ${RUNS} runs; block of ${TXS} txs, ${fixture.bytes.length} bytes; ` +
        `import of ${IMPORT_BLOCKS} blocks in ${rss.seconds.toFixed(1)} s)`,
    )
    console.table(
      results.map((r) => ({
        name: r.name,
        value: Math.round(r.value),
        unit: r.unit,
        baseline: Math.round(r.baseline),
        ratio: Number(r.ratio.toFixed(3)),
      })),
    )
  }
})

Effect.runPromise(Effect.scoped(main)).catch((e) => {
  console.error(e)
  process.exitCode = 1
})
