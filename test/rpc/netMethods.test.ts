import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, TestClock } from "effect"
import { Network } from "../../src/actors/PeerManager.js"
import { makeSimNetwork } from "../../src/layers/TransportSim.js"
import { netMethods } from "../../src/rpc/netMethods.js"
import * as Rpc from "../../src/rpc/Server.js"
import type { NodeConfig } from "../../src/schema/config.js"
import { quiet, type SimNode, settle, simConfig, simTime, startNode, waitUntil } from "../support/simnet.js"

/**
 * The ban RPCs (setban, listbanned, clearbanned) as an operator uses them: on in-memory sim nodes
 * with real peers, through the method handlers and through `node dist/cli.js` against an RPC server.
 */

const A = "10.0.0.1"
const B = "10.0.0.2"
const C = "10.0.1.3"

/** rpcOf calls a net RPC handler of `node` with positional params, as the server would. */
const rpcOf = (node: SimNode) => {
  const methods = netMethods("test")
  return (name: string, params: ReadonlyArray<unknown> = []) => {
    const m = methods.find((x) => x.name === name)
    if (m === undefined) return Effect.dieMessage(`no RPC method ${name}`)
    return node.run(m.invoke(params))
  }
}

/** codeOf is the RPC error code of a failed call (the call must fail). */
const codeOf = <A>(call: Effect.Effect<A, Rpc.RpcError>) =>
  Effect.map(Effect.flip(call), (e) => ({ code: e.code, message: e.message }))

/** hostsOf is the remote hosts of a node's handshaken connections. */
const hostsOf = (node: SimNode) =>
  node.run(
    Effect.map(
      Effect.flatMap(Network, (n) => n.peers),
      (ps) => ps.map((p) => p.info.addr.host),
    ),
  )

const connectedTo = (node: SimNode, host: string) => Effect.map(hostsOf(node), (hs) => hs.includes(host))

const nowSeconds = Effect.map(Clock.currentTimeMillis, (ms) => Math.floor(ms / 1000))

const withBanSeconds = (config: NodeConfig, banSeconds: number): NodeConfig => ({
  ...config,
  limits: { ...config.limits, banSeconds },
})

/** threeNodes: B (10.0.0.2) and C (10.0.1.3) connect to A (10.0.0.1) and stay connected. */
const threeNodes = Effect.gen(function* () {
  yield* simTime
  const sim = yield* makeSimNetwork({ seed: 7, defaultLink: { latency: "10 millis" } })
  const a = yield* startNode(sim, simConfig(A))
  const b = yield* startNode(sim, simConfig(B, [A]))
  const c = yield* startNode(sim, simConfig(C, [A]))
  yield* waitUntil(
    Effect.all([connectedTo(a, B), connectedTo(a, C)]).pipe(Effect.map(([x, y]) => x && y)),
    "10 seconds",
  )
  return { a, b, c }
})

