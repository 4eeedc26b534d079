import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer, Option } from "effect"
import * as fc from "fast-check"
import { open } from "lmdb"
import { outpointKey } from "../../src/consensus/utxo.js"
import {
  ChainStore,
  type ChainStoreService,
  DataDirLocked,
  layerMemory,
  makeMemoryStore,
  StorageError,
} from "../../src/layers/ChainStore.js"
import { layerLmdb } from "../../src/layers/ChainStoreLmdb.js"
import type { BlockStatus, ChainTip, IndexEntry } from "../../src/schema/chain.js"
import type { Coin } from "../../src/schema/coin.js"
import type { Amount, BlockHash, Height, PublicKey } from "../../src/schema/primitives.js"

// ---------------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------------

const hash = (n: number): BlockHash => new Uint8Array(32).fill(n & 0xff) as BlockHash

const key = (n: number, index = 0): string => outpointKey(hash(n), index)

const coin = (n: number): Coin => ({
  value: (BigInt(n) * 1_000n) as Amount,
  pubkey: new Uint8Array(32).fill((n * 7) & 0xff) as PublicKey,
  height: n as Height,
  coinbase: n % 2 === 0,
})

const tip = (n: number): ChainTip => ({
  hash: hash(n),
  height: n as Height,
  utxoCommitment: new Uint8Array([n & 0xff, 1, 2, 3]),
})

const entry = (n: number, status: BlockStatus, chainwork: bigint): IndexEntry => ({
  hash: hash(n),
  header: {
    version: 1,
    prev: hash(n - 1),
    merkleRoot: new Uint8Array(32).fill(0xab),
    time: 1_700_000_000 + n,
    bits: 0x207fffff,
    nonce: n * 31,
  },
  height: n as Height,
  chainwork,
  status,
})

const bytes = (...values: ReadonlyArray<number>): Uint8Array => new Uint8Array(values)

/** value unwraps a Some, failing the test on None. */
const value = <A>(option: Option.Option<A>): A =>
  Option.getOrElse(option, () => expect.fail("expected Some, got None"))

const byHeight = (entries: ReadonlyArray<IndexEntry>): ReadonlyArray<IndexEntry> =>
  [...entries].sort((a, b) => a.height - b.height)

/** coinSet is every unspent output, sorted by key. */
const coinSet = (store: ChainStoreService) =>
  Effect.gen(function* () {
    const seen: Array<readonly [string, Coin]> = []
    yield* store.forEachCoin((k, c) => seen.push([k, c]))
    return seen.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  })

// ---------------------------------------------------------------------------------------------------
// Data directories and child processes
// ---------------------------------------------------------------------------------------------------

/** tempDir is a fresh directory, removed when the scope closes. */
const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "fibercoin-store-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })),
)

/** lmdbInTempDir is layerLmdb on a fresh directory (closed first, then the directory removed). */
const lmdbInTempDir = (options?: { readonly coinCacheEntries?: number }) =>
  Layer.unwrapScoped(Effect.map(tempDir, (dir) => layerLmdb(dir, options)))

const lockFile = (dir: string) => path.join(dir, "LOCK")
const readLock = (dir: string): string | undefined =>
  fs.existsSync(lockFile(dir)) ? fs.readFileSync(lockFile(dir), "utf8") : undefined

/** deadPid is the pid of a process that has already exited. */
const deadPid = (): number => {
  const child = spawnSync(process.execPath, ["-e", ""])
  if (child.pid === undefined) throw new Error("could not spawn node")
  return child.pid
}

const repoRoot = fileURLToPath(new URL("../../", import.meta.url))
const lockHolderScript = fileURLToPath(new URL("./lockHolder.ts", import.meta.url))

const killHard = (child: ChildProcess): Promise<void> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    child.once("exit", () => resolve())
    child.kill("SIGKILL")
  })

/**
 * holdLock starts test/layers/lockHolder.ts, a separate node process that opens the directory, commits
 * a tip at `height` and holds the lock; it is killed (if still alive) when the scope closes.
 */
