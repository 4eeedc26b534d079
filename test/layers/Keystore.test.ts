import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Logger, LogLevel } from "effect"
import { taggedHash } from "../../src/consensus/hash.js"
import { regtest, testnet } from "../../src/consensus/params.js"
import {
  deriveSecretKey,
  Keystore,
  type KeystoreOptions,
  layer,
  WALLET_FILE,
} from "../../src/layers/Keystore.js"
import { layerDefault, loadDefaultBackend } from "../../src/layers/Signatures.js"
import { fromHex, toHex } from "../../src/schema/hex.js"

const backend = loadDefaultBackend().backend

/** tempDir is a fresh data directory, removed when the scope closes. */
const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "fibercoin-keystore-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })),
)

/** open runs `use` against a keystore opened with `options` (the file is closed when it returns). */
const withKeystore = <A, E>(options: KeystoreOptions, use: (ks: Keystore["Type"]) => Effect.Effect<A, E>) =>
  Effect.flatMap(Keystore, use).pipe(Effect.provide(layer(options).pipe(Layer.provide(layerDefault))))

/** opening fails with the keystore's error, for asserting on it. */
const openError = (options: KeystoreOptions) => Effect.flip(withKeystore(options, () => Effect.void))

/** captureLogs collects the messages logged at warning level or above while `effect` runs. */
const captureLogs = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const lines: Array<string> = []
    const logger = Logger.make(({ logLevel, message }) => {
      if (LogLevel.greaterThanEqual(logLevel, LogLevel.Warning)) {
        lines.push((Array.isArray(message) ? message : [message]).map(String).join(" "))
      }
    })
    const value = yield* effect.pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
    return { value, warnings: lines }
  })

const readFile = (dir: string): Record<string, unknown> =>
  JSON.parse(fs.readFileSync(path.join(dir, WALLET_FILE), "utf8")) as Record<string, unknown>
const writeFile = (dir: string, value: unknown) =>
  fs.writeFileSync(path.join(dir, WALLET_FILE), typeof value === "string" ? value : JSON.stringify(value))

const passphrase = "correct horse battery staple"

