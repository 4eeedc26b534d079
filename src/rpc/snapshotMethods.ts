import * as fs from "node:fs"
import { Effect, Schema } from "effect"
import { Chain } from "../actors/Chain.js"
import { loadFromPeers } from "../actors/Snapshots.js"
import type { NetworkParams } from "../consensus/params.js"
import type { SnapshotError } from "../consensus/snapshot.js"
import type { StorageError } from "../layers/ChainStore.js"
import { dumpTxOutSet, loadTxOutSet } from "../node/snapshot.js"
import { toHex } from "../schema/hex.js"
import { invalidParameter, method, miscError, type RpcError } from "./Server.js"

const filePath = Schema.NonEmptyString.pipe(Schema.annotations({ message: () => "expected a file path" }))
const snapshotId = Schema.String.pipe(
  Schema.pattern(/^[0-9a-fA-F]{64}$/),
  Schema.annotations({ message: () => "expected a snapshot id: 64 hex characters" }),
)

/** snapshotError: a refused or failed snapshot is -8 when the caller's input is at fault, else -1, with why. */
const snapshotError = (e: SnapshotError | StorageError): RpcError =>
  e._tag === "SnapshotError" && e.reason !== "io" ? invalidParameter(e.message) : miscError(e.message)

/**
 * snapshotMethods are the UTXO snapshot RPCs (issue 9), bitcoind-shaped: `dumptxoutset "path"` writes
 * the set at the tip (refusing a path that exists), `loadtxoutset "path" ["snapshot_id"]` loads one
 * into a node at genesis when it is committed in the params or its id is the one given, and
 * `getsnapshotstatus` tells which snapshot the node started from. They run on the RPC request fiber.
 */
export const snapshotMethods = (params: NetworkParams) => [
  method(
    "dumptxoutset",
    Schema.Tuple(filePath),
    ([file]) =>
      Effect.gen(function* () {
        if (fs.existsSync(file)) return yield* invalidParameter(`${file} already exists`)
        return yield* dumpTxOutSet(file, params).pipe(Effect.mapError(snapshotError))
      }),
    "write the UTXO set at the tip to a snapshot file: {coins_written, base_hash, base_height, path, txoutset_hash, snapshot_id}",
    ["path"],
  ),
  method(
    "loadtxoutset",
    Schema.Tuple(Schema.NullOr(filePath), Schema.optionalElement(snapshotId)),
    ([file, id]) =>
      file === null
        ? id === undefined
          ? Effect.fail(invalidParameter("give a path, or null and the snapshot_id to fetch from peers"))
          : loadFromPeers(id.toLowerCase(), params).pipe(
              Effect.map((s) => ({
                coins_loaded: null,
                tip_hash: toHex(s.baseHash),
                base_height: s.baseHeight,
                path: null,
                snapshot_id: toHex(s.snapshotId),
              })),
              Effect.mapError(snapshotError),
            )
        : loadTxOutSet(file, params, id?.toLowerCase()).pipe(
            Effect.map(({ snapshot: _, ...result }) => result),
            Effect.mapError(snapshotError),
          ),
    "load a UTXO snapshot into a node at genesis, from a file (committed in the params, or with its snapshot_id) or, with path null, from peers by snapshot_id: {coins_loaded, tip_hash, base_height, path, txoutset_hash, snapshot_id}",
    ["path", "snapshot_id"],
  ),
  method(
    "getsnapshotstatus",
    Schema.Tuple(),
    () =>
      Effect.gen(function* () {
        const state = yield* (yield* Chain).snapshot.pipe(Effect.mapError(snapshotError))
        if (state._tag === "None") return null
        const s = state.value
        return {
          snapshot_id: toHex(s.snapshotId),
          base_hash: toHex(s.baseHash),
          base_height: s.baseHeight,
          status: s.status,
        }
      }),
    "the snapshot this node started from: {snapshot_id, base_hash, base_height, status: assumed|validated|failed}, or null",
  ),
]
