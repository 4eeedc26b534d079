/**
 * The JSON-RPC server framework: errors with bitcoind's codes, a typed method registry, and the
 * HTTP server (`POST /` JSON-RPC behind Basic auth, `GET /metrics` open) on @effect/platform.
 * The node registers the methods; this file knows none of them.
 *
 * Wire behaviour, as bitcoind (v28+) where the brief does not say otherwise:
 * - JSON-RPC 2.0 requests (`"jsonrpc": "2.0"`) are always answered with HTTP 200, errors inside
 *   the body; 2.0 requests without an `id` are notifications and get no answer (HTTP 204 when
 *   nothing at all is answered).
 * - Legacy 1.0 requests (no `jsonrpc`, or `"jsonrpc": "1.0"`) get `{result, error, id}`; an error
 *   sets the HTTP status as bitcoind does: 400 for -32600, 404 for -32601, 500 for the rest.
 * - A body that is not JSON (or not UTF-8, or a top-level scalar) is -32700 in the legacy shape
 *   with HTTP 500, as bitcoind: the version is unknown when the body cannot be read.
 * - A batch is answered with HTTP 200 and an array (notifications omitted); an empty batch is a
 *   single 2.0 -32600 error, as the JSON-RPC 2.0 spec says (bitcoind answers `[]` there).
 * - Positional params; a named-params object is mapped onto the method's `paramNames`, holes
 *   filled with `null`. Trailing `null`s are dropped before decoding, so `null` means "default"
 *   for trailing optional params, as bitcoind.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto"
import * as fs from "node:fs"
import { createServer } from "node:http"
import * as path from "node:path"
// Deep imports: the packages' barrels load every module (~0.3 s), which fibercoin-cli pays at each run.
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import { HttpServerRequest as HttpServerRequestTag } from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import {
  Context,
  Duration,
  Effect,
  Either,
  Layer,
  Metric,
  MetricBoundaries,
  Option,
  ParseResult,
  Schema,
  type Scope,
} from "effect"
import { prometheusContentType, prometheusSnapshot } from "./Metrics.js"

// ---------------------------------------------------------------------------------------------
// Errors

/**
 * RpcErrorCode names bitcoind's JSON-RPC error codes used by fibercoin (CONTRACT.md, RPC).
 */
export const RpcErrorCode = {
  /** -32700: the body is not JSON */
  ParseError: -32700,
  /** -32600: not a JSON-RPC request object */
  InvalidRequest: -32600,
  /** -32601: no such method (or not on this node's role/network) */
  MethodNotFound: -32601,
  /** -32602: params do not decode with the method's schema */
  InvalidParams: -32602,
  /** -8: a param decodes but its value is unacceptable (bitcoind RPC_INVALID_PARAMETER) */
  InvalidParameter: -8,
  /** -5: invalid address or key, or txid/block not found (RPC_INVALID_ADDRESS_OR_KEY) */
  InvalidAddressOrKey: -5,
  /** -25: transaction or block verification failed (RPC_VERIFY_ERROR) */
  VerifyError: -25,
  /** -26: rejected by policy or consensus, message is the reason (RPC_VERIFY_REJECTED) */
  VerifyRejected: -26,
  /** -6: the wallet cannot fund the payment (RPC_WALLET_INSUFFICIENT_FUNDS) */
  InsufficientFunds: -6,
  /** -1: anything else, including internal errors (RPC_MISC_ERROR) */
  MiscError: -1,
} as const

/** RpcError is a JSON-RPC error answer: bitcoind's `code` and a human-readable `message`. */
export class RpcError extends Schema.TaggedError<RpcError>()("RpcError", {
  code: Schema.Number,
  message: Schema.String,
}) {}

/** parseError: -32700, the request body is not JSON. */
export const parseError = (message = "Parse error"): RpcError =>
  new RpcError({ code: RpcErrorCode.ParseError, message })
/** invalidRequest: -32600, the JSON is not a valid request object. */
export const invalidRequest = (message = "Invalid Request object"): RpcError =>
  new RpcError({ code: RpcErrorCode.InvalidRequest, message })
