import { spawnSync } from "node:child_process"
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"

const root = fileURLToPath(new URL("../..", import.meta.url))
const run = (...args: Array<string>) =>
  spawnSync(process.execPath, ["dist/main.js", ...args], { cwd: root, encoding: "utf8", timeout: 60_000 })

describe("node dist/main.js (built program, real process)", () => {
  it("prints each network with its genesis block re-validated, and exits 0", () => {
    const r = run()
    expect(r.status).toBe(0)
    expect(r.stdout).toMatch(
      /^regtest +p2p 18444 rpc 18443 udp 18445 prefix fcrt1… genesis [0-9a-f]{64} valid$/m,
    )
    expect(r.stdout).toMatch(
      /^testnet +p2p 28444 rpc 28443 udp 28445 prefix tfc1… genesis [0-9a-f]{64} valid$/m,
    )
    expect(r.stdout).toMatch(/^mainnet +p2p 8888 rpc 8887 udp 8889 prefix fc1… genesis [0-9a-f]{64} valid$/m)
    expect(r.stdout).toMatch(/^signatures: libsecp256k1-(native|wasm)/m)
  })

  it("--help prints usage and exits 0", () => {
    const r = run("--help")
    expect(r.status).toBe(0)
    expect(r.stdout).toContain("usage: node dist/main.js")
  })

  it("an unknown flag is a usage error: exit 2 with a message naming it", () => {
    const r = run("--frobnicate")
    expect(r.status).toBe(2)
    expect(r.stderr).toContain('unknown argument "--frobnicate"')
  })

  it("reports the version package.json declares", () => {
    const pkg = JSON.parse(readFileSync(`${root}/package.json`, "utf8")) as { version: string }
    expect(run("--help").stdout).toContain(`fibercoin ${pkg.version}`)
  })
})

describe("the published library entry (dist/index.js)", () => {
  it("validates a genesis block and decodes what it encodes", async () => {
    const lib = await import(`${root}/dist/index.js`)
    const params = lib.networks.regtest
    expect(lib.checkBlock(params.genesis, params)._tag).toBe("Right")
    const bytes: Uint8Array = lib.encodeBlock(params.genesis)
    const decoded = lib.decodeBlock(bytes)
    expect(decoded._tag).toBe("Right")
    expect(lib.toHex(lib.headerHash(decoded.right.header))).toBe(lib.toHex(params.genesisHash))
  })
})
