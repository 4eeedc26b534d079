import * as fs from "node:fs"
import * as path from "node:path"
import { Effect, Layer, Option } from "effect"
import { Chain, type SnapshotState } from "../actors/Chain.js"
import { loadFromPeers, openSnapshotFile, Snapshots } from "../actors/Snapshots.js"
import { backgroundValidation } from "../actors/SnapshotValidator.js"
import { sha256 } from "../consensus/hash.js"
import type { NetworkParams } from "../consensus/params.js"
import {
  compareOutpoints,
  encodeChunk,
  makeSnapshotHeader,
  SNAPSHOT_CHUNK_ENTRIES,
  SnapshotError,
  type SnapshotHeader,
  snapshotCommitted,
} from "../consensus/snapshot.js"
import type { StorageError } from "../layers/ChainStore.js"
import type { SigVerifier } from "../layers/SigVerifier.js"
import { encodeHeader, HEADER_BYTES } from "../schema/block.js"
import { toHex } from "../schema/hex.js"

/** DumpResult is dumptxoutset's answer: bitcoind's fields plus the snapshot id. */
export interface DumpResult {
  readonly coins_written: number
  readonly base_hash: string
  readonly base_height: number
  readonly path: string
  readonly txoutset_hash: string
  readonly snapshot_id: string
}

/** LoadResult is loadtxoutset's answer: bitcoind's fields plus the hash and id that were checked. */
export interface LoadResult {
  readonly coins_loaded: number
  readonly tip_hash: string
  readonly base_height: number
  readonly path: string
  readonly txoutset_hash: string
  readonly snapshot_id: string
}

const ioError = (what: string) => (e: unknown) =>
  new SnapshotError({ reason: "io", detail: `${what}: ${e instanceof Error ? e.message : String(e)}` })

/**
 * dumpTxOutSet writes the UTXO set at the tip to `file` in the snapshot format (src/consensus/snapshot.ts):
 * the Chain hands over the set, tip and headers from one tip; coins are sorted by outpoint and cut into
 * chunks of 10,000 (`options.chunkSize`: fewer, for tests); the file is written to `<file>.tmp`, fsynced and renamed, so a reader never sees a
 * half-written snapshot. Holds the whole set in memory while it writes. Any fiber may call it.
 */
export const dumpTxOutSet = (
  file: string,
  params: NetworkParams,
  options: { readonly chunkSize?: number } = {},
): Effect.Effect<DumpResult, SnapshotError | StorageError, Chain> =>
  Effect.gen(function* () {
    const dump = yield* (yield* Chain).utxoDump
    const coins = [...dump.coins].sort(compareOutpoints)
    const chunkSize = Math.max(
      1,
      Math.min(SNAPSHOT_CHUNK_ENTRIES, options.chunkSize ?? SNAPSHOT_CHUNK_ENTRIES),
    )
    const chunks: Array<Uint8Array> = []
    for (let i = 0; i < coins.length; i += chunkSize) chunks.push(encodeChunk(coins.slice(i, i + chunkSize)))
    const { header, bytes } = makeSnapshotHeader({
      networkMagic: params.magic,
      baseHash: dump.hash,
      baseHeight: dump.height,
      coinCount: coins.length,
      chunkSize,
      txoutsetHash: dump.txoutsetHash,
      chunkHashes: chunks.map(sha256),
    })
    const headers = new Uint8Array(dump.headers.length * HEADER_BYTES)
    dump.headers.forEach((h, i) => {
      headers.set(encodeHeader(h), i * HEADER_BYTES)
    })
    const target = path.resolve(file)
    yield* Effect.tryPromise({
      try: () => writeAtomic(target, [bytes, headers, ...chunks]),
      catch: ioError(`writing ${target}`),
    })
    yield* serveIfRunning(target)
    return {
      coins_written: coins.length,
      base_hash: toHex(dump.hash),
      base_height: dump.height,
      path: target,
      txoutset_hash: toHex(header.txoutsetHash),
      snapshot_id: toHex(header.snapshotId),
    }
  })

/** writeAtomic writes `parts` to `<file>.tmp`, fsyncs, renames it over `file` and fsyncs the directory. */
const writeAtomic = async (file: string, parts: ReadonlyArray<Uint8Array>): Promise<void> => {
  const tmp = `${file}.tmp`
  const handle = await fs.promises.open(tmp, "w")
  try {
    for (const part of parts) await handle.write(part)
    await handle.sync()
  } finally {
    await handle.close()
  }
  await fs.promises.rename(tmp, file)
  const dir = await fs.promises.open(path.dirname(file), "r")
  try {
    await dir.sync()
  } finally {
    await dir.close()
  }
}

/** openSnapshotFile: see src/actors/Snapshots.ts (the serving side reads files the same way). */
export { openSnapshotFile }

