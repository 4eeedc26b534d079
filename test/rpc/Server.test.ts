import * as fs from "node:fs"
import * as http from "node:http"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it, layer } from "@effect/vitest"
import { Effect, Exit, Layer, Logger, LogLevel, Metric, MetricBoundaries, Schema, Scope } from "effect"
import { renderPrometheus, sanitizeLabelName, sanitizeMetricName } from "../../src/rpc/Metrics.js"
import * as Rpc from "../../src/rpc/Server.js"

const maxBodyBytes = 64 * 1024
let notified = 0

const methods = [
  Rpc.method(
    "echo",
    Schema.Array(Schema.Unknown),
    (params) => Effect.succeed(params),
    "echo: returns its params",
  ),
  Rpc.method(
    "add",
    Schema.Tuple(Schema.Number, Schema.Number),
    ([a, b]) => Effect.succeed(a + b),
    "add a b: the sum",
    ["a", "b"],
  ),
  Rpc.method(
    "greet",
    Schema.Tuple(Schema.String, Schema.optionalElement(Schema.String)),
    ([name, greeting]) => Effect.succeed(`${greeting ?? "hello"} ${name}`),
    "greet name ( greeting )",
    ["name", "greeting"],
  ),
  Rpc.method(
    "boom",
    Schema.Tuple(),
    () => Effect.die(new Error("kaboom secret stack")),
    "boom: a handler bug",
  ),
  Rpc.method(
    "throws",
    Schema.Tuple(),
    () => {
      throw new Error("thrown outside any Effect")
    },
    "a handler that throws",
  ),
  Rpc.method("notify", Schema.Tuple(), () => Effect.sync(() => ++notified), "notify: counts calls"),
  Rpc.method(
    "reject",
    Schema.Tuple(),
    () => Effect.fail(Rpc.verifyRejected("txn-mempool-conflict")),
    "reject",
  ),
  Rpc.method("supply", Schema.Tuple(), () => Effect.succeed({ total: 2_100_000_000_000_000n }), "supply"),
  Rpc.method("huge", Schema.Tuple(), () => Effect.succeed(2n ** 64n), "an unsafe bigint"),
  Rpc.method("bytes", Schema.Tuple(), () => Effect.succeed({ raw: new Uint8Array([1]) }), "a Uint8Array"),
]

const basic = (user: string, password: string) =>
  `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`
const goodAuth = basic("alice", "s3cret")

interface Reply {
  readonly status: number
  readonly headers: Headers
  readonly text: string
}

const post = (port: number, body: string, authorization: string | null = goodAuth) =>
  Effect.promise(async (): Promise<Reply> => {
    const headers: Record<string, string> = { "content-type": "application/json" }
    if (authorization !== null) headers.authorization = authorization
    const r = await fetch(`http://127.0.0.1:${port}/`, { method: "POST", headers, body })
    return { status: r.status, headers: r.headers, text: await r.text() }
  })

const get = (port: number, urlPath: string) =>
  Effect.promise(async (): Promise<Reply> => {
    const r = await fetch(`http://127.0.0.1:${port}${urlPath}`)
    return { status: r.status, headers: r.headers, text: await r.text() }
  })

const rpc2 = (port: number, method: string, params: unknown, id: unknown = 1) =>
  post(port, JSON.stringify({ jsonrpc: "2.0", method, params, id })).pipe(
    Effect.map((r) => ({ ...r, json: JSON.parse(r.text) as Record<string, unknown> })),
  )

/** chunked sends `size` bytes with Transfer-Encoding: chunked (no Content-Length), as node's http client. */
const chunked = (port: number, size: number) =>
  Effect.promise(
    () =>
      new Promise<number | string>((resolve) => {
        const req = http.request(
          `http://127.0.0.1:${port}/`,
          { method: "POST", headers: { authorization: goodAuth, "transfer-encoding": "chunked" } },
          (res) => {
            res.resume()
            resolve(res.statusCode ?? 0)
          },
        )
        req.on("error", (e) => resolve(`error ${e.message}`))
        const chunk = Buffer.alloc(16 * 1024, 0x20)
        let sent = 0
        const pump = () => {
          while (sent < size) {
            sent += chunk.length
            if (!req.write(chunk)) return void req.once("drain", pump)
          }
          req.end()
        }
        pump()
      }),
  )

const quiet = Logger.minimumLogLevel(LogLevel.None)