const holdLock = (dir: string, height: number) =>
  Effect.acquireRelease(
    Effect.promise(
      () =>
        new Promise<ChildProcess>((resolve, reject) => {
          const child = spawn(process.execPath, ["--import", "tsx", lockHolderScript, dir, String(height)], {
            cwd: repoRoot,
            stdio: ["ignore", "pipe", "pipe"],
          })
          let out = ""
          let err = ""
          const timer = setTimeout(() => {
            child.kill("SIGKILL")
            reject(new Error(`lockHolder did not lock within 20 s: ${err}`))
          }, 20_000)
          child.stdout?.on("data", (chunk) => {
            out += String(chunk)
            if (out.includes("locked\n")) {
              clearTimeout(timer)
              resolve(child)
            }
          })
          child.stderr?.on("data", (chunk) => {
            err += String(chunk)
          })
          child.once("exit", (code) => {
            clearTimeout(timer)
            reject(new Error(`lockHolder exited (${code}) before locking: ${err}`))
          })
        }),
    ),
    (child) => Effect.promise(() => killHard(child)),
  )

/** openFails opens a layer that is expected to fail and returns its error. */
const openFails = (layer: Layer.Layer<ChainStore, StorageError | DataDirLocked>) =>
  ChainStore.pipe(Effect.provide(layer), Effect.flip)

// ---------------------------------------------------------------------------------------------------
// The contract: every layer behaves the same
// ---------------------------------------------------------------------------------------------------