/** serveIfRunning hands a snapshot file to the Snapshots service (when the node runs one) for peers. */
const serveIfRunning = (file: string) =>
  Effect.flatMap(Effect.serviceOption(Snapshots), (s) =>
    Option.isNone(s)
      ? Effect.void
      : s.value.serve(file).pipe(
          Effect.catchAll((e) => Effect.logWarning(`snapshot: not serving ${file}: ${e.message}`)),
          Effect.asVoid,
        ),
  )

/**
 * requireCommitted refuses a snapshot whose header matches neither an entry of `params.assumeutxo`
 * nor the snapshot id the operator gave: a snapshot is never trusted on its own (or a peer's) word.
 */
export const requireCommitted = (
  header: SnapshotHeader,
  params: NetworkParams,
  operatorId: string | undefined,
): Effect.Effect<void, SnapshotError> =>
  snapshotCommitted(header, params.assumeutxo, operatorId)
    ? Effect.void
    : Effect.fail(
        new SnapshotError({
          reason: "not-committed",
          detail:
            `snapshot ${toHex(header.snapshotId)} (height ${header.baseHeight}, base ${toHex(header.baseHash)}) is ` +
            `${operatorId === undefined ? "not in" : "neither the snapshot id given nor in"} ${params.name}'s assumeutxo list`,
        }),
      )

/**
 * loadTxOutSet loads a snapshot file into a node still at genesis (loadtxoutset, `--snapshot FILE`):
 * the header must be committed (`requireCommitted`), then the Chain checks the header chain, every
 * chunk and the MuHash and installs the set, or leaves the node at genesis. Any fiber may call it.
 */
export const loadTxOutSet = (
  file: string,
  params: NetworkParams,
  operatorId?: string,
): Effect.Effect<LoadResult & { readonly snapshot: SnapshotState }, SnapshotError | StorageError, Chain> =>
  Effect.scoped(
    Effect.gen(function* () {
      const source = yield* openSnapshotFile(file, params)
      yield* requireCommitted(source.header, params, operatorId)
      const snapshot = yield* (yield* Chain).loadSnapshot(source)
      yield* serveIfRunning(file)
      return {
        coins_loaded: source.header.coinCount,
        tip_hash: toHex(snapshot.baseHash),
        base_height: snapshot.baseHeight,
        path: path.resolve(file),
        txoutset_hash: toHex(source.header.txoutsetHash),
        snapshot_id: toHex(snapshot.snapshotId),
        snapshot,
      }
    }),
  )

/**
 * startFromSnapshot is `--snapshot FILE` at start: a node at genesis loads the file (committed in the
 * params or named by `--snapshot-hash`) and fails to start if it is refused; a node that already has a
 * chain (a restart with the same flag) keeps it and says so.
 */
export const startFromSnapshot = (
  file: string,
  params: NetworkParams,
  operatorId: string | undefined,
): Effect.Effect<void, SnapshotError | StorageError, Chain> =>
  Effect.gen(function* () {
    const tip = yield* (yield* Chain).tip
    if (tip.height > 0) {
      yield* Effect.logInfo(`snapshot: ${file} not loaded, the chain is already at height ${tip.height}`)
      return yield* serveIfRunning(file)
    }
    const r = yield* loadTxOutSet(file, params, operatorId)
    yield* Effect.logInfo(
      `snapshot: started from ${r.snapshot_id} at height ${r.base_height} (${r.coins_loaded} coins)`,
    )
  })

/**
 * snapshotsAtStart runs with the P2P side: it serves `--snapshot FILE` to peers (loaded or not, as
 * long as it is a snapshot of this network), and for `--snapshot-id ID` (node.json `snapshotId`) a
 * background fiber loads that snapshot from peers (`loadFromPeers`) into a node at genesis, logging an
 * error if it cannot (the node goes on syncing from genesis). A node past genesis skips the fetch. It
 * also runs the background validation daemon (`backgroundValidation`): a node on an assumed snapshot
 * validates the history below it.
 */
export const snapshotsAtStart = (
  config: { readonly snapshot?: string; readonly snapshotId?: string },
  params: NetworkParams,
): Layer.Layer<never, never, Chain | Snapshots | SigVerifier> =>
  Layer.scopedDiscard(
    Effect.gen(function* () {
      if (config.snapshot !== undefined) yield* serveIfRunning(config.snapshot)
      yield* Effect.forkScoped(Effect.interruptible(backgroundValidation(params)))
      const id = config.snapshotId
      if (id === undefined) return
      yield* Effect.forkScoped(
        Effect.interruptible(
          Effect.gen(function* () {
            if ((yield* (yield* Chain).tip).height > 0) return
            const s = yield* loadFromPeers(id, params)
            yield* Effect.logInfo(
              `snapshot: started from ${toHex(s.snapshotId)} at height ${s.baseHeight} (from peers)`,
            )
          }).pipe(
            Effect.catchAll((e) =>
              Effect.logError(`snapshot: loading ${id} from peers failed: ${e.message}`),
            ),
          ),
        ),
      )
    }),
  )
