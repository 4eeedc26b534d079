import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { Effect, Layer } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import * as ChainActor from "../../src/actors/Chain.js"
import { Chain } from "../../src/actors/Chain.js"
import { regtest } from "../../src/consensus/params.js"
import { ChainStore, type ChainStoreService, makeMemoryStore } from "../../src/layers/ChainStore.js"
import { layerLmdb } from "../../src/layers/ChainStoreLmdb.js"
import { layerDefault, loadDefaultBackend } from "../../src/layers/Signatures.js"
import * as SigVerifier from "../../src/layers/SigVerifier.js"
import { type Block, encodeBlock } from "../../src/schema/block.js"
import { encodeBlockFile } from "../../src/schema/blockFile.js"
import { encodeCoin } from "../../src/schema/coin.js"
import { toHex } from "../../src/schema/hex.js"
import { pay, TestChain, testKey } from "../support/chain.js"

const ROUNDS = 24
const SEED = 20261125
const root = fileURLToPath(new URL("../..", import.meta.url))
const work = mkdtempSync(join(tmpdir(), "fibercoin-crash-"))
afterAll(() => rmSync(work, { recursive: true, force: true }))

/** mulberry32: a small seeded PRNG, so every run kills at the same moments. */
const prng = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

/** The fixture: 400 blocks; from height 101 on, each spends a mature coinbase to two outputs. */
const backend = loadDefaultBackend().backend
const miner = testKey(backend, 1)
const bob = testKey(backend, 2)
const fixture = new TestChain(regtest, backend, miner)
fixture.registerKey(bob)
for (let h = 1; h <= 400; h++) {
  const coin = fixture.matureCoins().find((s) => s.coin.coinbase)
  const half = (coin?.coin.value ?? 0n) / 2n
  const txs = coin === undefined ? [] : [fixture.spend([coin], [pay(bob, half), pay(miner, half - 1000n)])]
  // one second apart: the importer runs on the real clock, and the blocks must not be "too new"
  fixture.connect(fixture.candidate(txs, { time: fixture.times[fixture.times.length - 1]! + 1 }))
}
const blocks: ReadonlyArray<Block> = fixture.blocks.slice(1)
const heightOf = new Map(fixture.hashes.map((h, i) => [toHex(h), i]))
const blocksFile = join(work, "blocks.bin")
writeFileSync(blocksFile, encodeBlockFile(regtest.magic, blocks.map(encodeBlock)))

const verifier = SigVerifier.layerInline().pipe(Layer.provide(layerDefault))
/** chainOn runs a Chain actor on `store` and exposes the store too, for the test to read. */
const chainOn = <E>(store: Layer.Layer<ChainStore, E>) =>
  ChainActor.layer(ChainActor.defaultChainConfig(regtest)).pipe(
    Layer.provideMerge(Layer.merge(store, verifier)),
  )

/** view reads the tip, the UTXO commitment and the full coin set of a node. */
const view = Effect.gen(function* () {
  const chain = yield* Chain
  const store = yield* ChainStore
  const c = yield* chain.utxoCommitment
  const coins: Array<string> = []
  yield* store.forEachCoin((key, coin) => coins.push(`${key}=${toHex(encodeCoin(coin))}`))
  return { tip: toHex(c.hash), height: c.height, commitment: toHex(c.commitment), coins: coins.sort() }
})

/** replayTo replays the fixture from scratch up to `height` on a memory store. */
const replayTo = (height: number) => {
  const store: ChainStoreService = makeMemoryStore()
  return Effect.gen(function* () {
    const chain = yield* Chain
    for (const b of blocks.slice(0, height)) yield* chain.submitBlock(encodeBlock(b))
    return yield* view
  }).pipe(
    Effect.provide(Layer.merge(chainOn(Layer.succeed(ChainStore, store)), Layer.succeed(ChainStore, store))),
  )
}

/**
 * runUntilKilled starts the importer and kills it with SIGKILL `delayMs` (0-3 ms) after it reports
 * reaching `killAt`, so the kill lands at a random point inside the work on the following blocks.
 * Resolves the last height the importer reported before it died.
 */
const runUntilKilled = (dataDir: string, killAt: number, delayMs: number) =>
  new Promise<{ lastReported: number; finished: boolean }>((resolve, reject) => {
    const child: ChildProcess = spawn(process.execPath, ["test/e2e/crashImporter.mjs", dataDir, blocksFile], {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"],
    })
    let out = ""
    let err = ""
    let timer: NodeJS.Timeout | undefined
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString()
      if (timer === undefined && out.includes(`tip ${killAt}\n`))
        timer = setTimeout(() => child.kill("SIGKILL"), delayMs)
    })
    child.stderr!.on("data", (d: Buffer) => {
      err += d.toString()
    })
    child.on("error", reject)
    child.on("exit", (code, signal) => {
      if (timer !== undefined) clearTimeout(timer)
      if (signal !== "SIGKILL" && code !== 0) return reject(new Error(`importer exited ${code}: ${err}`))
      const heights = [...out.matchAll(/^tip (\d+)$/gm)].map((m) => Number(m[1]))
      resolve({
        lastReported: heights.length === 0 ? 0 : heights[heights.length - 1]!,
        finished: out.includes("done\n"),
      })
    })
  })

describe("crash safety: SIGKILL at random moments while importing into LMDB", () => {
  it(`after each of ${ROUNDS} kills the node opens at an imported block whose UTXO set equals a replay`, async () => {
    const random = prng(SEED)
    const outcomes: Array<string> = []
    const replays = new Map<number, Awaited<ReturnType<typeof runReplay>>>()
    const runReplay = (h: number) => Effect.runPromise(replayTo(h))
    for (let round = 0; round < ROUNDS; round++) {
      const dataDir = join(work, `round-${round}`)
      const killAt = 1 + Math.floor(random() * (blocks.length - 5))
      const { lastReported, finished } = await runUntilKilled(dataDir, killAt, Math.floor(random() * 4))
      const after = await Effect.runPromise(view.pipe(Effect.provide(chainOn(layerLmdb(dataDir)))))
      // the tip is a block of the fixture chain, at least as far as the importer said it got
      expect(heightOf.get(after.tip)).toBe(after.height)
      expect(after.height).toBeGreaterThanOrEqual(lastReported)
      let expected = replays.get(after.height)
      if (expected === undefined) {
        expected = await runReplay(after.height)
        replays.set(after.height, expected)
      }
      expect(after).toEqual(expected)
      outcomes.push(finished ? "finished" : `killed@${after.height}`)
    }
    // the kills must land mid-import for the test to mean anything
    expect(outcomes.filter((o) => o.startsWith("killed")).length).toBeGreaterThanOrEqual(20)
    console.log(`crash rounds: ${outcomes.join(" ")}`)
  })
})