describe("setban / listbanned / clearbanned on a sim node", () => {
  it.scoped(
    "setban add drops the connected peers in the subnet and keeps them out; remove lets them back",
    () =>
      quiet(
        Effect.gen(function* () {
          const { a } = yield* threeNodes
          const rpc = rpcOf(a)
          const start = yield* nowSeconds
          expect(yield* rpc("setban", ["10.0.0.0/24", "add"])).toBeNull()
          yield* settle
          yield* waitUntil(
            Effect.map(connectedTo(a, B), (x) => !x),
            "1 second",
          )
          // B keeps redialling for a minute; A refuses it every time, and C (outside the /24) stays
          for (let i = 0; i < 60; i++) {
            yield* TestClock.adjust("1 second")
            yield* settle
            expect(yield* hostsOf(a)).not.toContain(B)
            expect(yield* hostsOf(a)).toContain(C)
          }
          const now = yield* nowSeconds
          expect(yield* rpc("listbanned")).toEqual([
            {
              address: "10.0.0.0/24",
              ban_created: start,
              banned_until: start + 86_400,
              ban_duration: 86_400,
              time_remaining: start + 86_400 - now,
              ban_reason: "manually added",
            },
          ])

          expect(yield* rpc("setban", ["10.0.0.0/24", "remove"])).toBeNull()
          expect(yield* rpc("listbanned")).toEqual([])
          yield* waitUntil(connectedTo(a, B), "3 minutes", "500 millis")
        }),
      ),
  )

  it.scoped("a ban of one host drops only that host, and ends after its bantime", () =>
    quiet(
      Effect.gen(function* () {
        const { a, b } = yield* threeNodes
        expect(yield* rpcOf(a)("setban", [B, "add", 90])).toBeNull()
        yield* waitUntil(
          Effect.map(connectedTo(a, B), (x) => !x),
          "1 second",
        )
        yield* waitUntil(
          Effect.map(connectedTo(b, A), (x) => !x),
          "1 second",
        )
        expect(yield* hostsOf(a)).toContain(C)
        // B keeps redialling; it is let back in once the 90 seconds are over, not before
        const took = yield* waitUntil(connectedTo(a, B), "3 minutes", "1 second")
        expect(took).toBeGreaterThanOrEqual(88_000)
        expect(yield* rpcOf(a)("listbanned")).toEqual([])
      }),
    ),
  )

  it.scoped("bantime: 0 or absent is limits.banSeconds, seconds otherwise, a unix time when absolute", () =>
    quiet(
      Effect.gen(function* () {
        yield* simTime
        const sim = yield* makeSimNetwork({ seed: 1 })
        const a = yield* startNode(sim, withBanSeconds(simConfig(A), 1234))
        const rpc = rpcOf(a)
        const now = yield* nowSeconds
        yield* rpc("setban", ["10.0.0.5", "add"])
        yield* rpc("setban", ["10.0.0.6", "add", 0])
        yield* rpc("setban", ["10.0.0.7", "add", null, false])
        yield* rpc("setban", ["10.0.0.8", "add", 3600])
        yield* rpc("setban", ["2001:db8::/32", "add", now + 7200, true])
        yield* rpc("setban", ["::ffff:10.0.0.9", "add", 60, false])
        const listed = (yield* rpc("listbanned")) as ReadonlyArray<Record<string, unknown>>
        expect(listed.map((b) => [b.address, b.banned_until, b.ban_duration]).sort()).toEqual(
          [
            ["10.0.0.5/32", now + 1234, 1234],
            ["10.0.0.6/32", now + 1234, 1234],
            ["10.0.0.7/32", now + 1234, 1234],
            ["10.0.0.8/32", now + 3600, 3600],
            ["10.0.0.9/32", now + 60, 60],
            ["2001:db8::/32", now + 7200, 7200],
          ].sort(),
        )
        yield* TestClock.adjust("100 seconds")
        const later = (yield* rpc("listbanned")) as ReadonlyArray<Record<string, unknown>>
        expect(later.map((b) => [b.address, b.time_remaining]).sort()).toEqual(
          [
            ["10.0.0.5/32", 1134],
            ["10.0.0.6/32", 1134],
            ["10.0.0.7/32", 1134],
            ["10.0.0.8/32", 3500],
            ["2001:db8::/32", 7100],
          ].sort(),
        )

        expect(yield* rpc("clearbanned")).toBeNull()
        expect(yield* rpc("listbanned")).toEqual([])
      }),
    ),
  )

  it.scoped("a node that bans nothing itself (banSeconds 0) still honours setban, for a day by default", () =>
    quiet(
      Effect.gen(function* () {
        yield* simTime
        const sim = yield* makeSimNetwork({ seed: 1 })
        const a = yield* startNode(sim, withBanSeconds(simConfig(A), 0))
        const rpc = rpcOf(a)
        yield* rpc("setban", ["10.0.0.5", "add"])
        const [entry] = (yield* rpc("listbanned")) as ReadonlyArray<Record<string, unknown>>
        expect(entry).toMatchObject({ address: "10.0.0.5/32", ban_duration: 86_400 })
      }),
    ),
  )

  it.scoped(
    "errors as bitcoind: -23 already banned, -30 bad subnet or not banned, -8 past, -32602 bad params",
    () =>
      quiet(
        Effect.gen(function* () {
          yield* simTime
          const sim = yield* makeSimNetwork({ seed: 1 })
          const a = yield* startNode(sim, simConfig(A))
          const rpc = rpcOf(a)
          const now = yield* nowSeconds
          yield* rpc("setban", ["10.0.0.9", "add"])
          expect(yield* codeOf(rpc("setban", ["10.0.0.9", "add", 60]))).toEqual({
            code: -23,
            message: "Error: IP/Subnet already banned",
          })
          expect(yield* codeOf(rpc("setban", ["10.0.0.256", "add"]))).toEqual({
            code: -30,
            message: "Error: Invalid IP/Subnet: 10.0.0.256",
          })
          expect((yield* codeOf(rpc("setban", ["10.0.0.0/33", "add"]))).code).toBe(-30)
          expect((yield* codeOf(rpc("setban", ["localhost", "add"]))).code).toBe(-30)
          expect((yield* codeOf(rpc("setban", ["10.0.0.8", "remove"]))).code).toBe(-30)
          expect((yield* codeOf(rpc("setban", ["nonsense!", "remove"]))).code).toBe(-30)
          expect(yield* codeOf(rpc("setban", ["10.0.0.7", "add", now - 1, true]))).toEqual({
            code: -8,
            message: "Error: Absolute timestamp is in the past",
          })
          expect((yield* codeOf(rpc("setban", ["10.0.0.7", "add", 0, true]))).code).toBe(-8)

          const invalid = (params: ReadonlyArray<unknown>) =>
            Effect.map(codeOf(rpc("setban", params)), (e) => {
              expect(e.code).toBe(-32602)
              return e.message
            })
          expect(yield* invalid(["10.0.0.7", "ban"])).toMatch(/params\[1\] \(command\)/)
          expect(yield* invalid(["10.0.0.7", "add", -5])).toMatch(
            /params\[2\] \(bantime\): expected a whole number of seconds >= 0/,
          )
          expect(yield* invalid(["10.0.0.7", "add", 1.5])).toMatch(/params\[2\] \(bantime\)/)
          expect(yield* invalid(["10.0.0.7", "add", "soon"])).toMatch(/params\[2\] \(bantime\)/)
          expect(yield* invalid(["10.0.0.7", "add", 60, "yes"])).toMatch(/params\[3\] \(absolute\)/)
          expect(yield* invalid([7, "add"])).toMatch(/params\[0\] \(subnet\)/)
          expect(yield* invalid([])).toMatch(/Invalid params for setban/)
          expect((yield* codeOf(rpc("listbanned", [1]))).code).toBe(-32602)
          expect((yield* codeOf(rpc("clearbanned", ["all"]))).code).toBe(-32602)

          // nothing above added a ban
          expect(
            ((yield* rpc("listbanned")) as ReadonlyArray<{ address: string }>).map((b) => b.address),
          ).toEqual(["10.0.0.9/32"])
        }),
      ),
  )
})

