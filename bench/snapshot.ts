/**
 * The snapshot-load benchmark (bench/run.ts adds its row):
 *
 * - snapshot-load: UTXO entries per second a fresh node loads from a snapshot file into LMDB
 *   (loadTxOutSet: read each chunk, check its sha256, decode, write it in one transaction, fold it into
 *   the MuHash, then check the MuHash and commit the tip); baseline = the raw LMDB put rate of the same
 *   entries (the same keys and coin bytes, one `transactionSync` of putSync per 10,000) in the same run.
 *   The snapshot's base is the genesis block, so no chain needs mining first.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import * as os from "node:os"
import { join } from "node:path"
import { Effect, Layer } from "effect"
import { open } from "lmdb"
import * as ChainActor from "../src/actors/Chain.js"
import { sha256 } from "../src/consensus/hash.js"
import { MUHASH_EMPTY, muhashAdd, muhashFinalize } from "../src/consensus/muhash.js"
import { regtest } from "../src/consensus/params.js"
import {
  compareOutpoints,
  encodeChunk,
  entryElement,
  makeSnapshotHeader,
  SNAPSHOT_CHUNK_ENTRIES,
  type SnapshotEntry,
} from "../src/consensus/snapshot.js"
import { outpointKey } from "../src/consensus/utxo.js"
import { layerLmdb } from "../src/layers/ChainStoreLmdb.js"
import { layerDefault } from "../src/layers/Signatures.js"
import { layerInline } from "../src/layers/SigVerifier.js"
import { loadTxOutSet } from "../src/node/snapshot.js"
import { encodeHeader } from "../src/schema/block.js"
import { encodeCoin } from "../src/schema/coin.js"
import { toHex } from "../src/schema/hex.js"
import type { Amount, Height, PublicKey } from "../src/schema/primitives.js"

/** SnapshotBench is what `snapshotBench` measured. */
export interface SnapshotBench {
  readonly entries: number
  readonly loadPerSecond: number
  readonly rawPutPerSecond: number
}

/** entriesOf makes `n` distinct coins, sorted in file order (deterministic: txids are hashes of counters). */
const entriesOf = (n: number): ReadonlyArray<SnapshotEntry> => {
  const out: Array<SnapshotEntry> = []
  for (let i = 0; i < n; i++) {
    const txid = sha256(Uint8Array.of(i & 0xff, (i >> 8) & 0xff, (i >> 16) & 0xff, (i >> 24) & 0xff))
    out.push({
      txid,
      index: i % 3,
      coin: {
        value: BigInt(1000 + i) as Amount,
        pubkey: sha256(txid) as PublicKey,
        height: 0 as Height,
        coinbase: false,
      },
    })
  }
  return out.sort(compareOutpoints)
}

/** snapshotBench writes a genesis-based snapshot of `n` coins, loads it into LMDB, and puts the same coins raw. */
export const snapshotBench = (n = 200_000) =>
  Effect.gen(function* () {
    const entries = entriesOf(n)
    const chunks: Array<Uint8Array> = []
    for (let i = 0; i < n; i += SNAPSHOT_CHUNK_ENTRIES)
      chunks.push(encodeChunk(entries.slice(i, i + SNAPSHOT_CHUNK_ENTRIES)))
    const { header, bytes } = makeSnapshotHeader({
      networkMagic: regtest.magic,
      baseHash: regtest.genesisHash,
      baseHeight: 0,
      coinCount: n,
      chunkSize: SNAPSHOT_CHUNK_ENTRIES,
      txoutsetHash: muhashFinalize(muhashAdd(MUHASH_EMPTY, entries.map(entryElement))),
      chunkHashes: chunks.map(sha256),
    })
    const dir = mkdtempSync(join(os.tmpdir(), "fibercoin-bench-snapshot-"))
    return yield* Effect.gen(function* () {
      const file = join(dir, "utxo.snap")
      writeFileSync(file, Buffer.concat([bytes, encodeHeader(regtest.genesis.header), ...chunks]))

      const node = ChainActor.layer(ChainActor.defaultChainConfig(regtest)).pipe(
        Layer.provide(
          Layer.merge(layerLmdb(join(dir, "node")), layerInline().pipe(Layer.provide(layerDefault))),
        ),
      )
      const t0 = performance.now()
      yield* loadTxOutSet(file, regtest, toHex(header.snapshotId)).pipe(Effect.provide(node), Effect.orDie)
      const loadSeconds = (performance.now() - t0) / 1000

      const env = open<Uint8Array, string>({ path: join(dir, "raw"), encoding: "binary" })
      const coins = env.openDB<Uint8Array, string>({ name: "coins", encoding: "binary" })
      const t1 = performance.now()
      for (let i = 0; i < n; i += SNAPSHOT_CHUNK_ENTRIES) {
        const slice = entries.slice(i, i + SNAPSHOT_CHUNK_ENTRIES)
        env.transactionSync(() => {
          for (const e of slice) coins.putSync(outpointKey(e.txid, e.index), encodeCoin(e.coin))
        })
      }
      const rawSeconds = (performance.now() - t1) / 1000
      yield* Effect.promise(() => env.close())
      return {
        entries: n,
        loadPerSecond: n / loadSeconds,
        rawPutPerSecond: n / rawSeconds,
      } satisfies SnapshotBench
    }).pipe(Effect.ensuring(Effect.sync(() => rmSync(dir, { recursive: true, force: true }))))
  })