const serverLayer = Rpc.layer({
  listen: { host: "127.0.0.1", port: 0 },
  auth: { user: "alice", password: "s3cret" },
  methods,
  maxBodyBytes,
})

layer(serverLayer.pipe(Layer.provide(quiet)), { excludeTestServices: true })("RPC server over HTTP", (it) => {
  const port = Effect.map(Rpc.RpcServer, (s) => s.port)

  it.effect(
    "refuses a request without credentials or with wrong ones: HTTP 401, Basic challenge, no body",
    () =>
      Effect.gen(function* () {
        const p = yield* port
        const body = JSON.stringify({ jsonrpc: "2.0", method: "add", params: [1, 2], id: 1 })
        for (const authorization of [null, basic("alice", "wrong"), basic("bob", "s3cret"), "Bearer x"]) {
          const r = yield* post(p, body, authorization)
          expect(r.status).toBe(401)
          expect(r.headers.get("www-authenticate")).toBe('Basic realm="fibercoin"')
          expect(r.text).toBe("")
        }
      }),
  )

  it.effect("answers a JSON-RPC 2.0 call with HTTP 200 and {jsonrpc, result, id}", () =>
    Effect.gen(function* () {
      const r = yield* rpc2(yield* port, "add", [1, 2], "req-7")
      expect(r.status).toBe(200)
      expect(r.headers.get("content-type")).toContain("application/json")
      expect(r.json).toEqual({ jsonrpc: "2.0", result: 3, id: "req-7" })
    }),
  )

  it.effect("answers bitcoind's 1.0 shape with {result, error, id}; errors set bitcoind's HTTP status", () =>
    Effect.gen(function* () {
      const p = yield* port
      const ok = yield* post(p, JSON.stringify({ method: "add", params: [2, 3], id: 9 }))
      expect(ok.status).toBe(200)
      expect(JSON.parse(ok.text)).toEqual({ result: 5, error: null, id: 9 })
      const v1 = yield* post(p, JSON.stringify({ jsonrpc: "1.0", method: "add", params: [2, 3], id: 9 }))
      expect(JSON.parse(v1.text)).toEqual({ result: 5, error: null, id: 9 })
      const notFound = yield* post(p, JSON.stringify({ method: "nope", params: [], id: 1 }))
      expect(notFound.status).toBe(404)
      expect(JSON.parse(notFound.text)).toEqual({
        result: null,
        error: { code: -32601, message: "Method not found" },
        id: 1,
      })
      const rejected = yield* post(p, JSON.stringify({ method: "reject", id: 2 }))
      expect(rejected.status).toBe(500)
      expect(JSON.parse(rejected.text).error).toEqual({ code: -26, message: "txn-mempool-conflict" })
      const badVersion = yield* post(p, JSON.stringify({ jsonrpc: "3.0", method: "add", id: 3 }))
      expect(badVersion.status).toBe(400)
      expect(JSON.parse(badVersion.text).error.code).toBe(-32600)
    }),
  )

  it.effect("answers a batch with an array in order, leaving out notifications", () =>
    Effect.gen(function* () {
      const before = notified
      const r = yield* post(
        yield* port,
        JSON.stringify([
          { jsonrpc: "2.0", method: "add", params: [1, 1], id: 1 },
          { jsonrpc: "2.0", method: "notify" },
          { jsonrpc: "2.0", method: "nope", id: 2 },
          { method: "add", params: [2, 2], id: 3 },
          42,
        ]),
      )
      expect(r.status).toBe(200)
      expect(JSON.parse(r.text)).toEqual([
        { jsonrpc: "2.0", result: 2, id: 1 },
        { jsonrpc: "2.0", error: { code: -32601, message: "Method not found" }, id: 2 },
        { result: 4, error: null, id: 3 },
        { jsonrpc: "2.0", error: { code: -32600, message: "Invalid Request object" }, id: null },
      ])
      expect(notified).toBe(before + 1)
    }),
  )

  it.effect("answers an empty batch with a single -32600 error", () =>
    Effect.gen(function* () {
      const r = yield* post(yield* port, "[]")
      expect(r.status).toBe(200)
      expect(JSON.parse(r.text)).toEqual({
        jsonrpc: "2.0",
        error: { code: -32600, message: "Invalid Request object" },
        id: null,
      })
    }),
  )

  it.effect("runs a notification (2.0 without id) and answers nothing: HTTP 204", () =>
    Effect.gen(function* () {
      const before = notified
      const r = yield* post(yield* port, JSON.stringify({ jsonrpc: "2.0", method: "notify", params: [] }))
      expect(r.status).toBe(204)
      expect(r.text).toBe("")
      expect(notified).toBe(before + 1)
      const batch = yield* post(yield* port, JSON.stringify([{ jsonrpc: "2.0", method: "notify" }]))
      expect(batch.status).toBe(204)
      expect(notified).toBe(before + 2)
    }),
  )

  it.effect("answers an unknown method with -32601", () =>
    Effect.gen(function* () {
      const r = yield* rpc2(yield* port, "getnothing", [])
      expect(r.status).toBe(200)
      expect(r.json.error).toEqual({ code: -32601, message: "Method not found" })
    }),
  )

  it.effect("answers params that do not fit the schema with -32602 naming the position and the problem", () =>
    Effect.gen(function* () {
      const p = yield* port
      const wrongType = yield* rpc2(p, "add", [1, "x"])
      expect(wrongType.json.error).toEqual({
        code: -32602,
        message: 'Invalid params for add: params[1] (b): Expected number, actual "x"',
      })
      const missing = yield* rpc2(p, "add", [1])
      expect((missing.json.error as { message: string }).message).toContain("params[1] (b): is missing")
      const extra = yield* rpc2(p, "add", [1, 2, 3])
      expect((extra.json.error as { code: number }).code).toBe(-32602)
      expect((extra.json.error as { message: string }).message).toContain("params[2]")
      const notAList = yield* rpc2(p, "add", "1 2")
      expect(notAList.json.error).toEqual({ code: -32600, message: "Params must be an array or object" })
    }),
  )

  it.effect(
    "accepts named params mapped onto positions; an unknown name is -8; trailing nulls mean default",
    () =>
      Effect.gen(function* () {
        const p = yield* port
        expect((yield* rpc2(p, "add", { b: 2, a: 5 })).json.result).toBe(7)
        expect((yield* rpc2(p, "greet", { name: "bob" })).json.result).toBe("hello bob")
        expect((yield* rpc2(p, "greet", ["bob", null])).json.result).toBe("hello bob")
        expect((yield* rpc2(p, "greet", ["bob", "hi"])).json.result).toBe("hi bob")
        expect((yield* rpc2(p, "add", { a: 1, c: 2 })).json.error).toEqual({
          code: -8,
          message: "Unknown named parameter c",
        })
      }),
  )

  it.effect("answers a body that is not JSON with -32700 (bitcoind: legacy shape, HTTP 500)", () =>
    Effect.gen(function* () {
      const p = yield* port
      const r = yield* post(p, '{"jsonrpc": "2.0", "method": ')
      expect(r.status).toBe(500)
      expect(JSON.parse(r.text)).toEqual({
        result: null,
        error: { code: -32700, message: "Parse error" },
        id: null,
      })
      const scalar = yield* post(p, "17")
      expect(JSON.parse(scalar.text).error.code).toBe(-32700)
      const notUtf8 = yield* Effect.promise(() =>
        fetch(`http://127.0.0.1:${p}/`, {
          method: "POST",
          headers: { authorization: goodAuth },
          body: new Uint8Array([0x22, 0xff, 0xfe, 0x22]),
        }).then((res) => res.json() as Promise<{ error: { code: number } }>),
      )
      expect(notUtf8.error.code).toBe(-32700)
    }),
  )

  it.effect("refuses an oversized body with HTTP 413 (declared or chunked) and keeps serving", () =>
    Effect.gen(function* () {
      const p = yield* port
      const declared = yield* post(p, " ".repeat(maxBodyBytes + 1))
      expect(declared.status).toBe(413)
      expect(yield* chunked(p, 4 * maxBodyBytes)).toBe(413)
      expect(yield* chunked(p, 300 * maxBodyBytes)).toBe(413)
      const atLimit = `${JSON.stringify({ jsonrpc: "2.0", method: "add", params: [1, 2], id: 1 })}`.padEnd(
        maxBodyBytes,
      )
      expect((yield* post(p, atLimit)).status).toBe(200)
      expect((yield* rpc2(p, "add", [20, 22])).json.result).toBe(42)
    }),
  )

  it.effect("turns a handler defect into -1 'internal error' without leaking it, and keeps serving", () =>
    Effect.gen(function* () {
      const p = yield* port
      const r = yield* rpc2(p, "boom", [])
      expect(r.status).toBe(200)
      expect(r.json).toEqual({ jsonrpc: "2.0", error: { code: -1, message: "internal error" }, id: 1 })
      expect(r.text).not.toContain("kaboom")
      expect(r.text).not.toContain("at ")
      for (const bad of ["throws", "huge", "bytes"]) {
        expect((yield* rpc2(p, bad, [])).json.error).toEqual({ code: -1, message: "internal error" })
      }
      expect((yield* rpc2(p, "add", [1, 1])).json.result).toBe(2)
    }),
  )

  it.effect("serializes bigint amounts as JSON numbers", () =>
    Effect.gen(function* () {
      const r = yield* rpc2(yield* port, "supply", [])
      expect(r.text).toContain('"total":2100000000000000')
    }),
  )

  it.effect("answers typed failures with their code and message", () =>
    Effect.gen(function* () {
      expect((yield* rpc2(yield* port, "reject", [])).json.error).toEqual({
        code: -26,
        message: "txn-mempool-conflict",
      })
    }),
  )

  it.effect("has a built-in help listing the methods and each method's text", () =>
    Effect.gen(function* () {
      const p = yield* port
      const all = (yield* rpc2(p, "help", [])).json.result as string
      expect(all.split("\n")).toEqual(expect.arrayContaining(["add", "echo", "help"]))
      expect((yield* rpc2(p, "help", ["add"])).json.result).toBe("add a b: the sum")
    }),
  )

  it.effect("serves Prometheus text at GET /metrics without auth, counting calls by method", () =>
    Effect.gen(function* () {
      const p = yield* port
      yield* rpc2(p, "add", [1, 2])
      const r = yield* get(p, "/metrics")
      expect(r.status).toBe(200)
      expect(r.headers.get("content-type")).toContain("text/plain")
      expect(r.text).toContain("# TYPE rpc_calls_total counter")
      expect(r.text).toMatch(/^rpc_calls_total\{method="add"\} \d+$/m)
      expect(r.text).toMatch(/^rpc_duration_seconds_count\{method="add"\} \d+$/m)
      expect(r.text).toMatch(/^rpc_errors_total\{code="-1",method="boom"\} \d+$/m)
      expect(r.text).not.toContain("getnothing")
    }),
  )

  it.effect("answers anything else with 404", () =>
    Effect.gen(function* () {
      const p = yield* port
      expect((yield* get(p, "/")).status).toBe(404)
      expect((yield* get(p, "/wallet")).status).toBe(404)
    }),
  )
})

