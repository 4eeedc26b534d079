import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { Context, Effect, Either, Layer, ParseResult, Ref, Schema } from "effect"
import { taggedHash } from "../consensus/hash.js"
import type { NetworkParams } from "../consensus/params.js"
import { fromHex, toHex } from "../schema/hex.js"
import * as Entropy from "./Entropy.js"
import { writePrivateFileAtomic } from "./files.js"
import { Signatures } from "./Signatures.js"

/**
 * The wallet's keystore: one 32-byte seed, from which key i is derived deterministically, kept in
 * `<dataDir>/wallet.json` (mode 0600, written atomically), encrypted with scrypt → AES-256-GCM under the
 * operator's passphrase.
 *
 * Keys never leave the wallet. No public function returns the seed; `secretKey` exists only for the
 * Wallet actor, which signs with it on its own fiber and wipes the copy afterwards. No RPC may return
 * a secret key or the seed (there is deliberately no dumpprivkey / dumpwallet).
 */

/** WALLET_FILE is the keystore's file name inside the data directory. */
export const WALLET_FILE = "wallet.json"

/** KEY_TAG domain-separates wallet key derivation from every other tagged hash (BIP340 tagging). */
export const KEY_TAG = "FiberWalletKey"

/** SEED_BYTES: the seed is 256 bits from Entropy (the OS CSPRNG in a node). */
const SEED_BYTES = 32
/** SALT_BYTES, NONCE_BYTES, TAG_BYTES: scrypt salt, AES-GCM nonce (96 bits, NIST SP 800-38D) and tag. */
const SALT_BYTES = 16
const NONCE_BYTES = 12
const TAG_BYTES = 16

/**
 * defaultKdf: scrypt with N = 2^15, r = 8, p = 1 (32 MiB, about 60 ms on a 2-core CI machine; the
 * passphrase is stretched once per start, so an offline guess costs an attacker the same).
 */
export const defaultKdf = { N: 2 ** 15, r: 8, p: 1 } as const

/** MAX_KEY_INDEX: key indexes are u32, as the derivation encodes them. */
export const MAX_KEY_INDEX = 0xffffffff

/** AAD binds the ciphertext to this file format, so a seed blob cannot be replayed into another format. */
const AAD = new TextEncoder().encode("fibercoin-wallet/1")

/** CURVE_ORDER is n, the order of secp256k1's group: a BIP340 secret key is in [1, n-1]. */
const CURVE_ORDER = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n

// ---------------------------------------------------------------------------------------------------
// Errors

/** WalletLocked: wallet.json is encrypted and no passphrase was given (config or FIBERCOIN_WALLET_PASSPHRASE). */
export class WalletLocked extends Schema.TaggedError<WalletLocked>()("WalletLocked", {
  path: Schema.String,
}) {
  override get message(): string {
    return `wallet ${this.path} is encrypted: give its passphrase (config wallet passphrase or FIBERCOIN_WALLET_PASSPHRASE)`
  }
}

/** BadPassphrase: the passphrase does not open wallet.json (AES-GCM authentication failed). */
export class BadPassphrase extends Schema.TaggedError<BadPassphrase>()("BadPassphrase", {
  path: Schema.String,
}) {
  override get message(): string {
    return `wrong passphrase for wallet ${this.path} (or the file was altered)`
  }
}

/** PassphraseRequired: a new wallet on a public network must be encrypted; only regtest may run without. */
export class PassphraseRequired extends Schema.TaggedError<PassphraseRequired>()("PassphraseRequired", {
  path: Schema.String,
  network: Schema.String,
}) {
  override get message(): string {
    return `creating wallet ${this.path} on ${this.network} needs a passphrase (config or FIBERCOIN_WALLET_PASSPHRASE); unencrypted wallets are allowed on regtest only`
  }
}