const contract = (name: string, makeLayer: () => Layer.Layer<ChainStore, unknown>) =>
  describe(name, () => {
    it.effect("a fresh store has no tip, no index entries, no blocks, no undo records and no coins", () =>
      Effect.gen(function* () {
        const store = yield* ChainStore
        expect(Option.isNone(yield* store.tip)).toBe(true)
        expect(yield* store.loadIndex).toEqual([])
        expect(Option.isNone(yield* store.getBlock(hash(1)))).toBe(true)
        expect(Option.isNone(yield* store.getUndo(hash(1)))).toBe(true)
        expect(store.coins.get(key(1))).toBeUndefined()
        expect(yield* coinSet(store)).toEqual([])
      }).pipe(Effect.provide(makeLayer())),
    )

    it.effect("putBlock stores a block's bytes under its hash, and replaces them on a second put", () =>
      Effect.gen(function* () {
        const store = yield* ChainStore
        const big = new Uint8Array(Buffer.alloc(100_000, "fibercoin"))
        yield* store.putBlock(hash(1), bytes(1, 2, 3))
        yield* store.putBlock(hash(2), big)
        expect(value(yield* store.getBlock(hash(1)))).toEqual(bytes(1, 2, 3))
        expect(Buffer.from(value(yield* store.getBlock(hash(2)))).equals(big)).toBe(true)
        expect(Option.isNone(yield* store.getBlock(hash(3)))).toBe(true)
        yield* store.putBlock(hash(1), bytes(9))
        expect(value(yield* store.getBlock(hash(1)))).toEqual(bytes(9))
      }).pipe(Effect.provide(makeLayer())),
    )

    it.effect("putIndex round-trips every status and chainwork beyond 64 bits; a later put replaces", () =>
      Effect.gen(function* () {
        const store = yield* ChainStore
        const entries = [
          entry(0, "valid", 0n),
          entry(1, "header", 1n),
          entry(2, "data", 2n ** 64n + 5n),
          entry(3, "valid", 2n ** 200n + 12345n),
          entry(4, "invalid", 2n ** 256n - 1n),
        ]
        yield* store.putIndex(entries)
        expect(byHeight(yield* store.loadIndex)).toEqual(entries)
        const revalidated = entry(1, "invalid", 1n)
        yield* store.putIndex([revalidated])
        expect(byHeight(yield* store.loadIndex)).toEqual([entries[0], revalidated, ...entries.slice(2)])
      }).pipe(Effect.provide(makeLayer())),
    )

    it.effect("commit applies the UTXO delta, the tip, the undo record and the index entries together", () =>
      Effect.gen(function* () {
        const store = yield* ChainStore
        yield* store.commit({
          tip: tip(1),
          delta: {
            spent: [],
            created: [
              [key(1, 0), coin(1)],
              [key(1, 1), coin(2)],
            ],
          },
          index: [entry(1, "valid", 10n)],
        })
        yield* store.commit({
          tip: tip(2),
          delta: { spent: [key(1, 0)], created: [[key(2, 0), coin(3)]] },
          putUndo: [hash(2), bytes(2, 2)],
          index: [entry(2, "valid", 20n)],
        })
        expect(value(yield* store.tip)).toEqual(tip(2))
        expect(store.coins.get(key(1, 0))).toBeUndefined()
        expect(store.coins.get(key(1, 1))).toEqual(coin(2))
        expect(store.coins.get(key(2, 0))).toEqual(coin(3))
        expect(value(yield* store.getUndo(hash(2)))).toEqual(bytes(2, 2))
        expect(byHeight(yield* store.loadIndex)).toEqual([entry(1, "valid", 10n), entry(2, "valid", 20n)])
        expect(yield* coinSet(store)).toEqual([
          [key(1, 1), coin(2)],
          [key(2, 0), coin(3)],
        ])
      }).pipe(Effect.provide(makeLayer())),
    )

    it.effect("a disconnect commit drops the block's undo record and restores the coins it spent", () =>
      Effect.gen(function* () {
        const store = yield* ChainStore
        yield* store.commit({
          tip: tip(1),
          delta: { spent: [], created: [[key(1), coin(1)]] },
          putUndo: [hash(1), bytes(1)],
        })
        yield* store.commit({
          tip: tip(2),
          delta: { spent: [key(1)], created: [[key(2), coin(2)]] },
          putUndo: [hash(2), bytes(2)],
          index: [entry(2, "valid", 2n)],
        })
        yield* store.commit({
          tip: tip(1),
          delta: { spent: [key(2)], created: [[key(1), coin(1)]] },
          deleteUndo: hash(2),
          index: [entry(2, "data", 2n)],
        })
        expect(value(yield* store.tip)).toEqual(tip(1))
        expect(store.coins.get(key(1))).toEqual(coin(1))
        expect(store.coins.get(key(2))).toBeUndefined()
        expect(Option.isNone(yield* store.getUndo(hash(2)))).toBe(true)
        expect(value(yield* store.getUndo(hash(1)))).toEqual(bytes(1))
        expect(yield* store.loadIndex).toEqual([entry(2, "data", 2n)])
        expect(yield* coinSet(store)).toEqual([[key(1), coin(1)]])
      }).pipe(Effect.provide(makeLayer())),
    )

    it.effect("forEachCoin visits exactly the unspent outputs, each once", () =>
      Effect.gen(function* () {
        const store = yield* ChainStore
        const created = [1, 2, 3, 4, 5].map((n) => [key(n, n), coin(n)] as const)
        yield* store.commit({ tip: tip(1), delta: { spent: [], created } })
        yield* store.commit({ tip: tip(2), delta: { spent: [key(2, 2), key(4, 4)], created: [] } })
        expect(yield* coinSet(store)).toEqual([
          [key(1, 1), coin(1)],
          [key(3, 3), coin(3)],
          [key(5, 5), coin(5)],
        ])
      }).pipe(Effect.provide(makeLayer())),
    )

    it.effect("putCoins adds coins without moving the tip, and resetChainState drops them again", () =>
      Effect.gen(function* () {
        const store = yield* ChainStore
        yield* store.commit({ tip: tip(1), delta: { spent: [], created: [[key(1), coin(1)]] } })
        yield* store.putCoins([
          [key(2), coin(2)],
          [key(3, 1), coin(3)],
        ])
        expect(value(yield* store.tip)).toEqual(tip(1))
        expect(store.coins.get(key(3, 1))).toEqual(coin(3))
        expect(yield* coinSet(store)).toEqual([
          [key(1), coin(1)],
          [key(2), coin(2)],
          [key(3, 1), coin(3)],
        ])
        yield* store.resetChainState
        expect(store.coins.get(key(2))).toBeUndefined()
        expect(yield* coinSet(store)).toEqual([])
      }).pipe(Effect.provide(makeLayer())),
    )

    it.effect("an exception thrown by forEachCoin's visitor is a defect, not a StorageError", () =>
      Effect.gen(function* () {
        const store = yield* ChainStore
        yield* store.commit({ tip: tip(1), delta: { spent: [], created: [[key(1), coin(1)]] } })
        const defect = yield* store
          .forEachCoin(() => {
            throw new RangeError("visitor bug")
          })
          .pipe(Effect.as<unknown>("no defect"), Effect.catchAllDefect(Effect.succeed))
        expect(defect).toBeInstanceOf(RangeError)
      }).pipe(Effect.provide(makeLayer())),
    )

    it.effect(
      "resetChainState drops the coins, the undo records and the tip, and keeps blocks and index",
      () =>
        Effect.gen(function* () {
          const store = yield* ChainStore
          yield* store.putBlock(hash(1), bytes(1, 1))
          yield* store.putIndex([entry(1, "valid", 1n)])
          yield* store.commit({
            tip: tip(1),
            delta: { spent: [], created: [[key(1), coin(1)]] },
            putUndo: [hash(1), bytes(7)],
          })
          expect(store.coins.get(key(1))).toEqual(coin(1))
          yield* store.resetChainState
          expect(Option.isNone(yield* store.tip)).toBe(true)
          expect(store.coins.get(key(1))).toBeUndefined()
          expect(yield* coinSet(store)).toEqual([])
          expect(Option.isNone(yield* store.getUndo(hash(1)))).toBe(true)
          expect(value(yield* store.getBlock(hash(1)))).toEqual(bytes(1, 1))
          expect(yield* store.loadIndex).toEqual([entry(1, "valid", 1n)])
          // and the chain state can be rebuilt from there
          yield* store.commit({ tip: tip(1), delta: { spent: [], created: [[key(1), coin(9)]] } })
          expect(store.coins.get(key(1))).toEqual(coin(9))
        }).pipe(Effect.provide(makeLayer())),
    )

    it.effect("keyed tables keep their own keys: get, put, entries and remove", () =>
      Effect.gen(function* () {
        const store = yield* ChainStore
        const peers = store.table("peers")
        const peer = store.table("peer")
        const bans = store.table("bans")
        yield* peers.put("a", bytes(1))
        yield* peers.put("b", bytes(2))
        yield* peers.put("", bytes(3))
        yield* peers.put("ключ 🔑", bytes(4))
        yield* peer.put("sa", bytes(5))
        yield* bans.put("a", bytes(6))
        expect(value(yield* peers.get("a"))).toEqual(bytes(1))
        expect(value(yield* bans.get("a"))).toEqual(bytes(6))
        expect(Option.isNone(yield* bans.get("b"))).toBe(true)
        expect(Option.isNone(yield* peers.get("sa"))).toBe(true)
        const sorted = (rows: ReadonlyArray<readonly [string, Uint8Array]>) =>
          [...rows].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        expect(sorted(yield* peers.entries)).toEqual([
          ["", bytes(3)],
          ["a", bytes(1)],
          ["b", bytes(2)],
          ["ключ 🔑", bytes(4)],
        ])
        expect(yield* peer.entries).toEqual([["sa", bytes(5)]])
        expect(yield* bans.entries).toEqual([["a", bytes(6)]])
        yield* peers.put("a", bytes(10))
        expect(value(yield* store.table("peers").get("a"))).toEqual(bytes(10))
        yield* peers.remove("a")
        yield* peers.remove("never there")
        expect(Option.isNone(yield* peers.get("a"))).toBe(true)
        expect(value(yield* bans.get("a"))).toEqual(bytes(6))
        expect(sorted(yield* peers.entries).map(([k]) => k)).toEqual(["", "b", "ключ 🔑"])
        expect(yield* store.table("empty").entries).toEqual([])
      }).pipe(Effect.provide(makeLayer())),
    )

    it.effect("a table's write puts and removes many rows at once, in order", () =>
      Effect.gen(function* () {
        const store = yield* ChainStore
        const t = store.table("addr")
        yield* t.put("old", bytes(1))
        const source = bytes(7)
        yield* t.write([
          ["x", bytes(2)],
          ["old", undefined],
          ["y", source],
          ["x", bytes(3)],
          ["never there", undefined],
        ])
        source.fill(0)
        const rows = [...(yield* t.entries)].sort(([a], [b]) => (a < b ? -1 : 1))
        expect(rows).toEqual([
          ["x", bytes(3)],
          ["y", bytes(7)],
        ])
        yield* t.write([])
        expect((yield* t.entries).length).toBe(2)
      }).pipe(Effect.provide(makeLayer())),
    )

    it.effect(
      "the store keeps its own copy of bytes passed in: mutating them afterwards changes nothing",
      () =>
        Effect.gen(function* () {
          const store = yield* ChainStore
          const block = bytes(1, 2, 3)
          const undo = bytes(4, 5)
          const row = bytes(6)
          yield* store.putBlock(hash(1), block)
          yield* store.commit({ tip: tip(1), delta: { spent: [], created: [] }, putUndo: [hash(1), undo] })
          yield* store.table("t").put("k", row)
          block.fill(0)
          undo.fill(0)
          row.fill(0)
          expect(value(yield* store.getBlock(hash(1)))).toEqual(bytes(1, 2, 3))
          expect(value(yield* store.getUndo(hash(1)))).toEqual(bytes(4, 5))
          expect(value(yield* store.table("t").get("k"))).toEqual(bytes(6))
        }).pipe(Effect.provide(makeLayer())),
    )

    it.effect("bytes handed out are the caller's: mutating them does not change the store", () =>
      Effect.gen(function* () {
        const store = yield* ChainStore
        yield* store.putBlock(hash(1), bytes(1, 2, 3))
        yield* store.commit({
          tip: tip(1),
          delta: { spent: [], created: [] },
          putUndo: [hash(1), bytes(4, 5)],
        })
        yield* store.table("t").put("k", bytes(6))
        value(yield* store.getBlock(hash(1))).fill(0)
        value(yield* store.getUndo(hash(1))).fill(0)
        value(yield* store.table("t").get("k")).fill(0)
        for (const [, v] of yield* store.table("t").entries) v.fill(0)
        expect(value(yield* store.getBlock(hash(1)))).toEqual(bytes(1, 2, 3))
        expect(value(yield* store.getUndo(hash(1)))).toEqual(bytes(4, 5))
        expect(value(yield* store.table("t").get("k"))).toEqual(bytes(6))
      }).pipe(Effect.provide(makeLayer())),
    )
  })