/** methodNotFound: -32601; pass a message saying why when the method exists elsewhere (light node). */
export const methodNotFound = (message = "Method not found"): RpcError =>
  new RpcError({ code: RpcErrorCode.MethodNotFound, message })
/** invalidParams: -32602, the params do not fit the method's schema. */
export const invalidParams = (message: string): RpcError =>
  new RpcError({ code: RpcErrorCode.InvalidParams, message })
/** invalidParameter: -8, a well-typed param with an unacceptable value (e.g. height out of range). */
export const invalidParameter = (message: string): RpcError =>
  new RpcError({ code: RpcErrorCode.InvalidParameter, message })
/** invalidAddressOrKey: -5, bad address or key, or an unknown txid/block hash. */
export const invalidAddressOrKey = (message: string): RpcError =>
  new RpcError({ code: RpcErrorCode.InvalidAddressOrKey, message })
/** verifyError: -25, verification failed. */
export const verifyError = (message: string): RpcError =>
  new RpcError({ code: RpcErrorCode.VerifyError, message })
/** verifyRejected: -26 with Core's reject reason, e.g. `txn-mempool-conflict`. */
export const verifyRejected = (reason: string): RpcError =>
  new RpcError({ code: RpcErrorCode.VerifyRejected, message: reason })
/** insufficientFunds: -6, the wallet cannot pay. */
export const insufficientFunds = (message = "Insufficient funds"): RpcError =>
  new RpcError({ code: RpcErrorCode.InsufficientFunds, message })
/** miscError: -1, any other failure. */
export const miscError = (message: string): RpcError =>
  new RpcError({ code: RpcErrorCode.MiscError, message })

/** RpcStartError: the RPC server could not start (cookie file not writable, address in use). */
export class RpcStartError extends Schema.TaggedError<RpcStartError>()("RpcStartError", {
  message: Schema.String,
}) {}

// ---------------------------------------------------------------------------------------------
// Methods

/**
 * RpcMethod is one registered method. Its params schema is hidden inside `invoke` (decode, then
 * run) so methods with different param types share one registry without variance casts.
 */
export interface RpcMethod<R = never> {
  readonly name: string
  /** help text, returned by the built-in `help` method */
  readonly help: string
  /** positional param names, for named-params requests and readable errors; may be empty */
  readonly paramNames: ReadonlyArray<string>
  /** decodes positional params with the method's schema (-32602 on failure), then runs it */
  readonly invoke: (params: ReadonlyArray<unknown>) => Effect.Effect<unknown, RpcError, R>
}

/** RpcMethodContext is the union of services a list of methods needs. */
export type RpcMethodContext<M> = M extends RpcMethod<infer R> ? R : never

const formatIssuePath = (path: ReadonlyArray<PropertyKey>, names: ReadonlyArray<string>): string => {
  const [first, ...rest] = path
  if (first === undefined) return "params"
  const index = typeof first === "number" ? first : Number.NaN
  const name = names[index]
  const head = `params[${String(first)}]${name === undefined ? "" : ` (${name})`}`
  return head + rest.map((k) => (typeof k === "number" ? `[${k}]` : `.${String(k)}`)).join("")
}

/** formatParamsError renders a params ParseError as one line per issue, naming each position. */
export const formatParamsError = (
  methodName: string,
  error: ParseResult.ParseError,
  names: ReadonlyArray<string> = [],
): string => {
  const issues = ParseResult.ArrayFormatter.formatErrorSync(error)
  const text = issues.map((issue) => `${formatIssuePath(issue.path, names)}: ${issue.message}`).join("; ")
  return `Invalid params for ${methodName}: ${text}`
}

/**
 * method builds an RpcMethod from a positional params schema (`Schema.Tuple`, optional elements
 * via `Schema.optionalElement`) and a handler typed by the decoded tuple. Example:
 * `method("add", Schema.Tuple(Schema.Number, Schema.Number), ([a, b]) => Effect.succeed(a + b), "add a b")`.
 * The handler returns JSON-able data; bigints become JSON numbers (amounts fit a double exactly).
 */
