import * as fs from "node:fs"
import * as path from "node:path"
import { Effect, Either, Layer, Option, type Scope } from "effect"
import { type Database, open, type RootDatabase } from "lmdb"
import {
  decodeChainTip,
  decodeIndexEntry,
  encodeChainTip,
  encodeIndexEntry,
  type IndexEntry,
} from "../schema/chain.js"
import { type Coin, decodeCoin, encodeCoin } from "../schema/coin.js"
import type { DecodeError } from "../schema/DecodeError.js"
import { fromHex, toHex } from "../schema/hex.js"
import type { BlockHash } from "../schema/primitives.js"
import {
  ChainStore,
  type ChainStoreService,
  DataDirLocked,
  type KeyedTable,
  StorageError,
} from "./ChainStore.js"

/**
 * defaultCoinCacheEntries is how many decoded coins `layerLmdb` keeps in front of LMDB unless told
 * otherwise: about 200k × ~200 bytes of JS objects, some 40 MB.
 */
export const defaultCoinCacheEntries = 200_000

/** The LMDB environment's directory inside the data directory. */
const chainstateDir = "chainstate"
/** The data-directory lock file's name: it holds the owner's pid in decimal. */
const lockFileName = "LOCK"
/** The key of the tip record in the `meta` sub-database. */
const tipKey = "tip"

// ---------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------

const describe = (e: unknown): string => (e instanceof Error ? e.message : String(e))

/** toStorageError wraps anything lmdb (or the fs) threw; a StorageError thrown by our own checks passes through. */
const toStorageError =
  (operation: string) =>
  (e: unknown): StorageError =>
    e instanceof StorageError ? e : new StorageError({ operation, detail: describe(e) })

/** attempt runs one synchronous storage call, turning what it throws into a StorageError. */
const attempt = <A>(operation: string, f: () => A): Effect.Effect<A, StorageError> =>
  Effect.try({ try: f, catch: toStorageError(operation) })

/** decodedOrThrow unwraps a decoder's answer; a record that does not decode is a corrupt store. */
const decodedOrThrow = <A>(operation: string, what: string, result: Either.Either<A, DecodeError>): A => {
  if (Either.isLeft(result)) {
    throw new StorageError({ operation, detail: `corrupt ${what}: ${result.left.message}` })
  }
  return result.right
}

// ---------------------------------------------------------------------------------------------------
// Byte handling: lmdb's getBinaryFast hands back a shared buffer that the next read overwrites
// (its `length` is the value's, its `byteLength` the whole scratch area), so every value is either
// decoded at once (the decoders copy what they keep) or copied out before it leaves this file.
// ---------------------------------------------------------------------------------------------------

/** view is the value's bytes exactly, as a fresh view (no copy) over lmdb's scratch buffer. */
const view = (bytes: Uint8Array): Uint8Array => bytes.subarray(0, bytes.length)

/** copyOut copies a value out of lmdb's buffer into a plain Uint8Array that stays valid forever. */
const copyOut = (bytes: Uint8Array): Uint8Array => {
  const out = new Uint8Array(bytes.length)
  out.set(bytes.subarray(0, bytes.length))
  return out
}

// ---------------------------------------------------------------------------------------------------
// Coin cache
// ---------------------------------------------------------------------------------------------------

/**
 * CoinCache is a bounded LRU of decoded coins in front of the `coins` sub-database (a Map's insertion
 * order is the recency order: a hit moves the key to the back, eviction takes the front). It only ever
 * holds coins that exist at the committed tip; absent keys are never cached, so lookups of made-up
 * outpoints (an attacker's invalid transactions) cost one B-tree probe each and cannot evict the
 * coins honest blocks are about to spend.
 */
class CoinCache {
  private readonly entries = new Map<string, Coin>()

  constructor(private readonly capacity: number) {}

  get(key: string): Coin | undefined {
    const coin = this.entries.get(key)
    if (coin !== undefined) {
      this.entries.delete(key)
      this.entries.set(key, coin)
    }
    return coin
  }

  set(key: string, coin: Coin): void {
    if (this.capacity === 0) return
    this.entries.delete(key)
    this.entries.set(key, coin)
    if (this.entries.size > this.capacity) {
      const oldest = this.entries.keys().next()
      if (oldest.done !== true) this.entries.delete(oldest.value)
    }
  }

  delete(key: string): void {
    this.entries.delete(key)
  }

