// Child process of crash.test.ts: imports blocks into an LMDB data directory with the built node code
// and reports each accepted height on stdout. The parent kills it with SIGKILL at a random moment.
// usage: node test/e2e/crashImporter.mjs <dataDir> <blocksFile>
import { readFileSync } from "node:fs"
import { Effect, Layer } from "effect"
import * as fc from "../../dist/index.js"

const [dataDir, blocksFile] = process.argv.slice(2)
const read = fc.decodeBlockFile(fc.networks.regtest.magic, readFileSync(blocksFile))
if (read._tag === "Left") throw new Error(read.left.message)
const blocks = read.right

const layer = fc
  .layerChain(fc.defaultChainConfig(fc.networks.regtest))
  .pipe(
    Layer.provide(Layer.merge(fc.layerLmdb(dataDir), fc.layerInline().pipe(Layer.provide(fc.layerDefault)))),
  )

const program = Effect.gen(function* () {
  const chain = yield* fc.Chain
  process.stdout.write("open\n")
  for (const bytes of blocks) {
    yield* chain.submitBlock(bytes)
    process.stdout.write(`tip ${(yield* chain.tip).height}\n`)
  }
  process.stdout.write("done\n")
})

Effect.runPromise(program.pipe(Effect.provide(layer))).catch((e) => {
  process.stderr.write(`importer failed: ${e}\n`)
  process.exit(1)
})