/** WalletFileInvalid: wallet.json is not a wallet file this version reads; `problem` names the field. */
export class WalletFileInvalid extends Schema.TaggedError<WalletFileInvalid>()("WalletFileInvalid", {
  path: Schema.String,
  problem: Schema.String,
}) {
  override get message(): string {
    return `wallet file ${this.path} is invalid: ${this.problem}`
  }
}

/** WalletFileError: reading or writing wallet.json failed (permissions, a full disk, …). */
export class WalletFileError extends Schema.TaggedError<WalletFileError>()("WalletFileError", {
  path: Schema.String,
  operation: Schema.String,
  detail: Schema.String,
}) {
  override get message(): string {
    return `wallet file ${this.path}: ${this.operation} failed: ${this.detail}`
  }
}

/** KeystoreError is every way opening or updating the keystore can fail. */
export type KeystoreError =
  | WalletLocked
  | BadPassphrase
  | PassphraseRequired
  | WalletFileInvalid
  | WalletFileError

// ---------------------------------------------------------------------------------------------------
// The file

const hexField = (bytes: number) =>
  Schema.String.pipe(
    Schema.filter((s) => s.length === bytes * 2 && /^[0-9a-f]*$/.test(s), {
      message: () => `expected ${bytes} bytes as lower-case hex`,
    }),
  )

const NextIndex = Schema.Number.pipe(Schema.int(), Schema.between(0, MAX_KEY_INDEX))

/**
 * Kdf bounds scrypt's parameters (a power-of-two N in 2^10..2^20, r ≤ 16, p ≤ 16, at most 1 GiB of
 * memory), so an altered file cannot make the node allocate without limit.
 */
const Kdf = Schema.Struct({
  N: Schema.Number.pipe(
    Schema.int(),
    Schema.filter((n) => n >= 2 ** 10 && n <= 2 ** 20 && (n & (n - 1)) === 0, {
      message: () => "expected a power of two from 1024 to 1048576",
    }),
  ),
  r: Schema.Number.pipe(Schema.int(), Schema.between(1, 16)),
  p: Schema.Number.pipe(Schema.int(), Schema.between(1, 16)),
  salt: hexField(SALT_BYTES),
}).pipe(
  Schema.filter((k) => 128 * k.N * k.r <= 2 ** 30, { message: () => "scrypt would need more than 1 GiB" }),
)
type Kdf = typeof Kdf.Type

const EncryptedFile = Schema.Struct({
  version: Schema.Literal(1),
  encryption: Schema.Literal("scrypt-aes-256-gcm"),
  kdf: Kdf,
  nonce: hexField(NONCE_BYTES),
  /** the seed encrypted, then the 16-byte GCM tag */
  ciphertext: hexField(SEED_BYTES + TAG_BYTES),
  nextIndex: NextIndex,
})

/** PlainFile is a regtest wallet without a passphrase: the seed in the clear (its own field name says so). */
const PlainFile = Schema.Struct({
  version: Schema.Literal(1),
  encryption: Schema.Literal("none"),
  seed: hexField(SEED_BYTES),
  nextIndex: NextIndex,
})

/**
 * WalletFile is wallet.json (version 1), hex strings for bytes:
 * `{ version: 1, encryption: "scrypt-aes-256-gcm", kdf: { N, r, p, salt }, nonce, ciphertext, nextIndex }`,
 * or on regtest without a passphrase `{ version: 1, encryption: "none", seed, nextIndex }`. Unknown
 * keys are an error, not ignored: a file this version does not fully understand is not rewritten.
 */
export const WalletFile = Schema.Union(EncryptedFile, PlainFile)
export type WalletFile = typeof WalletFile.Type

const WalletFileJson = Schema.parseJson(WalletFile, { space: 2 })
const encodeFile = Schema.encodeEither(WalletFileJson)

