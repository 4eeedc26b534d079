import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Effect, Exit, Logger, LogLevel, Schema, Scope } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Rpc from "../../src/rpc/Server.js"

/**
 * fibercoin-cli as a user runs it: the built `dist/cli.js` in a real process (run `npm run build`
 * first; CI does), against RPC servers started in this process on loopback.
 */
const root = fileURLToPath(new URL("../..", import.meta.url))
const cliPath = path.join(root, "dist", "cli.js")

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** cli runs the client asynchronously: a blocking spawn would starve the in-process server. */
const cli = (...args: Array<string>) =>
  new Promise<Run>((resolve) => {
    execFile(
      process.execPath,
      [cliPath, ...args],
      { cwd: root, timeout: 30_000 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : null
        resolve({ code, stdout, stderr })
      },
    )
  })

const methods = [
  Rpc.method(
    "echo",
    Schema.Array(Schema.Unknown),
    (params) => Effect.succeed(params),
    "echo: returns its params",
  ),
  Rpc.method("greet", Schema.Tuple(Schema.String), ([name]) => Effect.succeed(`hello ${name}`), "greet name"),
  Rpc.method("count", Schema.Tuple(), () => Effect.succeed(2_100_000_000_000_000n), "a bare number"),
  Rpc.method("nothing", Schema.Tuple(), () => Effect.succeed(null), "null"),
  Rpc.method(
    "gettx",
    Schema.Tuple(Schema.String),
    ([txid]) => Effect.fail(Rpc.invalidAddressOrKey(`No such transaction ${txid}`)),
    "gettx",
  ),
]

const quiet = Logger.minimumLogLevel(LogLevel.None)
const scope = Effect.runSync(Scope.make())
let datadir = ""
let cookiePort = 0
let passwordPort = 0
let closedPort = 0

beforeAll(async () => {
  if (!fs.existsSync(cliPath)) throw new Error(`${cliPath} is missing: run \`npm run build\` first`)
  datadir = fs.mkdtempSync(path.join(os.tmpdir(), "fibercoin-cli-"))
  const start = (auth: Rpc.RpcAuth) =>
    Effect.runPromise(
      Rpc.make({ listen: { host: "127.0.0.1", port: 0 }, auth, methods }).pipe(
        Scope.extend(scope),
        Effect.provide(quiet),
      ),
    )
  cookiePort = (await start({ cookieFile: path.join(datadir, ".cookie") })).port
  passwordPort = (await start({ user: "alice", password: "s3cret" })).port
  // a port that was just free and is closed again: nothing listens there
  closedPort = await new Promise<number>((resolve) => {
    const probe = net.createServer().listen(0, "127.0.0.1", () => {
      const address = probe.address()
      probe.close(() => resolve(typeof address === "object" && address !== null ? address.port : 1))
    })
  })
})

afterAll(async () => {
  await Effect.runPromise(Scope.close(scope, Exit.void))
  fs.rmSync(datadir, { recursive: true, force: true })
})

describe("node dist/cli.js (RPC client, real process)", () => {
  const viaCookie = () => ["--rpc", `127.0.0.1:${cookiePort}`, "--datadir", datadir]

  it("logs in with the cookie in --datadir and prints a structured result as pretty JSON", async () => {
    const r = await cli(...viaCookie(), "echo", '{"a":[1,2]}', "fcrt1qaddress", "7", "true")
    expect(r.stderr).toBe("")
    expect(r.code).toBe(0)
    expect(r.stdout).toBe(`${JSON.stringify([{ a: [1, 2] }, "fcrt1qaddress", 7, true], null, 2)}\n`)
  })

  it("prints a string result bare, and a number bare", async () => {
    const s = await cli(...viaCookie(), "greet", "bob")
    expect(s.code).toBe(0)
    expect(s.stdout).toBe("hello bob\n")
    const n = await cli(...viaCookie(), "count")
    expect(n.stdout).toBe("2100000000000000\n")
  })

  it("prints nothing for a null result", async () => {
    const r = await cli(...viaCookie(), "nothing")
    expect(r.code).toBe(0)
    expect(r.stdout).toBe("")
  })

  it("keeps a long run of digits (a hash) as a string rather than a rounded number", async () => {
    const digits = "1".repeat(64)
    const r = await cli(...viaCookie(), "echo", digits)
    expect(JSON.parse(r.stdout)).toEqual([digits])
  })

  it("logs in with --rpcuser/--rpcpassword", async () => {
    const r = await cli(
      "--rpc",
      `127.0.0.1:${passwordPort}`,
      "--rpcuser",
      "alice",
      "--rpcpassword",
      "s3cret",
      "greet",
      "x",
    )
    expect(r.code).toBe(0)
    expect(r.stdout).toBe("hello x\n")
  })

  it("exits 1 with the error code and message on stderr for an RPC error", async () => {
    const r = await cli(...viaCookie(), "gettx", "ab")
    expect(r.code).toBe(1)
    expect(r.stdout).toBe("")
    expect(r.stderr).toBe("error code: -5\nerror message:\nNo such transaction ab\n")
    const unknown = await cli(...viaCookie(), "getnothing")
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toContain("Method not found")
  })

  it("exits 1 when the credentials are wrong", async () => {
    const r = await cli(
      "--rpc",
      `127.0.0.1:${passwordPort}`,
      "--rpcuser",
      "alice",
      "--rpcpassword",
      "nope",
      "greet",
      "x",
    )
    expect(r.code).toBe(1)
    expect(r.stderr).toContain("authorization failed")
  })

  it("exits 2 for a usage error: no method, a bad --rpc, an unknown option, half the credentials", async () => {
    const none = await cli(...viaCookie())
    expect(none.code).toBe(2)
    expect(none.stderr + none.stdout).toContain("method")
    const badAddress = await cli("--rpc", "localhost", "getblockcount")
    expect(badAddress.code).toBe(2)
    expect(badAddress.stderr).toContain("--rpc")
    const unknownOption = await cli("--frobnicate", "getblockcount")
    expect(unknownOption.code).toBe(2)
    expect(unknownOption.stderr).toContain("--frobnicate")
    const half = await cli("--rpc", `127.0.0.1:${passwordPort}`, "--rpcuser", "alice", "greet", "x")
    expect(half.code).toBe(2)
  })

  it("exits 3 when nothing listens at --rpc, or no cookie is there to log in with", async () => {
    const closed = await cli(
      "--rpc",
      `127.0.0.1:${closedPort}`,
      "--rpcuser",
      "a",
      "--rpcpassword",
      "b",
      "getblockcount",
    )
    expect(closed.code).toBe(3)
    expect(closed.stderr).toContain(`127.0.0.1:${closedPort}`)
    expect(closed.stderr).toContain("ECONNREFUSED")
    const noCookie = await cli(
      "--rpc",
      `127.0.0.1:${cookiePort}`,
      "--datadir",
      path.join(datadir, "absent"),
      "greet",
      "x",
    )
    expect(noCookie.code).toBe(3)
    expect(noCookie.stderr).toContain(".cookie")
  })

  it("--help prints usage and exits 0", async () => {
    const r = await cli("--help")
    expect(r.code).toBe(0)
    expect(r.stdout).toContain("--rpc")
    expect(r.stdout).toContain("--datadir")
  })
})