describe("Keystore: the wallet's seed on disk", () => {
  it.scoped("keys and the reserved count survive a restart; the same passphrase opens the same keys", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const options = { dataDir: dir, passphrase, network: regtest }
      const first = yield* withKeystore(options, (ks) =>
        Effect.gen(function* () {
          expect(yield* ks.count).toBe(0)
          const indexes = [yield* ks.nextIndex, yield* ks.nextIndex, yield* ks.nextIndex]
          expect(indexes).toEqual([0, 1, 2])
          return {
            count: yield* ks.count,
            pubs: indexes.map((i) => toHex(ks.publicKey(i))),
            secret: toHex(ks.secretKey(2)),
          }
        }),
      )
      expect(first.count).toBe(3)
      const file = readFile(dir)
      expect(file.encryption).toBe("scrypt-aes-256-gcm")
      expect(file.nextIndex).toBe(3)
      // the seed is not in the file in the clear
      expect(JSON.stringify(file)).not.toContain(first.secret)

      const second = yield* withKeystore(options, (ks) =>
        Effect.gen(function* () {
          const count = yield* ks.count
          const pubs = [0, 1, 2].map((i) => toHex(ks.publicKey(i)))
          const secret = toHex(ks.secretKey(2))
          const next = yield* ks.nextIndex
          return { count, pubs, secret, next }
        }),
      )
      expect(second).toEqual({ ...first, next: 3 })
      // public keys are the BIP340 keys of the secret keys
      expect(first.pubs[2]).toBe(toHex(backend.publicKey(fromHex(first.secret)!)))
    }),
  )

  it.scoped("a wrong passphrase, or none, is a typed error, never a crash", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      yield* withKeystore({ dataDir: dir, passphrase, network: regtest }, (ks) => ks.nextIndex)
      const wrong = yield* openError({ dataDir: dir, passphrase: "Tr0ub4dor&3", network: regtest })
      expect(wrong._tag).toBe("BadPassphrase")
      expect(wrong.message).toContain("wrong passphrase")
      const none = yield* openError({ dataDir: dir, network: regtest })
      expect(none._tag).toBe("WalletLocked")
      expect(none.message).toContain("FIBERCOIN_WALLET_PASSPHRASE")
      const empty = yield* openError({ dataDir: dir, passphrase: "", network: regtest })
      expect(empty._tag).toBe("WalletLocked")
    }),
  )

  it.scoped("a corrupt or unknown file is a typed error naming the problem", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      yield* withKeystore({ dataDir: dir, passphrase, network: regtest }, (ks) => ks.nextIndex)
      const good = readFile(dir)
      const open = () => openError({ dataDir: dir, passphrase, network: regtest })

      writeFile(dir, "{ not json")
      const notJson = yield* open()
      expect(notJson._tag).toBe("WalletFileInvalid")

      writeFile(dir, { ...good, comment: "hello" })
      const extra = yield* open()
      expect(extra._tag).toBe("WalletFileInvalid")
      expect(extra.message).toContain("comment")

      writeFile(dir, { ...good, nextIndex: "3" })
      const wrongType = yield* open()
      expect(wrongType._tag).toBe("WalletFileInvalid")
      expect(wrongType.message).toContain("nextIndex")

      writeFile(dir, { ...good, version: 2 })
      expect((yield* open()).message).toContain("version")

      writeFile(dir, { ...good, kdf: { ...(good.kdf as object), N: 2 ** 40 } })
      expect((yield* open()).message).toContain("kdf.N")

      // one flipped bit of the ciphertext: AES-GCM's tag catches it
      const ct = good.ciphertext as string
      writeFile(dir, { ...good, ciphertext: `${ct[0] === "0" ? "1" : "0"}${ct.slice(1)}` })
      expect((yield* open())._tag).toBe("BadPassphrase")

      writeFile(dir, good)
      expect(yield* withKeystore({ dataDir: dir, passphrase, network: regtest }, (ks) => ks.count)).toBe(1)
    }),
  )

  it.scoped("the file is mode 0600, written atomically (no temporary file is left behind)", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = path.join(dir, WALLET_FILE)
      yield* withKeystore({ dataDir: dir, passphrase, network: regtest }, (ks) =>
        Effect.gen(function* () {
          expect(fs.statSync(file).mode & 0o777).toBe(0o600)
          yield* ks.nextIndex
          expect(fs.statSync(file).mode & 0o777).toBe(0o600)
        }),
      )
      expect(fs.readdirSync(dir)).toEqual([WALLET_FILE])
      // a stale temporary file with a loose mode does not loosen the next write
      fs.writeFileSync(`${file}.tmp`, "stale", { mode: 0o644 })
      yield* withKeystore({ dataDir: dir, passphrase, network: regtest }, (ks) => ks.nextIndex)
      expect(fs.statSync(file).mode & 0o777).toBe(0o600)
      expect(readFile(dir).nextIndex).toBe(2)
    }),
  )

  it.scoped("regtest without a passphrase stores the seed unencrypted and says so loudly", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const { value: keys, warnings } = yield* captureLogs(
        withKeystore({ dataDir: dir, network: regtest }, (ks) =>
          Effect.gen(function* () {
            yield* ks.nextIndex
            return [0, 1, 5].map((i) => ({ secret: toHex(ks.secretKey(i)), pub: toHex(ks.publicKey(i)) }))
          }),
        ),
      )
      expect(warnings.some((w) => w.includes("NOT encrypted"))).toBe(true)
      const file = readFile(dir)
      expect(file.encryption).toBe("none")
      // the keys are exactly the derivation from the stored seed
      const seed = fromHex(file.seed as string)!
      expect(keys).toEqual(
        [0, 1, 5].map((i) => {
          const secret = deriveSecretKey(seed, i)
          return { secret: toHex(secret), pub: toHex(backend.publicKey(secret)) }
        }),
      )
      // reopening warns again
      const again = yield* captureLogs(withKeystore({ dataDir: dir, network: regtest }, (ks) => ks.count))
      expect(again.value).toBe(1)
      expect(again.warnings.some((w) => w.includes("NOT encrypted"))).toBe(true)
    }),
  )

  it.scoped("a new wallet on a public network needs a passphrase", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const error = yield* openError({ dataDir: dir, network: testnet })
      expect(error._tag).toBe("PassphraseRequired")
      expect(fs.existsSync(path.join(dir, WALLET_FILE))).toBe(false)
      expect(yield* withKeystore({ dataDir: dir, passphrase, network: testnet }, (ks) => ks.nextIndex)).toBe(
        0,
      )
    }),
  )

  it.effect("a memory-only keystore has its own random seed and persists nothing", () =>
    Effect.gen(function* () {
      const a = yield* withKeystore({ network: regtest }, (ks) => Effect.succeed(toHex(ks.publicKey(0))))
      const b = yield* withKeystore({ network: regtest }, (ks) =>
        Effect.gen(function* () {
          expect([yield* ks.nextIndex, yield* ks.nextIndex]).toEqual([0, 1])
          return toHex(ks.publicKey(0))
        }),
      )
      expect(a).not.toBe(b)
    }),
  )
})

describe("deriveSecretKey: key i of a seed", () => {
  const seed = Uint8Array.from({ length: 32 }, (_, i) => i)

  it("is hash_FiberWalletKey(seed ‖ u32le i)", () => {
    for (const i of [0, 1, 255, 256, 0xffffffff]) {
      const data = new Uint8Array(36)
      data.set(seed)
      new DataView(data.buffer).setUint32(32, i, true)
      expect(toHex(deriveSecretKey(seed, i))).toBe(toHex(taggedHash("FiberWalletKey", data)))
    }
  })

  it("is deterministic, distinct per index and per seed, and a valid BIP340 secret key", () => {
    const keys = Array.from({ length: 50 }, (_, i) => toHex(deriveSecretKey(seed, i)))
    expect(new Set(keys).size).toBe(50)
    expect(toHex(deriveSecretKey(seed, 7))).toBe(keys[7])
    const other = new Uint8Array(seed)
    other[0] = 1
    expect(toHex(deriveSecretKey(other, 7))).not.toBe(keys[7])
    for (const k of keys) expect(backend.publicKey(fromHex(k)!).length).toBe(32)
  })

  it("refuses an index outside u32", () => {
    expect(() => deriveSecretKey(seed, -1)).toThrow(RangeError)
    expect(() => deriveSecretKey(seed, 2 ** 32)).toThrow(RangeError)
    expect(() => deriveSecretKey(seed, 1.5)).toThrow(RangeError)
  })
})
