/**
 * lockHolder is a child process for the ChainStore lock tests: it opens `layerLmdb(<dir>)`, commits a
 * tip at `<height>` with one coin under the key `held:<height>`, prints "locked" and then holds the
 * data directory until it is killed. Run it as `node --import tsx test/layers/lockHolder.ts <dir> <height>`.
 */
import { Effect } from "effect"
import { ChainStore } from "../../src/layers/ChainStore.js"
import { layerLmdb } from "../../src/layers/ChainStoreLmdb.js"
import type { Amount, BlockHash, Height, PublicKey } from "../../src/schema/primitives.js"

const [dir, heightArg] = process.argv.slice(2)
const height = Number(heightArg ?? "1")

const program = Effect.gen(function* () {
  const store = yield* ChainStore
  yield* store.commit({
    tip: {
      hash: new Uint8Array(32).fill(height) as BlockHash,
      height: height as Height,
      utxoCommitment: new Uint8Array([height]),
    },
    delta: {
      spent: [],
      created: [
        [
          `held:${height}`,
          {
            value: 5000n as Amount,
            pubkey: new Uint8Array(32).fill(9) as PublicKey,
            height: height as Height,
            coinbase: true,
          },
        ],
      ],
    },
  })
  yield* Effect.sync(() => process.stdout.write("locked\n"))
  return yield* Effect.never
})

if (dir === undefined) {
  process.stderr.write("usage: lockHolder.ts <dir> <height>\n")
  process.exit(2)
}
Effect.runPromise(program.pipe(Effect.provide(layerLmdb(dir)))).catch((e: unknown) => {
  process.stderr.write(`lockHolder: ${String(e)}\n`)
  process.exit(1)
})
