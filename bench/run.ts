/**
 * npm run bench [-- --json]: fibercoin's benchmarks. Each result is a ratio against a raw baseline
 * measured in the same run on the same machine, so the numbers mean something on a noisy box:
 *
 * - verify-<backend>: raw BIP340 verifications per second on one core, baseline = the fastest backend.
 * - block-validation: full contextual validation (decode, context-free and contextual checks,
 *   connect against the UTXO view, every signature) of a 2,000-transaction block with a cold cache,
 *   on one core, in inputs per second; baseline = the fastest backend's raw verify rate on the very
 *   same 2,000 (message, signature, key) triples.
 */
import { Either } from "effect"
import { decodeBlockWithTxids, validateBlock } from "../src/consensus/checkBlock.js"
import type { SignatureBackend, SignatureCheck } from "../src/consensus/signature.js"
import { loadNativeBackend, nobleBackend, wasmBackend } from "../src/layers/Signatures.js"
import { decodeBlock } from "../src/schema/block.js"
import { buildFixture } from "./fixtures.js"

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

/** median of `runs` timings (ms) of `f`, after one warm-up run. */
const timeMedian = (runs: number, f: () => void): number => {
  f()
  const times: Array<number> = []
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now()
    f()
    times.push(performance.now() - t0)
  }
  times.sort((a, b) => a - b)
  return times[Math.floor(times.length / 2)]!
}

const main = () => {
  const native = loadNativeBackend()
  const backends: Array<SignatureBackend> = [nobleBackend, wasmBackend]
  if (Either.isRight(native)) backends.push(native.right)
  else console.error(`native libsecp256k1 unavailable (${native.left.reason}); the baseline is the WASM rate`)
  const signer = backends[backends.length - 1]!
  const fixture = buildFixture(signer, TXS)

  // The checks of the block itself: the same triples the validation below verifies.
  const decoded = decodeBlock(fixture.bytes)
  if (Either.isLeft(decoded)) throw decoded.left
  const probe = validateBlock(decoded.right, fixture.ctx, fixture.view, signer)
  if (Either.isLeft(probe)) throw new Error(`bench block invalid: ${probe.left.message}`)
  const checks: ReadonlyArray<SignatureCheck> = probe.right.signatureChecks
  if (checks.length !== TXS) throw new Error(`expected ${TXS} signature checks, got ${checks.length}`)

  const rates = backends.map((b) => {
    const sample = b.name === "noble" ? checks.slice(0, 200) : checks
    const ms = timeMedian(b.name === "noble" ? 3 : RUNS, () => {
      for (const c of sample)
        if (!b.verify(c.msg, c.sig, c.pubkey)) throw new Error(`${b.name} rejected a valid signature`)
    })
    return { backend: b, perSecond: (sample.length / ms) * 1000 }
  })
  const fastest = rates.reduce((a, b) => (b.perSecond > a.perSecond ? b : a))
  const results: Array<Result> = rates.map(({ backend, perSecond }) => ({
    name: `verify-${backend.name}`,
    value: perSecond,
    unit: "verifies/s",
    baseline: fastest.perSecond,
    ratio: perSecond / fastest.perSecond,
  }))

  const validationMs = timeMedian(RUNS, () => {
    const decoded = decodeBlockWithTxids(fixture.bytes)
    if (Either.isLeft(decoded)) throw decoded.left
    const v = validateBlock(
      decoded.right.block,
      fixture.ctx,
      fixture.view,
      fastest.backend,
      decoded.right.txids,
    )
    if (Either.isLeft(v)) throw new Error(v.left.message)
  })
  const inputsPerSecond = (TXS / validationMs) * 1000
  results.push({
    name: "block-validation",
    value: inputsPerSecond,
    unit: "inputs/s",
    baseline: fastest.perSecond,
    ratio: inputsPerSecond / fastest.perSecond,
  })

  if (json) {
    for (const r of results) console.log(JSON.stringify(r))
  } else {
    console.log(
      `fibercoin benchmarks (one core; median of ${RUNS} runs; block of ${TXS} txs, ${fixture.bytes.length} bytes)`,
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
}

main()