export const method = <P extends ReadonlyArray<unknown>, I, R = never>(
  name: string,
  params: Schema.Schema<P, I, never>,
  run: (params: P) => Effect.Effect<unknown, RpcError, R>,
  help: string,
  paramNames: ReadonlyArray<string> = [],
): RpcMethod<R> => {
  const decode = Schema.decodeUnknownEither(params, { errors: "all", onExcessProperty: "error" })
  return {
    name,
    help,
    paramNames,
    invoke: (raw) =>
      Either.match(decode(raw), {
        onLeft: (error) => Effect.fail(invalidParams(formatParamsError(name, error, paramNames))),
        onRight: run,
      }),
  }
}

// ---------------------------------------------------------------------------------------------
// JSON-RPC envelope

type Version = "1.0" | "2.0"

/** One parsed request: `id` is absent (notification) only for 2.0. */
interface Request {
  readonly version: Version
  readonly id: Option.Option<unknown>
  readonly method: string
  readonly params: ReadonlyArray<unknown> | Readonly<Record<string, unknown>>
}

/** Outcome of one request, already serialized. */
interface Answer {
  readonly version: Version
  readonly id: Option.Option<unknown>
  readonly outcome: Either.Either<string, RpcError>
}

const isRecord = (u: unknown): u is Readonly<Record<string, unknown>> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

/** parseRequest checks one request object as bitcoind's JSONRPCRequest::parse does. */
const parseRequest = (u: unknown): Either.Either<Request, Answer> => {
  if (!isRecord(u)) {
    return Either.left({ version: "2.0", id: Option.some(null), outcome: Either.left(invalidRequest()) })
  }
  const id = Object.hasOwn(u, "id") ? Option.some(u.id) : Option.none()
  const fail = (version: Version, error: RpcError): Either.Either<Request, Answer> =>
    Either.left({ version, id: Option.orElseSome(id, () => null), outcome: Either.left(error) })
  let version: Version = "1.0"
  if (u.jsonrpc !== undefined && u.jsonrpc !== null) {
    if (u.jsonrpc === "2.0") version = "2.0"
    else if (u.jsonrpc !== "1.0") return fail("1.0", invalidRequest("JSON-RPC version not supported"))
  }
  if (u.method === undefined) return fail(version, invalidRequest("Missing method"))
  if (typeof u.method !== "string") return fail(version, invalidRequest("Method must be a string"))
  const params = u.params
  if (params === undefined || params === null)
    return Either.right({ version, id, method: u.method, params: [] })
  if (!Array.isArray(params) && !isRecord(params)) {
    return fail(version, invalidRequest("Params must be an array or object"))
  }
  return Either.right({ version, id, method: u.method, params })
}

/** positional turns a request's params into the array a method decodes (bitcoind's named-args rules). */
const positional = (
  m: RpcMethod<unknown>,
  params: Request["params"],
): Either.Either<Array<unknown>, RpcError> => {
  let out: Array<unknown>
  if (!isRecord(params)) {
    out = [...params]
  } else {
    const named = params
    out = []
    for (const key of Object.keys(named)) {
      const index = m.paramNames.indexOf(key)
      if (index < 0) return Either.left(invalidParameter(`Unknown named parameter ${key}`))
      while (out.length < index) out.push(null)
      out[index] = named[key]
    }
    for (let i = 0; i < out.length; i++) if (!(i in out)) out[i] = null
  }
  while (out.length > 0 && out[out.length - 1] === null) out.pop()
  return Either.right(out)
}

/**
 * toJson serializes a method's result: bigint → JSON number (a defect when not a safe integer, as
 * amounts always are), Uint8Array → a defect (methods return hex), undefined → null.
 */