describe("RPC cookie auth", () => {
  it.live(
    "writes <datadir>/.cookie as __cookie__:<64 hex> with mode 0600, accepts it, and removes it at shutdown",
    () =>
      Effect.gen(function* () {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fibercoin-rpc-"))
        const cookieFile = path.join(dir, ".cookie")
        fs.writeFileSync(cookieFile, "stale", { mode: 0o644 })
        const scope = yield* Scope.make()
        const info = yield* Rpc.make({
          listen: { host: "127.0.0.1", port: 0 },
          auth: { cookieFile },
          methods,
        }).pipe(Scope.extend(scope))
        const cookie = fs.readFileSync(cookieFile, "utf8")
        expect(cookie).toMatch(/^__cookie__:[0-9a-f]{64}$/)
        expect(fs.statSync(cookieFile).mode & 0o777).toBe(0o600)
        const [user, password] = cookie.split(":") as [string, string]
        expect((yield* rpc2Auth(info.port, basic(user, password))).status).toBe(200)
        expect((yield* rpc2Auth(info.port, basic(user, "0".repeat(64)))).status).toBe(401)
        yield* Scope.close(scope, Exit.void)
        expect(fs.existsSync(cookieFile)).toBe(false)
        fs.rmSync(dir, { recursive: true, force: true })
      }).pipe(Effect.provide(quiet)),
  )

  it.live("writes a different secret at every start", () =>
    Effect.gen(function* () {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fibercoin-rpc-"))
      const cookieFile = path.join(dir, "sub", ".cookie")
      const start = Effect.scoped(
        Effect.zipRight(
          Rpc.make({ listen: { host: "127.0.0.1", port: 0 }, auth: { cookieFile }, methods }),
          Effect.sync(() => fs.readFileSync(cookieFile, "utf8")),
        ),
      )
      const a = yield* start
      const b = yield* start
      expect(a).not.toBe(b)
      fs.rmSync(dir, { recursive: true, force: true })
    }).pipe(Effect.provide(quiet)),
  )

  it.live("refuses to start with two methods of one name", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.scoped(
        Rpc.make({
          listen: { host: "127.0.0.1", port: 0 },
          auth: { user: "u", password: "p" },
          methods: [...methods, methods[0]!],
        }),
      ).pipe(Effect.exit)
      expect(String(exit)).toContain("RPC method echo is registered twice")
    }),
  )

  it.live("fails to start with one clear RpcStartError when the address is taken", () =>
    Effect.gen(function* () {
      const busy = http.createServer()
      yield* Effect.promise(() => new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", resolve)))
      const address = busy.address()
      const takenPort = typeof address === "object" && address !== null ? address.port : 0
      const exit = yield* Effect.scoped(
        Rpc.make({
          listen: { host: "127.0.0.1", port: takenPort },
          auth: { user: "u", password: "p" },
          methods,
        }),
      ).pipe(Effect.exit)
      busy.close()
      expect(Exit.isFailure(exit)).toBe(true)
      if (Exit.isFailure(exit)) {
        expect(String(exit.cause)).toContain(`cannot listen for RPC on 127.0.0.1:${takenPort}`)
      }
    }),
  )
})