/** Header is read first, so the errors that follow name the fields of the one format the file claims. */
const Header = Schema.parseJson(
  Schema.Struct({ version: Schema.Literal(1), encryption: Schema.Literal("scrypt-aes-256-gcm", "none") }),
)
const strict = { onExcessProperty: "error", errors: "all" } as const
const decodeHeader = Schema.decodeUnknownEither(Header, { errors: "all" })
const decodeEncrypted = Schema.decodeUnknownEither(Schema.parseJson(EncryptedFile), strict)
const decodePlain = Schema.decodeUnknownEither(Schema.parseJson(PlainFile), strict)

/** decodeFile parses wallet.json: JSON, then version and encryption, then exactly that format's fields. */
const decodeFile = (text: string): Either.Either<WalletFile, ParseResult.ParseError> =>
  Either.flatMap(
    decodeHeader(text),
    (header): Either.Either<WalletFile, ParseResult.ParseError> =>
      header.encryption === "none" ? decodePlain(text) : decodeEncrypted(text),
  )

/** problemOf renders a parse failure as `path: message` lines, naming the field at fault. */
const problemOf = (error: ParseResult.ParseError): string =>
  ParseResult.ArrayFormatter.formatErrorSync(error)
    .map((issue) => {
      const where = issue.path.length === 0 ? "(top level)" : issue.path.map(String).join(".")
      return `${where}: ${issue.message}`
    })
    .join("; ")

// ---------------------------------------------------------------------------------------------------
// Derivation (pure)

const bytesToBigInt = (b: Uint8Array): bigint => BigInt(`0x${toHex(b)}`)

/**
 * deriveSecretKey is key `index` of `seed`: k = hash_FiberWalletKey(seed ‖ u32le index) read as a
 * 256-bit big-endian integer. If k is 0 or ≥ n (the group order; chance about 2^-128), the derivation
 * retries with hash_FiberWalletKey(seed ‖ u32le index ‖ u32le attempt) for attempt = 1, 2, … until
 * k ∈ [1, n-1]: never reduced mod n, so every key stays uniform. Pure, any fiber; exported for test
 * vectors (it needs the seed, which nothing public exposes).
 */
export const deriveSecretKey = (seed: Uint8Array, index: number): Uint8Array => {
  if (!Number.isInteger(index) || index < 0 || index > MAX_KEY_INDEX) {
    throw new RangeError(`a key index is an integer in [0, ${MAX_KEY_INDEX}], got ${index}`)
  }
  const data = new Uint8Array(seed.length + 8)
  const view = new DataView(data.buffer)
  data.set(seed, 0)
  view.setUint32(seed.length, index, true)
  try {
    for (let attempt = 0; ; attempt++) {
      view.setUint32(seed.length + 4, attempt, true)
      const k = taggedHash(KEY_TAG, attempt === 0 ? data.subarray(0, seed.length + 4) : data)
      const v = bytesToBigInt(k)
      if (v !== 0n && v < CURVE_ORDER) return new Uint8Array(k)
      k.fill(0)
    }
  } finally {
    data.fill(0)
  }
}

// ---------------------------------------------------------------------------------------------------
// Encryption

/**
 * stretch runs scrypt off the event loop (node's thread pool). The passphrase is NFKD-normalised UTF-8
 * (as BIP39), so the same words typed on another system open the same file.
 */
const stretch = (walletPath: string, passphrase: string, kdf: Kdf): Effect.Effect<Buffer, WalletFileError> =>
  Effect.async<Buffer, WalletFileError>((resume) => {
    const salt = Buffer.from(kdf.salt, "hex")
    crypto.scrypt(
      Buffer.from(passphrase.normalize("NFKD"), "utf8"),
      salt,
      32,
      { N: kdf.N, r: kdf.r, p: kdf.p, maxmem: 128 * kdf.r * (kdf.N + kdf.p + 2) + 1024 * 1024 },
      (error, key) =>
        resume(
          error === null
            ? Effect.succeed(key)
            : Effect.fail(
                new WalletFileError({ path: walletPath, operation: "scrypt", detail: error.message }),
              ),
        ),
    )
  })