// ---------------------------------------------------------------------------------------------------
// The CLI, a real process, against an RPC server over a sim node

const root = fileURLToPath(new URL("../..", import.meta.url))
const cliPath = path.join(root, "dist", "cli.js")

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

const cli = (port: number, ...args: Array<string>) =>
  Effect.async<Run>((resume) => {
    execFile(
      process.execPath,
      [cliPath, "--rpc", `127.0.0.1:${port}`, "--rpcuser", "u", "--rpcpassword", "p", ...args],
      { cwd: root, timeout: 30_000 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : null
        resume(Effect.succeed({ code, stdout, stderr }))
      },
    )
  })

describe("node dist/cli.js setban / listbanned / clearbanned", () => {
  it.scoped(
    "setban 10.0.0.2 add 3600 bans and drops the peer; listbanned shows it; clearbanned lifts it",
    () =>
      quiet(
        Effect.gen(function* () {
          if (!fs.existsSync(cliPath))
            return yield* Effect.dieMessage(`${cliPath} is missing: run \`npm run build\``)
          const { a } = yield* threeNodes
          const server = yield* Rpc.make({
            listen: { host: "127.0.0.1", port: 0 },
            auth: { user: "u", password: "p" },
            methods: netMethods("test"),
          }).pipe(Effect.provide(a.context))
          const start = yield* nowSeconds

          const added = yield* cli(server.port, "setban", B, "add", "3600")
          expect(added).toEqual({ code: 0, stdout: "", stderr: "" })
          yield* waitUntil(
            Effect.map(connectedTo(a, B), (x) => !x),
            "1 second",
          )

          const listed = yield* cli(server.port, "listbanned")
          expect(listed.code).toBe(0)
          expect(JSON.parse(listed.stdout)).toEqual([
            {
              address: "10.0.0.2/32",
              ban_created: start,
              banned_until: start + 3600,
              ban_duration: 3600,
              time_remaining: expect.any(Number),
              ban_reason: "manually added",
            },
          ])

          const again = yield* cli(server.port, "setban", B, "add")
          expect(again).toEqual({
            code: 1,
            stdout: "",
            stderr: "error code: -23\nerror message:\nError: IP/Subnet already banned\n",
          })
          const absolute = yield* cli(server.port, "setban", "10.0.9.0/24", "add", String(start + 60), "true")
          expect(absolute.code).toBe(0)
          const bad = yield* cli(server.port, "setban", "10.0.0.300", "add")
          expect(bad.code).toBe(1)
          expect(bad.stderr).toContain("error code: -30")

          const cleared = yield* cli(server.port, "clearbanned")
          expect(cleared).toEqual({ code: 0, stdout: "", stderr: "" })
          expect(JSON.parse((yield* cli(server.port, "listbanned")).stdout)).toEqual([])
          yield* waitUntil(connectedTo(a, B), "3 minutes", "500 millis")
        }),
      ),
    60_000,
  )
})