  clear(): void {
    this.entries.clear()
  }
}

// ---------------------------------------------------------------------------------------------------
// Data-directory lock
// ---------------------------------------------------------------------------------------------------

/**
 * heldHere is every data directory (real path) this process holds. LMDB itself lets any number of
 * processes share an environment, so the LOCK file is what stops two nodes writing one chain state;
 * this set covers the same process opening a directory twice, which the pid in LOCK cannot tell
 * apart from a stale lock left by an earlier process that had our pid (pid reuse across restarts, as
 * in containers where the node is always pid 1).
 */
const heldHere = new Set<string>()

/** DirLock is a data-directory lock we hold. */
interface DirLock {
  readonly dir: string
  readonly lockPath: string
}

/** LockHolder is what a LOCK file says: a pid, unreadable content, or no file at all. */
type LockHolder = { readonly _tag: "Pid"; readonly pid: number } | { readonly _tag: "Garbage" | "Missing" }

const errorCode = (e: unknown): string | undefined =>
  typeof e === "object" && e !== null && "code" in e && typeof e.code === "string" ? e.code : undefined

const readHolder = (lockPath: string): LockHolder => {
  let text: string
  try {
    text = fs.readFileSync(lockPath, "utf8")
  } catch (e) {
    if (errorCode(e) === "ENOENT") return { _tag: "Missing" }
    throw e
  }
  const match = /^\s*(\d{1,10})\s*$/.exec(text)
  const pid = match === null ? Number.NaN : Number(match[1])
  return Number.isSafeInteger(pid) && pid > 0 && pid <= 0x7fffffff
    ? { _tag: "Pid", pid }
    : { _tag: "Garbage" }
}

/** isAlive: signal 0 checks existence only; EPERM means it exists but belongs to someone else. */
const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return errorCode(e) !== "ESRCH"
  }
}

/** liveOtherPid is the pid of a live process other than us that the LOCK file names, if any. */
const liveOtherPid = (holder: LockHolder): number | undefined =>
  holder._tag === "Pid" && holder.pid !== process.pid && isAlive(holder.pid) ? holder.pid : undefined

/**
 * createLockFile creates LOCK holding our pid, or answers false if it exists. The pid is written to a
 * private file first and hard-linked into place, so LOCK never exists half-written (an empty LOCK
 * would look like garbage to a racing process, which would take it over). On a filesystem without hard
 * links it falls back to `open(wx)` and a write.
 */
const createLockFile = (lockPath: string): boolean => {
  const content = `${process.pid}\n`
  const scratch = `${lockPath}.${process.pid}.tmp`
  fs.writeFileSync(scratch, content)
  try {
    fs.linkSync(scratch, lockPath)
    return true
  } catch (e) {
    const code = errorCode(e)
    if (code === "EEXIST") return false
    if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP" && code !== "ENOSYS") throw e
  } finally {
    fs.rmSync(scratch, { force: true })
  }
  let fd: number
  try {
    fd = fs.openSync(lockPath, "wx")
  } catch (e) {
    if (errorCode(e) === "EEXIST") return false
    throw e
  }
  try {
    fs.writeSync(fd, content)
  } finally {
    fs.closeSync(fd)
  }
  return true
}

/** takeLock answers undefined once we hold LOCK, or the pid (0 if unreadable) of whoever holds it. */
const takeLock = (lockPath: string): number | undefined => {
  if (createLockFile(lockPath)) return undefined
  const holder = readHolder(lockPath)
  const live = liveOtherPid(holder)
  if (live !== undefined) return live
  // Stale: a dead pid, garbage, or our own pid left by an earlier process. Look once more right
  // before removing it, so a racer that replaced it meanwhile keeps its fresh lock, and create
  // exclusively after removing it, so of two racers removing the same stale file one gets EEXIST.
  // What is left open is a racer that replaces it between that look and our unlink (microseconds,
  // and only when two nodes start on one directory that has a stale lock at the same instant).
  const again = readHolder(lockPath)
  const liveNow = liveOtherPid(again)
  if (liveNow !== undefined) return liveNow
  fs.rmSync(lockPath, { force: true })
  if (createLockFile(lockPath)) return undefined
  const winner = readHolder(lockPath)
  return winner._tag === "Pid" ? winner.pid : 0
}