export const toJson = (value: unknown): string =>
  JSON.stringify(value, function (this: unknown, key: string, v: unknown) {
    // the holder's own value: a Buffer's toJSON would otherwise hide it from `v`
    const raw: unknown = typeof this === "object" && this !== null ? Reflect.get(this, key) : v
    if (raw instanceof Uint8Array) throw new Error(`Uint8Array in RPC result at ${JSON.stringify(key)}`)
    if (typeof v === "bigint") {
      if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
        throw new Error(`bigint ${v} in RPC result is not a safe integer`)
      }
      return Number(v)
    }
    return v
  }) ?? "null"

const errorJson = (error: RpcError): string => JSON.stringify({ code: error.code, message: error.message })

/** writeAnswer renders one answer in its version's shape. */
const writeAnswer = (answer: Answer): string => {
  const id = JSON.stringify(Option.getOrNull(answer.id)) ?? "null"
  return Either.match(answer.outcome, {
    onRight: (result) =>
      answer.version === "2.0"
        ? `{"jsonrpc":"2.0","result":${result},"id":${id}}`
        : `{"result":${result},"error":null,"id":${id}}`,
    onLeft: (error) =>
      answer.version === "2.0"
        ? `{"jsonrpc":"2.0","error":${errorJson(error)},"id":${id}}`
        : `{"result":null,"error":${errorJson(error)},"id":${id}}`,
  })
}

/** legacyStatus is bitcoind's HTTP status for a failed 1.0 request (JSONErrorReply). */
const legacyStatus = (error: RpcError): number =>
  error.code === RpcErrorCode.InvalidRequest ? 400 : error.code === RpcErrorCode.MethodNotFound ? 404 : 500

// ---------------------------------------------------------------------------------------------
// Metrics

/** rpcCalls counts JSON-RPC calls, tagged `method` (unknown names are counted as `(unknown)`). */
export const rpcCalls = Metric.counter("rpc_calls_total", { description: "JSON-RPC calls by method" })
/** rpcErrors counts JSON-RPC error answers, tagged `method` and `code`. */
export const rpcErrors = Metric.counter("rpc_errors_total", { description: "JSON-RPC error answers" })
/** rpcDuration times JSON-RPC calls in seconds, tagged `method`. */
export const rpcDuration = Metric.histogram(
  "rpc_duration_seconds",
  MetricBoundaries.exponential({ start: 0.0005, factor: 2, count: 16 }),
  "JSON-RPC call duration",
)

/** The label for names that are not registered: never the caller's string (label cardinality). */
const unknownMethodLabel = "(unknown)"

// ---------------------------------------------------------------------------------------------
// Dispatch

/** Dispatcher runs one parsed request; never fails, never dies. */
type Dispatcher<R> = (request: Request) => Effect.Effect<Answer, never, R>

