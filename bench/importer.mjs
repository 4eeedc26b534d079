// bench/importer.mjs <blocksFile> <dataDir>: imports length-prefixed blocks with the BUILT node code
// (dist/: Chain actor, LMDB, worker-pool verification with one worker per core) and prints one JSON
// line: { seconds, rss: [MB after every 100 blocks], heap: [MB of V8 heap in use after a full GC,
// after every 1,000 blocks] }. bench/run.ts runs it in a process of its own (node --expose-gc) so the
// memory measured is a node's alone.
import { readFileSync } from "node:fs"
import * as os from "node:os"
import { Effect, Layer } from "effect"
import * as fc from "../dist/index.js"

const [blocksFile, dataDir] = process.argv.slice(2)
const read = fc.decodeBlockFile(fc.networks.regtest.magic, readFileSync(blocksFile))
if (read._tag === "Left") throw new Error(read.left.message)
const blocks = read.right

const layer = fc
  .layerChain(fc.defaultChainConfig(fc.networks.regtest))
  .pipe(
    Layer.provide(Layer.merge(fc.layerLmdb(dataDir), fc.layerPool({ workers: os.availableParallelism() }))),
  )
const mb = (bytes) => bytes / (1024 * 1024)

const program = Effect.gen(function* () {
  const chain = yield* fc.Chain
  const rss = []
  const heap = []
  const t0 = performance.now()
  for (let i = 0; i < blocks.length; i++) {
    yield* chain.submitBlock(blocks[i])
    if (i % 100 === 99) rss.push(mb(process.memoryUsage.rss()))
    if (i % 1000 === 999 && globalThis.gc !== undefined) {
      globalThis.gc()
      heap.push(mb(process.memoryUsage().heapUsed))
    }
  }
  const seconds = (performance.now() - t0) / 1000
  const tip = yield* chain.tip
  if (tip.height !== blocks.length)
    throw new Error(`imported to height ${tip.height}, expected ${blocks.length}`)
  console.log(JSON.stringify({ seconds, rss, heap }))
})

Effect.runPromise(program.pipe(Effect.provide(layer))).catch((e) => {
  console.error(e)
  process.exitCode = 1
})