const seal = (key: Buffer, nonce: Uint8Array, seed: Uint8Array): Uint8Array => {
  const cipher = crypto.createCipheriv("aes-256-gcm", key, nonce)
  cipher.setAAD(AAD)
  const body = Buffer.concat([cipher.update(seed), cipher.final()])
  return Buffer.concat([body, cipher.getAuthTag()])
}

const open = (key: Buffer, nonce: Uint8Array, sealed: Uint8Array): Either.Either<Uint8Array, "auth"> => {
  const decipher = crypto.createDecipheriv("aes-256-gcm", key, nonce)
  decipher.setAAD(AAD)
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES))
  try {
    return Either.right(
      new Uint8Array(
        Buffer.concat([decipher.update(sealed.subarray(0, sealed.length - TAG_BYTES)), decipher.final()]),
      ),
    )
  } catch {
    return Either.left("auth")
  }
}

// ---------------------------------------------------------------------------------------------------
// Files

const describe = (e: unknown): string => (e instanceof Error ? e.message : String(e))

const attempt = <A>(walletPath: string, operation: string, f: () => A): Effect.Effect<A, WalletFileError> =>
  Effect.try({
    try: f,
    catch: (e) => new WalletFileError({ path: walletPath, operation, detail: describe(e) }),
  })

/**
 * writeAtomic replaces `file` so that a crash at any instant leaves the old file or the new one, never
 * a torn one: write a temporary file created 0600 (and chmod'ed, in case a stale one was left with
 * another mode), fsync it, rename it over the old, fsync the directory so the rename itself is durable.
 */
const writeAtomic = (file: string, text: string): Effect.Effect<void, WalletFileError> =>
  attempt(file, "write", () => writePrivateFileAtomic(file, text))

/**
 * randomBytes draws from the Entropy service: the OS CSPRNG in a node, a seeded stream in a simulation.
 * Effect's `Random` is a seeded PRNG, never fit for key material.
 */
const randomBytes = (n: number): Effect.Effect<Uint8Array> => Entropy.bytes(n)

// ---------------------------------------------------------------------------------------------------
// Service

/**
 * KeystoreService is the wallet's keys. Any fiber may call it, but only the Wallet actor should:
 * `secretKey` hands out key material, and nothing outside the wallet (no RPC) may ever see it.
 */
export interface KeystoreService {
  /**
   * secretKey is key `index`'s BIP340 secret key, a fresh copy the caller should wipe (`fill(0)`) once
   * it has signed. Throws a RangeError for an index outside [0, 2^32-1] (a caller bug). For the Wallet
   * actor only.
   */
  readonly secretKey: (index: number) => Uint8Array
  /** publicKey is key `index`'s 32-byte x-only public key (cached). Throws like secretKey. */
  readonly publicKey: (index: number) => Uint8Array
  /**
   * nextIndex reserves the next unused key index and persists the new count before answering, so a
   * crash never hands out the same address twice. Concurrent calls are serialised.
   */
  readonly nextIndex: Effect.Effect<number, WalletFileError>
  /** count is how many key indexes have been reserved (indexes 0 .. count-1). */
  readonly count: Effect.Effect<number>
}

/** Keystore is the service tag of the wallet's keystore. */
export class Keystore extends Context.Tag("fibercoin/Keystore")<Keystore, KeystoreService>() {}

/** KeystoreOptions: where the keystore lives, how it is protected, and for which network. */
export interface KeystoreOptions {
  /** the data directory holding wallet.json; undefined = keys in memory only, lost at exit (tests) */
  readonly dataDir?: string | undefined
  /**
   * the passphrase (the caller reads config or FIBERCOIN_WALLET_PASSPHRASE; this layer never reads the
   * environment). An empty string counts as none.
   */
  readonly passphrase?: string | undefined
  readonly network: NetworkParams
  /** scrypt parameters for a new wallet; default `defaultKdf` (tests may lower N) */
  readonly kdf?: { readonly N: number; readonly r: number; readonly p: number } | undefined
}