contract("layerMemory", () => layerMemory)
contract("layerLmdb", () => lmdbInTempDir())

// ---------------------------------------------------------------------------------------------------
// LMDB only: persistence, the data-directory lock, the coin cache
// ---------------------------------------------------------------------------------------------------

describe("layerLmdb on disk", () => {
  it.scoped("everything written survives closing and reopening the data directory", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      yield* Effect.gen(function* () {
        const store = yield* ChainStore
        yield* store.putBlock(hash(1), bytes(1, 1, 1))
        yield* store.putIndex([entry(1, "valid", 2n ** 70n)])
        yield* store.commit({
          tip: tip(1),
          delta: {
            spent: [],
            created: [
              [key(1, 0), coin(1)],
              [key(1, 1), coin(2)],
            ],
          },
          putUndo: [hash(1), bytes(5)],
        })
        yield* store.commit({ tip: tip(2), delta: { spent: [key(1, 0)], created: [[key(2), coin(3)]] } })
        yield* store.table("peers").put("a", bytes(9))
        expect(readLock(dir)).toBe(`${process.pid}\n`)
      }).pipe(Effect.provide(layerLmdb(dir)))
      expect(readLock(dir)).toBeUndefined()
      yield* Effect.gen(function* () {
        const store = yield* ChainStore
        expect(value(yield* store.tip)).toEqual(tip(2))
        expect(store.coins.get(key(1, 0))).toBeUndefined()
        expect(store.coins.get(key(1, 1))).toEqual(coin(2))
        expect(store.coins.get(key(2))).toEqual(coin(3))
        expect(yield* store.loadIndex).toEqual([entry(1, "valid", 2n ** 70n)])
        expect(value(yield* store.getBlock(hash(1)))).toEqual(bytes(1, 1, 1))
        expect(value(yield* store.getUndo(hash(1)))).toEqual(bytes(5))
        expect(yield* store.table("peers").entries).toEqual([["a", bytes(9)]])
      }).pipe(Effect.provide(layerLmdb(dir)))
    }),
  )

  it.scoped("a second open of a data directory in use fails with DataDirLocked", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const error = yield* openFails(layerLmdb(dir)).pipe(Effect.provide(layerLmdb(dir)))
      expect(error).toBeInstanceOf(DataDirLocked)
      expect(error.message).toContain("is locked by another fibercoin process")
      expect(error).toMatchObject({ path: dir, pid: process.pid })
      // another spelling of the same directory is the same lock
      const alias = `${dir}-alias`
      fs.symlinkSync(dir, alias)
      const viaAlias = yield* openFails(layerLmdb(alias)).pipe(
        Effect.provide(layerLmdb(dir)),
        Effect.ensuring(Effect.sync(() => fs.rmSync(alias, { force: true }))),
      )
      expect(viaAlias).toMatchObject({ _tag: "DataDirLocked", path: alias, pid: process.pid })
      // the failed open left the holder's lock alone, and once it closed the directory is free
      expect(readLock(dir)).toBeUndefined()
      yield* ChainStore.pipe(Effect.provide(layerLmdb(dir)))
    }),
  )

  it.scoped("a stale LOCK (dead pid, garbage, empty, or our own pid from an earlier run) is taken over", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      for (const stale of [`${deadPid()}\n`, "not a pid\n", "", `${process.pid}\n`]) {
        fs.writeFileSync(lockFile(dir), stale)
        yield* Effect.gen(function* () {
          const store = yield* ChainStore
          expect(readLock(dir)).toBe(`${process.pid}\n`)
          yield* store.putBlock(hash(1), bytes(1))
        }).pipe(Effect.provide(layerLmdb(dir)))
        expect(readLock(dir)).toBeUndefined()
      }
    }),
  )

  it.scoped("closing leaves a LOCK that no longer names this process", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const other = `${deadPid()}\n`
      yield* Effect.sync(() => fs.writeFileSync(lockFile(dir), other)).pipe(Effect.provide(layerLmdb(dir)))
      expect(readLock(dir)).toBe(other)
    }),
  )

  it.scoped(
    "a directory held by another live process is refused; after kill -9 it is taken over with that process's commit",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const holder = yield* holdLock(dir, 7)
        const error = yield* openFails(layerLmdb(dir))
        expect(error).toBeInstanceOf(DataDirLocked)
        expect(error).toMatchObject({ path: dir, pid: holder.pid })
        yield* Effect.promise(() => killHard(holder))
        expect(readLock(dir)).toBe(`${holder.pid}\n`)
        yield* Effect.gen(function* () {
          const store = yield* ChainStore
          expect(value(yield* store.tip)).toEqual({
            hash: hash(7),
            height: 7,
            utxoCommitment: bytes(7),
          })
          expect(store.coins.get("held:7")).toMatchObject({ value: 5000n, height: 7, coinbase: true })
        }).pipe(Effect.provide(layerLmdb(dir)))
      }),
  )

  it.scoped("the coin cache agrees with a fresh reopen after spends, re-creations and evictions", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const keys = [0, 1, 2, 3, 4, 5, 6].map((n) => key(n))
      const observed = yield* Effect.gen(function* () {
        const store = yield* ChainStore
        const readAll = () => keys.map((k) => store.coins.get(k))
        yield* store.commit({
          tip: tip(1),
          delta: { spent: [], created: keys.slice(0, 6).map((k, i) => [k, coin(i)]) },
        })
        expect(readAll()).toEqual([...[0, 1, 2, 3, 4, 5].map(coin), undefined])
        yield* store.commit({
          tip: tip(2),
          delta: {
            spent: [keys[0]!, keys[1]!],
            created: [
              [keys[0]!, coin(100)],
              [keys[6]!, coin(6)],
            ],
          },
        })
        expect(readAll()).toEqual([coin(100), undefined, coin(2), coin(3), coin(4), coin(5), coin(6)])
        yield* store.commit({
          tip: tip(3),
          delta: { spent: [keys[0]!, keys[5]!], created: [[keys[1]!, coin(101)]] },
        })
        expect(store.coins.get(keys[0]!)).toBeUndefined()
        return readAll()
      }).pipe(Effect.provide(layerLmdb(dir, { coinCacheEntries: 3 })))
      expect(observed).toEqual([undefined, coin(101), coin(2), coin(3), coin(4), undefined, coin(6)])
      const fresh = yield* Effect.map(ChainStore, (store) => keys.map((k) => store.coins.get(k))).pipe(
        Effect.provide(layerLmdb(dir)),
      )
      expect(fresh).toEqual(observed)
    }),
  )

  it.scoped(
    "a record that does not decode is a StorageError (thrown by coins.get: a defect for its caller)",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        yield* ChainStore.pipe(Effect.provide(layerLmdb(dir)))
        yield* Effect.promise(async () => {
          const root = open({ path: path.join(dir, "chainstate"), encoding: "binary" })
          root.openDB({ name: "coins", encoding: "binary" }).putSync(key(1), bytes(1, 2, 3))
          root.openDB({ name: "meta", encoding: "binary" }).putSync("tip", bytes(4))
          root.openDB({ name: "index", encoding: "binary" }).putSync("not hex", bytes(5))
          await root.close()
        })
        yield* Effect.gen(function* () {
          const store = yield* ChainStore
          expect(() => store.coins.get(key(1))).toThrow(StorageError)
          expect(() => store.coins.get(key(1))).toThrow(/corrupt coin/)
          expect(yield* Effect.flip(store.forEachCoin(() => {}))).toMatchObject({ _tag: "StorageError" })
          expect(yield* Effect.flip(store.tip)).toMatchObject({ _tag: "StorageError", operation: "tip" })
          expect(yield* Effect.flip(store.loadIndex)).toMatchObject({
            _tag: "StorageError",
            operation: "loadIndex",
          })
        }).pipe(Effect.provide(layerLmdb(dir)))
      }),
  )

  it.effect(
    "a commit that fails part-way changes nothing: coins, cached coins, undo and tip stay as they were",
    () =>
      Effect.gen(function* () {
        const store = yield* ChainStore
        yield* store.commit({ tip: tip(1), delta: { spent: [], created: [[key(1), coin(1)]] } })
        expect(store.coins.get(key(1))).toEqual(coin(1)) // now cached
        const error = yield* Effect.flip(
          store.commit({
            tip: tip(2),
            // LMDB refuses keys over 1978 bytes: the put fails after the spend was already applied
            delta: {
              spent: [key(1)],
              created: [
                [key(2), coin(2)],
                ["x".repeat(3000), coin(3)],
              ],
            },
            putUndo: [hash(2), bytes(2)],
          }),
        )
        expect(error).toBeInstanceOf(StorageError)
        expect(error.operation).toBe("commit")
        expect(value(yield* store.tip)).toEqual(tip(1))
        expect(store.coins.get(key(1))).toEqual(coin(1))
        expect(store.coins.get(key(2))).toBeUndefined()
        expect(Option.isNone(yield* store.getUndo(hash(2)))).toBe(true)
        expect(yield* coinSet(store)).toEqual([[key(1), coin(1)]])
      }).pipe(Effect.provide(lmdbInTempDir())),
  )

  it("random commit sequences leave LMDB (any cache size) and memory with the same coins", async () => {
    interface Step {
      /** keys read before the commit (to fill the cache) */
      readonly reads: ReadonlyArray<number>
      readonly spent: ReadonlyArray<number>
      readonly created: ReadonlyArray<readonly [key: number, seed: number]>
      /** resetChainState instead of a commit */
      readonly reset: boolean
    }
    const keySpace = Array.from({ length: 24 }, (_, i) => key(100 + (i % 8), i >> 3))
    const step: fc.Arbitrary<Step> = fc.record({
      reads: fc.uniqueArray(fc.nat(23), { maxLength: 8 }),
      spent: fc.uniqueArray(fc.nat(23), { maxLength: 6 }),
      created: fc.array(fc.tuple(fc.nat(23), fc.nat(1_000)), { maxLength: 6 }),
      reset: fc.nat(15).map((n) => n === 0),
    })
    const compare = (capacity: number, steps: ReadonlyArray<Step>) =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const lmdb = Context.get(
          yield* Layer.build(layerLmdb(dir, { coinCacheEntries: capacity })),
          ChainStore,
        )
        const memory = makeMemoryStore()
        for (const [i, s] of steps.entries()) {
          for (const r of s.reads) lmdb.coins.get(keySpace[r]!)
          for (const store of [memory, lmdb]) {
            if (s.reset) yield* store.resetChainState
            else
              yield* store.commit({
                tip: tip(i),
                delta: {
                  spent: s.spent.map((n) => keySpace[n]!),
                  created: s.created.map(([n, seed]) => [keySpace[n]!, coin(seed)] as const),
                },
              })
          }
          for (const k of keySpace) expect(lmdb.coins.get(k)).toEqual(memory.coins.get(k))
        }
        expect(yield* coinSet(lmdb)).toEqual(yield* coinSet(memory))
      }).pipe(Effect.scoped)
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(0, 1, 8, 1_000),
        fc.array(step, { minLength: 1, maxLength: 12 }),
        (c, s) => Effect.runPromise(compare(c, s)),
      ),
      { seed: 20_240_601, numRuns: 50 },
    )
  })
})