const acquireLock = (dataDir: string): Effect.Effect<DirLock, StorageError | DataDirLocked> =>
  attempt("lock", () => {
    fs.mkdirSync(dataDir, { recursive: true })
    // the real path, so two spellings of one directory (relative, symlinked) are one lock
    const dir = fs.realpathSync(dataDir)
    const lockPath = path.join(dir, lockFileName)
    const holder = heldHere.has(dir) ? process.pid : takeLock(lockPath)
    if (holder === undefined) heldHere.add(dir)
    return { dir, lockPath, holder }
  }).pipe(
    Effect.flatMap(({ dir, lockPath, holder }) =>
      holder === undefined
        ? Effect.succeed({ dir, lockPath })
        : Effect.fail(new DataDirLocked({ path: dataDir, pid: holder })),
    ),
  )

/** releaseLock removes LOCK only if it still holds our pid (someone may have judged it stale meanwhile). */
const releaseLock = (lock: DirLock): Effect.Effect<void> =>
  Effect.sync(() => {
    const holder = readHolder(lock.lockPath)
    if (holder._tag === "Pid" && holder.pid === process.pid) fs.rmSync(lock.lockPath, { force: true })
  }).pipe(
    Effect.catchAllDefect((e) => Effect.logWarning(`could not remove ${lock.lockPath}: ${describe(e)}`)),
    Effect.ensuring(Effect.sync(() => heldHere.delete(lock.dir))),
  )

// ---------------------------------------------------------------------------------------------------
// LMDB environment
// ---------------------------------------------------------------------------------------------------

/** Env is the open environment and its sub-databases (all `encoding: "binary"`: our canonical bytes). */
interface Env {
  readonly root: RootDatabase<Uint8Array, string>
  /** block hash hex → encodeIndexEntry */
  readonly index: Database<Uint8Array, string>
  /** block hash hex → raw block */
  readonly blocks: Database<Uint8Array, string>
  /** block hash hex → undo record */
  readonly undo: Database<Uint8Array, string>
  /** outpoint key `<txid hex>:<index>` → encodeCoin */
  readonly coins: Database<Uint8Array, string>
  /** "tip" → encodeChainTip */
  readonly meta: Database<Uint8Array, string>
  /** UTF-8 `<table> NUL <key>` (binary keys) → value */
  readonly tables: Database<Uint8Array, Uint8Array>
}

/**
 * openEnv opens (creating if needed) the environment. Durability: lmdb-js's defaults on Linux and
 * macOS (`overlappingSync`), and every write goes through `transactionSync` with its default flags,
 * which fsyncs the data pages and writes the meta page through an O_DSYNC descriptor before it
 * returns. So a write that returned survives a process crash (kill -9) and also a power loss (as far as
 * the disk honours flushes); an interrupted one leaves the previous state, never a mix. `noSync` is
 * not used: it keeps kill -9 safety (the OS holds the written pages) but a power loss may then drop
 * recent commits or, if the filesystem reorders writes, corrupt the file.
 */
const openEnv = (dir: string): Effect.Effect<Env, StorageError> =>
  attempt("open", () => {
    const root = open<Uint8Array, string>({ path: dir, encoding: "binary", maxDbs: 8, noSubdir: false })
    try {
      const sub = (name: string) => root.openDB<Uint8Array, string>({ name, encoding: "binary" })
      return {
        root,
        index: sub("index"),
        blocks: sub("blocks"),
        undo: sub("undo"),
        coins: sub("coins"),
        meta: sub("meta"),
        tables: root.openDB<Uint8Array, Uint8Array>({
          name: "tables",
          encoding: "binary",
          keyEncoding: "binary",
        }),
      }
    } catch (e) {
      void root.close()
      throw e
    }
  })

const closeEnv = (env: Env): Effect.Effect<void> =>
  Effect.tryPromise(() => env.root.close()).pipe(
    Effect.catchAll((e) => Effect.logWarning(`closing LMDB failed: ${describe(e.error)}`)),
  )

// ---------------------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------------------

const tablePrefix = (name: string): Buffer => {
  if (name.includes("\u0000")) throw new RangeError(`table name ${JSON.stringify(name)} contains NUL`)
  return Buffer.from(`${name}\u0000`, "utf8")
}

