import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer } from "effect"
import {
  isValidSecretKey,
  layerFile,
  layerFrom,
  layerRandom,
  NODE_KEY_FILE,
  NodeIdentity,
} from "../../src/layers/NodeIdentity.js"
import { layerDefault, type Signatures } from "../../src/layers/Signatures.js"
import { toHex } from "../../src/schema/hex.js"

/** tempDir is a fresh data directory, removed when the scope closes. */
const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "fibercoin-nodekey-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })),
)

/** open builds the identity of a layer (as a node start does) and answers it. */
const open = <E>(layer: Layer.Layer<NodeIdentity, E, Signatures>) =>
  Effect.provide(NodeIdentity, layer.pipe(Layer.provide(layerDefault)))

const ORDER = "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"

describe("NodeIdentity", () => {
  it.scoped("is created once in <dataDir>/nodekey with mode 0600 and is the same after a restart", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const first = yield* open(layerFile(dir))
      const file = path.join(dir, NODE_KEY_FILE)
      expect((fs.statSync(file).mode & 0o777).toString(8)).toBe("600")
      expect(fs.existsSync(`${file}.tmp`)).toBe(false)
      expect(fs.readFileSync(file, "utf8")).toBe(`${toHex(first.secretKey)}${toHex(first.sessionSecret)}\n`)
      const second = yield* open(layerFile(dir))
      expect(toHex(second.secretKey)).toBe(toHex(first.secretKey))
      expect(toHex(second.nodeKey)).toBe(toHex(first.nodeKey))
      expect(toHex(second.sessionSecret)).toBe(toHex(first.sessionSecret))
      expect(first.nodeKey.length).toBe(32)
      expect(isValidSecretKey(first.secretKey)).toBe(true)
    }),
  )

  it.scoped("refuses a corrupt key file, naming it, and leaves it as it was", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = path.join(dir, NODE_KEY_FILE)
      for (const bad of [
        "not a key\n",
        "ab".repeat(63),
        `${"00".repeat(32)}${"11".repeat(32)}`,
        `${ORDER}${"11".repeat(32)}`,
      ]) {
        fs.writeFileSync(file, bad, { mode: 0o600 })
        const exit = yield* Effect.exit(open(layerFile(dir)))
        expect(Exit.isFailure(exit)).toBe(true)
        if (Exit.isFailure(exit)) {
          expect(String(exit.cause)).toContain(file)
          expect(String(exit.cause)).toContain("corrupt")
        }
        expect(fs.readFileSync(file, "utf8")).toBe(bad)
      }
    }),
  )

  it.effect("layerFrom is deterministic; layerRandom is fresh each time", () =>
    Effect.gen(function* () {
      const secret = new Uint8Array(64).fill(7)
      const a = yield* open(layerFrom(secret))
      const b = yield* open(layerFrom(secret))
      expect(toHex(a.nodeKey)).toBe(toHex(b.nodeKey))
      expect(toHex(a.sessionSecret)).toBe("07".repeat(32))
      const r1 = yield* open(layerRandom)
      const r2 = yield* open(layerRandom)
      expect(toHex(r1.secretKey)).not.toBe(toHex(r2.secretKey))
      expect(isValidSecretKey(new Uint8Array(32))).toBe(false)
      expect(isValidSecretKey(Uint8Array.from(Buffer.from(ORDER, "hex")))).toBe(false)
    }),
  )
})
