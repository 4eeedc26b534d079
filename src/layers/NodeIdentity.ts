import * as fs from "node:fs"
import * as path from "node:path"
import { Context, Effect, Layer, Schema } from "effect"
import { fromHex, toHex } from "../schema/hex.js"
import * as Entropy from "./Entropy.js"
import { writePrivateFileAtomic } from "./files.js"
import { Signatures } from "./Signatures.js"

/**
 * NodeIdentity is who this node is on the UDP side (issue 8): a BIP340 secret key whose x-only public
 * key is the node key (what rendezvous registrations are signed with and introductions ask for), and
 * an X25519 secret for UDP session key agreement. It is not a wallet key and pays nothing.
 *
 * On disk (`layerFile`) both live in `<dataDir>/nodekey`: one line of 128 lowercase hex characters,
 * the 32-byte BIP340 secret key then the 32-byte X25519 secret, mode 0600. The file is made once,
 * atomically (temporary file, fsync, rename); a file that does not read back as exactly that is an
 * error naming it, never replaced, since replacing it would silently change the node's identity.
 */

/** NODE_KEY_FILE is the identity's file name in the data directory. */
export const NODE_KEY_FILE = "nodekey"

/** SECP256K1_ORDER is n, the secp256k1 group order: a secret key is a scalar in 1..n-1. */
const SECP256K1_ORDER = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n

/** NodeIdentityError: the key file could not be read, written, or holds no valid identity. */
export class NodeIdentityError extends Schema.TaggedError<NodeIdentityError>()("NodeIdentityError", {
  path: Schema.String,
  detail: Schema.String,
}) {
  override get message(): string {
    return `node identity ${this.path}: ${this.detail}`
  }
}

/** NodeIdentityService holds the node's secrets and its public node key. */
export interface NodeIdentityService {
  /** secretKey is the BIP340 secret key (32 bytes, a scalar in 1..n-1) */
  readonly secretKey: Uint8Array
  /** nodeKey is secretKey's x-only public key (32 bytes) */
  readonly nodeKey: Uint8Array
  /** sessionSecret is the X25519 secret of UDP sessions (32 bytes; see UdpSession.sessionKeysFromSecret) */
  readonly sessionSecret: Uint8Array
}

export class NodeIdentity extends Context.Tag("fibercoin/NodeIdentity")<
  NodeIdentity,
  NodeIdentityService
>() {}

/** isValidSecretKey is whether 32 bytes are a secp256k1 scalar in 1..n-1 (BIP340's secret key range). */
export const isValidSecretKey = (key: Uint8Array): boolean => {
  if (key.length !== 32) return false
  const k = BigInt(`0x${toHex(key)}`)
  return k > 0n && k < SECP256K1_ORDER
}

/**
 * fresh draws a valid identity from the Entropy service: the OS CSPRNG in a node, a seeded stream in
 * a simulation (Effect's Random is a seeded PRNG, never fit for keys).
 */
const fresh = Effect.gen(function* () {
  let secretKey = yield* Entropy.bytes(32)
  // out of range with probability ~2^-128; bounded anyway
  for (let i = 0; i < 8 && !isValidSecretKey(secretKey); i++) secretKey = yield* Entropy.bytes(32)
  return { secretKey, sessionSecret: yield* Entropy.bytes(32) }
})

/** encodeKeyFile is the file's text for a pair of secrets. */
const encodeKeyFile = (secretKey: Uint8Array, sessionSecret: Uint8Array): string =>
  `${toHex(secretKey)}${toHex(sessionSecret)}\n`

/** decodeKeyFile reads the file's text back; a string saying what is wrong when it is not a valid identity. */
const decodeKeyFile = (
  text: string,
): { readonly secretKey: Uint8Array; readonly sessionSecret: Uint8Array } | string => {
  const line = text.trim()
  if (!/^[0-9a-fA-F]{128}$/.test(line)) return "expected 128 hex characters (secret key, then session secret)"
  const bytes = fromHex(line.toLowerCase())
  if (bytes === undefined) return "not hex"
  const secretKey = bytes.slice(0, 32)
  if (!isValidSecretKey(secretKey)) return "the secret key is out of range (0 or at least the group order)"
  return { secretKey, sessionSecret: bytes.slice(32, 64) }
}

const make = (secretKey: Uint8Array, sessionSecret: Uint8Array) =>
  Effect.map(
    Signatures,
    (sigs): NodeIdentityService => ({
      secretKey,
      nodeKey: sigs.publicKey(secretKey),
      sessionSecret,
    }),
  )

/**
 * layerFrom is a fixed identity (tests and simulations: deterministic). The 64 bytes are the secret
 * key then the session secret; a secret key out of range is a defect (a broken test fixture).
 */
export const layerFrom = (secret: Uint8Array): Layer.Layer<NodeIdentity, never, Signatures> =>
  Layer.effect(
    NodeIdentity,
    Effect.suspend(() => {
      if (secret.length !== 64) return Effect.dieMessage("NodeIdentity.layerFrom: 64 bytes expected")
      const secretKey = secret.slice(0, 32)
      if (!isValidSecretKey(secretKey))
        return Effect.dieMessage("NodeIdentity.layerFrom: secret key out of range")
      return make(secretKey, secret.slice(32, 64))
    }),
  )

/**
 * layerRandom is a fresh identity from Entropy each time it is built (a node with memory storage keeps
 * nothing); under a seeded Entropy the same seed gives the same identity.
 */
export const layerRandom: Layer.Layer<NodeIdentity, never, Signatures> = Layer.effect(
  NodeIdentity,
  Effect.flatMap(fresh, (s) => make(s.secretKey, s.sessionSecret)),
)

const attempt = <A>(file: string, f: () => A): Effect.Effect<A, NodeIdentityError> =>
  Effect.try({
    try: f,
    catch: (e) => new NodeIdentityError({ path: file, detail: e instanceof Error ? e.message : String(e) }),
  })

/** writeNew creates `file` atomically with mode 0600: a temporary file, fsync, rename, fsync of the directory. */
const writeNew = (file: string, text: string) =>
  attempt(file, () => {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 })
    writePrivateFileAtomic(file, text)
  })

/**
 * layerFile reads the identity from `<dataDir>/nodekey`, or creates it (mode 0600) when there is none.
 * A file that exists but is not a valid identity fails the layer with a NodeIdentityError naming it.
 */
export const layerFile = (dataDir: string): Layer.Layer<NodeIdentity, NodeIdentityError, Signatures> =>
  Layer.effect(
    NodeIdentity,
    Effect.gen(function* () {
      const file = path.join(dataDir, NODE_KEY_FILE)
      const text = yield* attempt(file, () =>
        fs.existsSync(file) ? fs.readFileSync(file, "utf8") : undefined,
      )
      if (text === undefined) {
        const s = yield* fresh
        yield* writeNew(file, encodeKeyFile(s.secretKey, s.sessionSecret))
        return yield* make(s.secretKey, s.sessionSecret)
      }
      const decoded = decodeKeyFile(text)
      if (typeof decoded === "string")
        return yield* new NodeIdentityError({
          path: file,
          detail: `corrupt (${decoded}); move it away to make a new identity`,
        })
      return yield* make(decoded.secretKey, decoded.sessionSecret)
    }),
  )