const makeService = (env: Env, cache: CoinCache): ChainStoreService => {
  const { root } = env

  /** write runs `f` as ONE synchronous, durable LMDB transaction (see openEnv). */
  const write = (operation: string, f: () => void): Effect.Effect<void, StorageError> =>
    attempt(operation, () => root.transactionSync(f))

  const readCoin = (key: string): Coin | undefined => {
    let bytes: Uint8Array | undefined
    try {
      bytes = env.coins.getBinaryFast(key)
    } catch (e) {
      throw toStorageError("coins.get")(e)
    }
    return bytes === undefined
      ? undefined
      : decodedOrThrow("coins.get", `coin ${key}`, decodeCoin(view(bytes)))
  }

  const getCopy = (db: Database<Uint8Array, string>, operation: string, key: string) =>
    attempt(operation, () => {
      const bytes = db.getBinaryFast(key)
      return bytes === undefined ? Option.none() : Option.some(copyOut(bytes))
    })

  return {
    coins: {
      get: (key) => {
        const hit = cache.get(key)
        if (hit !== undefined) return hit
        const coin = readCoin(key)
        if (coin !== undefined) cache.set(key, coin)
        return coin
      },
    },

    tip: attempt("tip", () => {
      const bytes = env.meta.getBinaryFast(tipKey)
      return bytes === undefined
        ? Option.none()
        : Option.some(decodedOrThrow("tip", "tip record", decodeChainTip(view(bytes))))
    }),

    loadIndex: attempt("loadIndex", () => {
      const entries: Array<IndexEntry> = []
      for (const { key, value } of env.index.getRange()) {
        const hash = fromHex(key)
        if (hash === undefined || hash.length !== 32) {
          throw new StorageError({
            operation: "loadIndex",
            detail: `corrupt index key ${JSON.stringify(key)}`,
          })
        }
        entries.push(
          decodedOrThrow("loadIndex", `index entry ${key}`, decodeIndexEntry(hash as BlockHash, value)),
        )
      }
      return entries
    }),

    putIndex: (entries) =>
      write("putIndex", () => {
        for (const e of entries) env.index.putSync(toHex(e.hash), encodeIndexEntry(e))
      }),

    putBlock: (hash, bytes) => write("putBlock", () => void env.blocks.putSync(toHex(hash), bytes)),

    getBlock: (hash) => getCopy(env.blocks, "getBlock", toHex(hash)),

    getUndo: (hash) => getCopy(env.undo, "getUndo", toHex(hash)),

    commit: (update) => {
      const { spent, created } = update.delta
      return write("commit", () => {
        const tipBytes = encodeChainTip(update.tip)
        // A tip that cannot be read back would stop the node at its next start: refuse it up front.
        decodedOrThrow("commit", "tip record", decodeChainTip(tipBytes))
        for (const key of spent) env.coins.removeSync(key)
        for (const [key, coin] of created) env.coins.putSync(key, encodeCoin(coin))
        if (update.putUndo !== undefined) env.undo.putSync(toHex(update.putUndo[0]), update.putUndo[1])
        if (update.deleteUndo !== undefined) env.undo.removeSync(toHex(update.deleteUndo))
        for (const e of update.index ?? []) env.index.putSync(toHex(e.hash), encodeIndexEntry(e))
        env.meta.putSync(tipKey, tipBytes)
      }).pipe(
        Effect.tapBoth({
          // Committed: mirror the delta in the cache, in the same order as the transaction. Created
          // coins go in as the most recent entries: the next blocks are the likeliest to spend them.
          onSuccess: () =>
            Effect.sync(() => {
              for (const key of spent) cache.delete(key)
              for (const [key, coin] of created) cache.set(key, coin)
            }),
          // Aborted, so the store is unchanged; dropping the touched keys costs a re-read at most and
          // stays right even in the unlikely case that lmdb failed after the commit took effect.
          onFailure: () =>
            Effect.sync(() => {
              for (const key of spent) cache.delete(key)
              for (const [key] of created) cache.delete(key)
            }),
        }),
      )
    },

    putCoins: (entries) =>
      write("putCoins", () => {
        for (const [key, coin] of entries) env.coins.putSync(key, encodeCoin(coin))
      }).pipe(
        // the cache holds only coins read back at the tip: drop any stale copy of a key just written
        Effect.ensuring(
          Effect.sync(() => {
            for (const [key] of entries) cache.delete(key)
          }),
        ),
      ),

    forEachCoin: (visit) =>
      Effect.suspend(() => {
        // The visitor's own exceptions are its bugs, not storage failures: they become defects, as
        // they do with the memory layer.
        let visitorFailure: { readonly error: unknown } | undefined
        return attempt("forEachCoin", () => {
          for (const { key, value } of env.coins.getRange()) {
            const coin = decodedOrThrow("forEachCoin", `coin ${key}`, decodeCoin(value))
            try {
              visit(key, coin)
            } catch (error) {
              visitorFailure = { error }
              return
            }
          }
        }).pipe(
          Effect.zipRight(
            Effect.suspend(() =>
              visitorFailure === undefined ? Effect.void : Effect.die(visitorFailure.error),
            ),
          ),
        )
      }),

    resetChainState: write("resetChainState", () => {
      env.coins.clearSync()
      env.undo.clearSync()
      env.meta.removeSync(tipKey)
    }).pipe(Effect.ensuring(Effect.sync(() => cache.clear()))),

    table: (name) => {
      const prefix = tablePrefix(name)
      const end = Buffer.from(prefix)
      end[end.length - 1] = 1
      const rowKey = (key: string) => Buffer.concat([prefix, Buffer.from(key, "utf8")])
      const table: KeyedTable = {
        get: (key) =>
          attempt(`table ${name} get`, () => {
            const bytes = env.tables.getBinaryFast(rowKey(key))
            return bytes === undefined ? Option.none() : Option.some(copyOut(bytes))
          }),
        put: (key, value) => write(`table ${name} put`, () => void env.tables.putSync(rowKey(key), value)),
        remove: (key) => write(`table ${name} remove`, () => void env.tables.removeSync(rowKey(key))),
        write: (changes) =>
          write(`table ${name} write`, () => {
            for (const [key, value] of changes) {
              if (value === undefined) env.tables.removeSync(rowKey(key))
              else env.tables.putSync(rowKey(key), value)
            }
          }),
        entries: attempt(`table ${name} entries`, () => {
          const rows: Array<readonly [string, Uint8Array]> = []
          for (const { key, value } of env.tables.getRange({ start: prefix, end })) {
            rows.push([Buffer.from(key.subarray(prefix.length)).toString("utf8"), copyOut(value)])
          }
          return rows
        }),
      }
      return table
    },
  }
}