interface Opened {
  readonly seed: Uint8Array
  readonly nextIndex: number
  /** the file as read or created; rewritten with the same ciphertext and a new nextIndex when the count advances */
  readonly file: WalletFile | undefined
}

const unencryptedWarning = (walletPath: string) =>
  Effect.logWarning(
    `wallet ${walletPath} is NOT encrypted (regtest, no passphrase given): anyone who can read this file can spend its coins`,
  )

/** createFile makes a new wallet: a fresh seed, sealed under the passphrase unless regtest has none. */
const createFile = (
  walletPath: string,
  options: KeystoreOptions,
  passphrase: string | undefined,
): Effect.Effect<Opened, KeystoreError> =>
  Effect.gen(function* () {
    const seed = yield* randomBytes(SEED_BYTES)
    let file: WalletFile
    if (passphrase === undefined) {
      if (options.network.name !== "regtest") {
        return yield* new PassphraseRequired({ path: walletPath, network: options.network.name })
      }
      yield* unencryptedWarning(walletPath)
      file = { version: 1, encryption: "none", seed: toHex(seed), nextIndex: 0 }
    } else {
      const params = options.kdf ?? defaultKdf
      const kdf: Kdf = { N: params.N, r: params.r, p: params.p, salt: toHex(yield* randomBytes(SALT_BYTES)) }
      const kdfOk = Schema.decodeUnknownEither(Kdf)(kdf)
      if (Either.isLeft(kdfOk)) {
        return yield* new WalletFileInvalid({ path: walletPath, problem: `kdf: ${problemOf(kdfOk.left)}` })
      }
      const nonce = yield* randomBytes(NONCE_BYTES)
      const key = yield* stretch(walletPath, passphrase, kdf)
      const sealed = seal(key, nonce, seed)
      key.fill(0)
      file = {
        version: 1,
        encryption: "scrypt-aes-256-gcm",
        kdf,
        nonce: toHex(nonce),
        ciphertext: toHex(sealed),
        nextIndex: 0,
      }
    }
    yield* attempt(walletPath, "mkdir", () =>
      fs.mkdirSync(path.dirname(walletPath), { recursive: true, mode: 0o700 }),
    )
    yield* writeFile(walletPath, file)
    yield* Effect.logInfo(`wallet: created ${walletPath} (${file.encryption})`)
    return { seed, nextIndex: 0, file }
  })

const writeFile = (walletPath: string, file: WalletFile): Effect.Effect<void, WalletFileError> =>
  Effect.gen(function* () {
    const text = encodeFile(file)
    if (Either.isLeft(text)) {
      return yield* Effect.die(new Error(`wallet file does not encode: ${problemOf(text.left)}`))
    }
    yield* writeAtomic(walletPath, `${text.right}\n`)
  })

/** openFile reads, validates and (if encrypted) decrypts an existing wallet.json. */
const openFile = (
  walletPath: string,
  text: string,
  options: KeystoreOptions,
  passphrase: string | undefined,
): Effect.Effect<Opened, KeystoreError> =>
  Effect.gen(function* () {
    const decoded = decodeFile(text)
    if (Either.isLeft(decoded)) {
      return yield* new WalletFileInvalid({ path: walletPath, problem: problemOf(decoded.left) })
    }
    const file = decoded.right
    if (file.encryption === "none") {
      if (options.network.name !== "regtest") {
        yield* Effect.logWarning(
          `wallet ${walletPath} is NOT encrypted on ${options.network.name}: anyone who can read it can spend its coins`,
        )
      } else {
        yield* unencryptedWarning(walletPath)
      }
      if (passphrase !== undefined) {
        yield* Effect.logWarning(
          `wallet ${walletPath}: a passphrase was given but this wallet is not encrypted`,
        )
      }
      return { seed: fromHex(file.seed)!, nextIndex: file.nextIndex, file }
    }
    if (passphrase === undefined) return yield* new WalletLocked({ path: walletPath })
    const key = yield* stretch(walletPath, passphrase, file.kdf)
    const seed = open(key, fromHex(file.nonce)!, fromHex(file.ciphertext)!)
    key.fill(0)
    if (Either.isLeft(seed)) return yield* new BadPassphrase({ path: walletPath })
    return { seed: seed.right, nextIndex: file.nextIndex, file }
  })

