import { spawnSync } from "node:child_process"
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"

const root = fileURLToPath(new URL("../..", import.meta.url))
const run = (...args: Array<string>) =>
  spawnSync(process.execPath, ["dist/main.js", ...args], { cwd: root, encoding: "utf8", timeout: 60_000 })

/** Every flag of main.js in CONTRACT.md. */
const contractFlags = [
  "--config",
  "--network",
  "--datadir",
  "--role",
  "--listen",
  "--rpc",
  "--connect",
  "--addnode",
  "--rendezvous",
  "--udp",
  "--mine",
  "--mining-address",
  "--log-level",
  "--log-format",
  "--storage",
  "--reindex",
]

describe("node dist/main.js (built program)", () => {
  it("--help lists every flag of the contract and exits 0", () => {
    const r = run("--help")
    expect(r.status).toBe(0)
    for (const flag of contractFlags) expect(r.stdout).toContain(flag)
  })

  it("--version prints the version package.json declares", () => {
    const pkg = JSON.parse(readFileSync(`${root}/package.json`, "utf8")) as { version: string }
    const r = run("--version")
    expect(r.status).toBe(0)
    expect(r.stdout.trim()).toBe(pkg.version)
  })

  it("an unknown flag or a bad choice is a usage error: exit 2", () => {
    const unknown = run("--frobnicate")
    expect(unknown.status).toBe(2)
    expect(unknown.stdout + unknown.stderr).toContain("--frobnicate")
    expect(run("--network", "moonnet").status).toBe(2)
  })
})

describe("the library (examples/embedded.ts)", () => {
  it("embeds an in-memory node, mines, pays and sees the payment confirmed, without RPC", () => {
    const r = spawnSync(process.execPath, ["--import", "tsx", "examples/embedded.ts"], {
      cwd: root,
      encoding: "utf8",
      timeout: 120_000,
    })
    expect(r.status).toBe(0)
    expect(r.stdout).toContain("height 101, balance 5000000000")
    expect(r.stdout).toMatch(/paid 1000000000 units to the friend in [0-9a-f]{64}, 1 confirmation/)
  })
})