/**
 * makeLmdbStore takes the data-directory lock, opens the LMDB environment and builds the service;
 * closing the scope closes LMDB and then releases the lock.
 */
const makeLmdbStore = (
  dataDir: string,
  coinCacheEntries: number,
): Effect.Effect<ChainStoreService, StorageError | DataDirLocked, Scope.Scope> =>
  Effect.gen(function* () {
    yield* Effect.acquireRelease(acquireLock(dataDir), releaseLock)
    const env = yield* Effect.acquireRelease(openEnv(path.join(dataDir, chainstateDir)), closeEnv)
    return makeService(env, new CoinCache(coinCacheEntries))
  })

/**
 * layerLmdb provides a ChainStore persisted in LMDB under `<dataDir>/chainstate`, with sub-databases
 * `index`, `blocks`, `undo`, `coins`, `meta` and `tables`. Acquiring it creates `dataDir` and takes
 * `<dataDir>/LOCK` (our pid): a LOCK naming another live process fails with DataDirLocked, one naming
 * a dead process (or unreadable) is stale and taken over. Releasing it closes LMDB, then removes LOCK
 * if it still names us.
 *
 * Every write is one durable LMDB transaction (see `openEnv`): `commit` in particular applies the UTXO
 * delta, the undo record, the index entries and the tip together or not at all, and once it returns
 * they survive kill -9 and power loss. `coins` reads through a bounded LRU of `coinCacheEntries`
 * decoded coins (default `defaultCoinCacheEntries`; 0 turns it off) that `commit` keeps in step with
 * the store. LMDB limits a key to 1978 bytes, so a table key (with its table name) longer than that
 * fails to write with StorageError; table names must not contain NUL.
 */
export const layerLmdb = (
  dataDir: string,
  options?: { readonly coinCacheEntries?: number },
): Layer.Layer<ChainStore, StorageError | DataDirLocked> =>
  Layer.scoped(
    ChainStore,
    makeLmdbStore(dataDir, cacheCapacity(options?.coinCacheEntries ?? defaultCoinCacheEntries)),
  )

/** cacheCapacity: a whole number of entries, at least 0 (Infinity: unbounded); NaN means the default. */
const cacheCapacity = (n: number): number =>
  Number.isNaN(n) ? defaultCoinCacheEntries : Math.max(0, Math.floor(n))