/**
 * make opens the keystore: in memory (no dataDir: a fresh random seed), or `<dataDir>/wallet.json`,
 * created on first use. A group- or world-readable wallet file is logged as a warning. The seed, salt
 * and nonce come from the Entropy service (the OS CSPRNG unless a simulation seeds it): Effect's `Random` is a
 * seeded PRNG for simulations, never for key material. Scrypt runs on node's thread pool, once per open.
 */
export const make = (options: KeystoreOptions): Effect.Effect<KeystoreService, KeystoreError, Signatures> =>
  Effect.gen(function* () {
    const backend = yield* Signatures
    const passphrase =
      options.passphrase === undefined || options.passphrase === "" ? undefined : options.passphrase
    const walletPath = options.dataDir === undefined ? undefined : path.join(options.dataDir, WALLET_FILE)

    let opened: Opened
    if (walletPath === undefined) {
      opened = { seed: yield* randomBytes(SEED_BYTES), nextIndex: 0, file: undefined }
    } else {
      const existing = yield* attempt(walletPath, "read", () =>
        fs.existsSync(walletPath)
          ? { text: fs.readFileSync(walletPath, "utf8"), mode: fs.statSync(walletPath).mode }
          : undefined,
      )
      if (existing === undefined) {
        opened = yield* createFile(walletPath, options, passphrase)
      } else {
        if ((existing.mode & 0o077) !== 0) {
          yield* Effect.logWarning(
            `wallet ${walletPath} is readable by other users (mode ${(existing.mode & 0o777).toString(8)}); chmod 600 it`,
          )
        }
        opened = yield* openFile(walletPath, existing.text, options, passphrase)
      }
    }

    const seed = opened.seed
    const file = opened.file
    const counter = yield* Ref.make(opened.nextIndex)
    const lock = yield* Effect.makeSemaphore(1)
    const publicKeys = new Map<number, Uint8Array>()

    const secretKey = (index: number): Uint8Array => deriveSecretKey(seed, index)
    const publicKey = (index: number): Uint8Array => {
      let pub = publicKeys.get(index)
      if (pub === undefined) {
        const secret = secretKey(index)
        pub = new Uint8Array(backend.publicKey(secret))
        secret.fill(0)
        publicKeys.set(index, pub)
      }
      return new Uint8Array(pub)
    }

    const nextIndex = lock.withPermits(1)(
      Effect.gen(function* () {
        const index = yield* Ref.get(counter)
        if (index >= MAX_KEY_INDEX) {
          return yield* new WalletFileError({
            path: walletPath ?? "(memory)",
            operation: "reserve key",
            detail: "every key index is used",
          })
        }
        if (walletPath !== undefined && file !== undefined) {
          yield* writeFile(walletPath, { ...file, nextIndex: index + 1 })
        }
        yield* Ref.set(counter, index + 1)
        return index
      }),
    )

    return { secretKey, publicKey, nextIndex, count: Ref.get(counter) } satisfies KeystoreService
  })

/** layer provides the Keystore; it needs the Signatures backend to derive public keys. */
export const layer = (options: KeystoreOptions): Layer.Layer<Keystore, KeystoreError, Signatures> =>
  Layer.effect(Keystore, make(options))