const rpc2Auth = (port: number, authorization: string) =>
  post(port, JSON.stringify({ jsonrpc: "2.0", method: "add", params: [1, 2], id: 1 }), authorization)

describe("Prometheus exposition of Effect metrics", () => {
  it("sanitizes names to Prometheus' alphabet", () => {
    expect(sanitizeMetricName("rpc.calls-total")).toBe("rpc_calls_total")
    expect(sanitizeMetricName("9lives")).toBe("_9lives")
    expect(sanitizeMetricName("ns:sub_total")).toBe("ns:sub_total")
    expect(sanitizeLabelName("peer:id")).toBe("peer_id")
  })

  it.effect("renders counters, gauges, histograms and frequencies with HELP/TYPE, labels and buckets", () =>
    Effect.gen(function* () {
      const prefix = `t${Date.now()}`
      const counter = Metric.counter(`${prefix}.blocks-total`, { description: "blocks\nseen" })
      yield* Metric.incrementBy(Metric.tagged(counter, "peer", 'a"b\\c'), 3)
      yield* Metric.increment(Metric.tagged(counter, "peer", "z"))
      yield* Metric.set(Metric.gauge(`${prefix}_height`), 42)
      const hist = Metric.histogram(`${prefix}_latency`, MetricBoundaries.fromIterable([0.1, 1]))
      for (const v of [0.05, 0.5, 0.7, 5]) yield* Metric.update(hist, v)
      const freq = Metric.frequency(`${prefix}_reject`)
      yield* Metric.update(freq, "dust")
      yield* Metric.update(freq, "dust")
      const pairs = (yield* Metric.snapshot).filter((pair) => pair.metricKey.name.startsWith(prefix))
      const text = renderPrometheus(pairs)
      expect(text).toContain(
        `# HELP ${prefix}_blocks_total blocks\\nseen\n# TYPE ${prefix}_blocks_total counter\n`,
      )
      expect(text).toContain(`${prefix}_blocks_total{peer="a\\"b\\\\c"} 3\n`)
      expect(text).toContain(`${prefix}_blocks_total{peer="z"} 1\n`)
      expect(text.match(/# TYPE \S+_blocks_total/g)).toHaveLength(1)
      expect(text).toContain(`# TYPE ${prefix}_height gauge\n${prefix}_height 42\n`)
      expect(text).toContain(
        [
          `# TYPE ${prefix}_latency histogram`,
          `${prefix}_latency_bucket{le="0.1"} 1`,
          `${prefix}_latency_bucket{le="1"} 3`,
          `${prefix}_latency_bucket{le="+Inf"} 4`,
          `${prefix}_latency_sum 6.25`,
          `${prefix}_latency_count 4`,
        ].join("\n"),
      )
      expect(text).toContain(`# TYPE ${prefix}_reject counter\n${prefix}_reject{key="dust"} 2\n`)
      expect(text.endsWith("\n")).toBe(true)
      for (const line of text.trimEnd().split("\n")) {
        expect(line).toMatch(
          /^(# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .*|[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? \S+)$/,
        )
      }
    }),
  )

  it("renders nothing for no metrics", () => {
    expect(renderPrometheus([])).toBe("")
  })
})