const makeDispatcher = <R>(methods: ReadonlyArray<RpcMethod<R>>): Dispatcher<R> => {
  const registry = new Map<string, RpcMethod<R>>()
  for (const m of methods) registry.set(m.name, m)
  if (!registry.has("help")) {
    const helpMethod = method(
      "help",
      Schema.Tuple(Schema.optionalElement(Schema.String)),
      ([name]) => {
        if (name === undefined) return Effect.succeed([...registry.keys()].sort().join("\n"))
        const m = registry.get(name)
        return m === undefined
          ? Effect.fail(miscError(`help: unknown command: ${name}`))
          : Effect.succeed(m.help)
      },
      'help ( "command" )\nList all commands, or get help for a specified command.',
      ["command"],
    )
    registry.set("help", helpMethod)
  }

  return (request) => {
    const m = registry.get(request.method)
    const label = m === undefined ? unknownMethodLabel : m.name
    const run: Effect.Effect<string, RpcError, R> =
      m === undefined
        ? Effect.fail(methodNotFound())
        : Either.match(positional(m, request.params), {
            onLeft: Effect.fail,
            // a result that cannot be serialized is a bug in the method: a defect, answered as -1
            onRight: (params) =>
              Effect.suspend(() => m.invoke(params)).pipe(
                Effect.flatMap((result) => Effect.sync(() => toJson(result))),
              ),
          })
    return run.pipe(
      Effect.either,
      Effect.catchAllCause((cause) =>
        Effect.logError(`RPC ${label} died`, cause).pipe(Effect.as(Either.left(miscError("internal error")))),
      ),
      Effect.timed,
      Effect.flatMap(([elapsed, outcome]) => {
        const tagged = <Type, In, Out>(metric: Metric.Metric<Type, In, Out>) =>
          Metric.tagged(metric, "method", label)
        return Effect.all([
          Metric.increment(tagged(rpcCalls)),
          Metric.update(tagged(rpcDuration), Duration.toSeconds(elapsed)),
          Either.isLeft(outcome)
            ? Metric.increment(Metric.tagged(tagged(rpcErrors), "code", String(outcome.left.code)))
            : Effect.void,
        ]).pipe(Effect.as<Answer>({ version: request.version, id: request.id, outcome }))
      }),
      Effect.annotateLogs("rpc", label),
    )
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/** defaultMaxBodyBytes: requests over 10 MB are refused with HTTP 413 before being buffered. */
export const defaultMaxBodyBytes = 10 * 1024 * 1024

/** RpcAuth: fixed credentials from the config, or a fresh cookie file written at start. */
export type RpcAuth = { readonly user: string; readonly password: string } | { readonly cookieFile: string }

/** RpcServerOptions configure `layer` and `make`. */
export interface RpcServerOptions<M extends RpcMethod<unknown>> {
  readonly listen: { readonly host: string; readonly port: number }
  readonly auth: RpcAuth
  readonly methods: ReadonlyArray<M>
  /** body cap, HTTP 413 beyond it; default `defaultMaxBodyBytes` */
  readonly maxBodyBytes?: number
}

/** RpcServerInfo: where the server listens (the real port when 0 was asked) and its cookie file. */
export interface RpcServerInfo {
  readonly host: string
  readonly port: number
  readonly cookieFile: Option.Option<string>
}

/** RpcServer is the running RPC server; tests read the bound port from it. */
export class RpcServer extends Context.Tag("fibercoin/RpcServer")<RpcServer, RpcServerInfo>() {}

/** cookieUser is the user name bitcoind writes into its cookie file. */
export const cookieUser = "__cookie__"

const digest = (s: string): Buffer => createHash("sha256").update(s, "utf8").digest()

/**
 * acquireCookie writes `__cookie__:<64 hex>` with mode 0600 (replacing a stale file, so the mode
 * is ours) and removes it when the scope closes. Returns the `user:password` it holds. The secret
 * comes straight from node:crypto, not the Entropy service: no simulation runs an RPC server, and a
 * seeded cookie would be a guessable password.
 */
const acquireCookie = (file: string): Effect.Effect<string, RpcStartError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.try({
      try: () => {
        const secret = `${cookieUser}:${randomBytes(32).toString("hex")}`
        fs.mkdirSync(path.dirname(file), { recursive: true })
        fs.rmSync(file, { force: true })
        fs.writeFileSync(file, secret, { mode: 0o600, flag: "wx" })
        fs.chmodSync(file, 0o600)
        return secret
      },
      catch: (e) => new RpcStartError({ message: `cannot write RPC cookie file ${file}: ${String(e)}` }),
    }),
    () => Effect.sync(() => fs.rmSync(file, { force: true })).pipe(Effect.ignoreLogged),
  )

/** checkBasicAuth compares the Authorization header with `expected` in constant time. */
const checkBasicAuth = (header: string | undefined, expected: Buffer): "missing" | "wrong" | "ok" => {
  if (header === undefined) return "missing"
  const match = /^basic\s+(\S+)\s*$/i.exec(header)
  if (match === null || match[1] === undefined) return "wrong"
  const given = digest(Buffer.from(match[1], "base64").toString("utf8"))
  return timingSafeEqual(given, expected) ? "ok" : "wrong"
}

/** wrongPasswordDelay deters brute force, as bitcoind's 250 ms sleep after a bad password. */
const wrongPasswordDelay = Duration.millis(250)

const unauthorized = HttpServerResponse.empty({
  status: 401,
  headers: { "www-authenticate": 'Basic realm="fibercoin"' },
})

const tooLarge = (maxBodyBytes: number) =>
  HttpServerResponse.text(`request body exceeds ${maxBodyBytes} bytes\n`, {
    status: 413,
    headers: { connection: "close" },
  })

const jsonResponse = (body: string, status = 200) =>
  HttpServerResponse.text(`${body}\n`, { status, contentType: "application/json" })

/** BodyResult: the whole body, or why there is none. */
type BodyResult =
  | { readonly _tag: "Body"; readonly bytes: Buffer }
  | { readonly _tag: "TooLarge" }
  | { readonly _tag: "Aborted" }

/**
 * readBody reads at most `maxBytes`: a larger Content-Length is refused unread, and a chunked body
 * is cut off (the socket paused, the rest never read) as soon as it passes the cap. It reads the
 * node request directly: the platform's body stream destroys the socket when cut short, which
 * would leave no way to send the 413.
 */
const readBody = (
  request: HttpServerRequest.HttpServerRequest,
  maxBytes: number,
): Effect.Effect<BodyResult> => {
  const declared = request.headers["content-length"]
  if (declared !== undefined && !(Number(declared) <= maxBytes)) return Effect.succeed({ _tag: "TooLarge" })
  const source = NodeHttpServerRequest.toIncomingMessage(request)
  return Effect.async<BodyResult>((resume) => {
    const chunks: Array<Buffer> = []
    let size = 0
    const detach = () => {
      source.off("data", onData)
      source.off("end", onEnd)
      source.off("error", onError)
      source.off("aborted", onError)
    }
    const finish = (result: BodyResult) => {
      detach()
      resume(Effect.succeed(result))
    }
    function onData(chunk: Buffer) {
      size += chunk.length
      if (size > maxBytes) {
        source.pause()
        finish({ _tag: "TooLarge" })
      } else {
        chunks.push(chunk)
      }
    }
    function onEnd() {
      finish({ _tag: "Body", bytes: Buffer.concat(chunks, size) })
    }
    function onError() {
      finish({ _tag: "Aborted" })
    }
    source.on("data", onData)
    source.on("end", onEnd)
    source.on("error", onError)
    source.on("aborted", onError)
    return Effect.sync(detach)
  })
}

const utf8 = new TextDecoder("utf-8", { fatal: true })

/** handleBody answers one JSON-RPC body: single, batch or garbage. */
const handleBody = <R>(dispatch: Dispatcher<R>, body: Uint8Array) =>
  Effect.gen(function* () {
    let json: unknown
    try {
      json = JSON.parse(utf8.decode(body))
    } catch {
      return jsonResponse(
        writeAnswer({ version: "1.0", id: Option.some(null), outcome: Either.left(parseError()) }),
        500,
      )
    }
    if (Array.isArray(json)) {
      if (json.length === 0) {
        const answer: Answer = {
          version: "2.0",
          id: Option.some(null),
          outcome: Either.left(invalidRequest()),
        }
        return jsonResponse(writeAnswer(answer))
      }
      const answers: Array<string> = []
      for (const item of json) {
        const answer = yield* Either.match(parseRequest(item), { onLeft: Effect.succeed, onRight: dispatch })
        if (Option.isSome(answer.id)) answers.push(writeAnswer(answer))
      }
      return answers.length === 0
        ? HttpServerResponse.empty({ status: 204 })
        : jsonResponse(`[${answers.join(",")}]`)
    }
    if (!isRecord(json)) {
      const error = parseError("Top-level object parse error")
      return jsonResponse(
        writeAnswer({ version: "1.0", id: Option.some(null), outcome: Either.left(error) }),
        500,
      )
    }
    const answer = yield* Either.match(parseRequest(json), { onLeft: Effect.succeed, onRight: dispatch })
    if (Option.isNone(answer.id)) return HttpServerResponse.empty({ status: 204 })
    const status =
      answer.version === "1.0" && Either.isLeft(answer.outcome) ? legacyStatus(answer.outcome.left) : 200
    return jsonResponse(writeAnswer(answer), status)
  })

/**
 * make starts the RPC server in the current scope: writes the cookie (when configured), listens,
 * and serves until the scope closes; then it stops accepting, lets answers in flight finish and
 * removes the cookie. Requests run in their own fibers with the methods' services `R`.
 */
export const make = <M extends RpcMethod<unknown>>(
  options: RpcServerOptions<M>,
): Effect.Effect<RpcServerInfo, RpcStartError, RpcMethodContext<M> | Scope.Scope> =>
  Effect.gen(function* () {
    const maxBodyBytes = options.maxBodyBytes ?? defaultMaxBodyBytes
    const names = options.methods.map((m) => m.name)
    const twice = names.find((name, i) => names.indexOf(name) !== i)
    if (twice !== undefined)
      return yield* new RpcStartError({ message: `RPC method ${twice} is registered twice` })
    const auth = options.auth
    const credentials =
      "cookieFile" in auth ? yield* acquireCookie(auth.cookieFile) : `${auth.user}:${auth.password}`
    const expected = digest(credentials)
    // The one cast: TypeScript cannot see that M (some RpcMethod<X>) is an RpcMethod of its own
    // context RpcMethodContext<M>; it is, since RpcMethod is covariant in R.
    const dispatch = makeDispatcher<RpcMethodContext<M>>(
      options.methods as ReadonlyArray<RpcMethod<RpcMethodContext<M>>>,
    )

    const rpc = Effect.gen(function* () {
      const request = yield* HttpServerRequestTag
      const verdict = checkBasicAuth(request.headers.authorization, expected)
      if (verdict !== "ok") {
        if (verdict === "wrong") {
          yield* Effect.logWarning(
            `RPC incorrect password attempt from ${Option.getOrElse(request.remoteAddress, () => "?")}`,
          )
          yield* Effect.sleep(wrongPasswordDelay)
        }
        return unauthorized
      }
      const body = yield* readBody(request, maxBodyBytes)
      switch (body._tag) {
        case "TooLarge":
          return tooLarge(maxBodyBytes)
        case "Aborted":
          return HttpServerResponse.empty({ status: 400 })
        case "Body":
          return yield* handleBody(dispatch, body.bytes)
      }
    })

    const metrics = Effect.map(prometheusSnapshot, (text) =>
      HttpServerResponse.text(text, { contentType: prometheusContentType }),
    )

    const app = HttpRouter.empty.pipe(HttpRouter.post("/", rpc), HttpRouter.get("/metrics", metrics))

    const server = yield* NodeHttpServer.make(() => createServer(), {
      host: options.listen.host,
      port: options.listen.port,
    }).pipe(
      Effect.mapError(
        (e) =>
          new RpcStartError({
            message: `cannot listen for RPC on ${options.listen.host}:${options.listen.port}: ${
              e.cause instanceof Error ? e.cause.message : String(e.cause)
            }`,
          }),
      ),
    )
    yield* HttpServer.serveEffect(app).pipe(Effect.provideService(HttpServer.HttpServer, server))
    const address = server.address
    const host = address._tag === "TcpAddress" ? address.hostname : address.path
    const port = address._tag === "TcpAddress" ? address.port : 0
    yield* Effect.logInfo(`RPC listening on ${host}:${port}`)
    return {
      host,
      port,
      cookieFile: "cookieFile" in auth ? Option.some(auth.cookieFile) : Option.none(),
    }
  })

/** layer runs the RPC server for the layer's lifetime and provides where it listens. */
export const layer = <M extends RpcMethod<unknown>>(
  options: RpcServerOptions<M>,
): Layer.Layer<RpcServer, RpcStartError, RpcMethodContext<M>> => Layer.scoped(RpcServer, make(options))
