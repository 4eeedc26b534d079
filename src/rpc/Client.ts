/**
 * A small JSON-RPC client for fibercoin's RPC server (used by `cli.ts` and end-to-end tests), over
 * @effect/platform's HttpClient: provide `NodeHttpClient.layer` (or `layerUndici`). Credentials
 * are a user/password pair or the node's cookie file, read again at every call, since a restarted
 * node writes a new one.
 */
import { readFile } from "node:fs/promises"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { Duration, Effect, Schema } from "effect"
import { type RpcAuth, RpcError, toJson } from "./Server.js"

/** RpcConnectError: no server answered (refused, unreachable, timed out) or no cookie to log in with. */
export class RpcConnectError extends Schema.TaggedError<RpcConnectError>()("RpcConnectError", {
  message: Schema.String,
}) {}

/** RpcClientError: the server answered, but not with a JSON-RPC answer (401, garbage, …). */
export class RpcClientError extends Schema.TaggedError<RpcClientError>()("RpcClientError", {
  message: Schema.String,
}) {}

/** RpcClientOptions: where the server is and how to log in. */
export interface RpcClientOptions {
  readonly host: string
  readonly port: number
  readonly auth: RpcAuth
  /** whole-call limit; none by default (a call like generatetoaddress may take long) */
  readonly timeout?: Duration.DurationInput
}

const readCredentials = (
  auth: RpcAuth,
): Effect.Effect<{ user: string; password: string }, RpcConnectError> =>
  "cookieFile" in auth
    ? Effect.tryPromise({
        try: () => readFile(auth.cookieFile, "utf8"),
        catch: (e) =>
          new RpcConnectError({
            message:
              `cannot read the RPC cookie file ${auth.cookieFile} (${e instanceof Error ? e.message : String(e)}); ` +
              "is the node running with this data directory? Or pass --rpcuser and --rpcpassword",
          }),
      }).pipe(
        Effect.flatMap((text) => {
          const line = text.trim()
          const colon = line.indexOf(":")
          return colon < 0
            ? Effect.fail(new RpcConnectError({ message: `malformed RPC cookie file ${auth.cookieFile}` }))
            : Effect.succeed({ user: line.slice(0, colon), password: line.slice(colon + 1) })
        }),
      )
    : Effect.succeed({ user: auth.user, password: auth.password })

const hostForUrl = (host: string): string =>
  host.includes(":") && !host.startsWith("[") ? `[${host}]` : host

const isRecord = (u: unknown): u is Readonly<Record<string, unknown>> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

/** interpret reads a JSON-RPC answer (2.0 or bitcoind's 1.0 shape, any HTTP status) into result or error. */
const interpret = (status: number, text: string): Effect.Effect<unknown, RpcError | RpcClientError> => {
  if (status === 401) {
    return Effect.fail(
      new RpcClientError({ message: "authorization failed: incorrect rpcuser or rpcpassword" }),
    )
  }
  if (status === 204) return Effect.succeed(null)
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    return Effect.fail(new RpcClientError({ message: `HTTP ${status} with a body that is not JSON` }))
  }
  if (!isRecord(body)) {
    return Effect.fail(new RpcClientError({ message: `HTTP ${status} with an unexpected body` }))
  }
  const error = body.error
  if (isRecord(error) && typeof error.code === "number" && typeof error.message === "string") {
    return Effect.fail(new RpcError({ code: error.code, message: error.message }))
  }
  if (error !== undefined && error !== null) {
    return Effect.fail(
      new RpcClientError({ message: `HTTP ${status} with a malformed error ${JSON.stringify(error)}` }),
    )
  }
  if (!Object.hasOwn(body, "result")) {
    return Effect.fail(new RpcClientError({ message: `HTTP ${status} without a result` }))
  }
  return Effect.succeed(body.result)
}

/**
 * call sends one JSON-RPC 2.0 request and returns its result: RpcError for an error answer,
 * RpcConnectError when nothing answers, RpcClientError when the answer is not JSON-RPC.
 */
export const call = (
  options: RpcClientOptions,
  method: string,
  params: ReadonlyArray<unknown> = [],
): Effect.Effect<unknown, RpcError | RpcConnectError | RpcClientError, HttpClient.HttpClient> =>
  Effect.gen(function* () {
    const client = yield* HttpClient.HttpClient
    const { user, password } = yield* readCredentials(options.auth)
    const address = `${hostForUrl(options.host)}:${options.port}`
    const body = yield* Effect.try({
      try: () => toJson({ jsonrpc: "2.0", id: 1, method, params }),
      catch: (e) => new RpcClientError({ message: `cannot encode params: ${String(e)}` }),
    })
    const request = HttpClientRequest.post(`http://${address}/`).pipe(
      HttpClientRequest.basicAuth(user, password),
      HttpClientRequest.bodyText(body, "application/json"),
    )
    const exchange = client.execute(request).pipe(
      Effect.flatMap((response) => Effect.map(response.text, (text) => [response.status, text] as const)),
      Effect.catchTags({
        RequestError: (e) =>
          Effect.fail(
            new RpcConnectError({
              message: `cannot connect to the RPC server at ${address}: ${describeCause(e.cause)}`,
            }),
          ),
        ResponseError: (e) =>
          Effect.fail(new RpcClientError({ message: `bad answer from ${address}: ${e.message}` })),
      }),
    )
    const timed =
      options.timeout === undefined
        ? exchange
        : exchange.pipe(
            Effect.timeoutFail({
              duration: options.timeout,
              onTimeout: () =>
                new RpcConnectError({
                  message: `no answer from ${address} within ${Duration.format(Duration.decode(options.timeout ?? 0))}`,
                }),
            }),
          )
    const [status, text] = yield* timed
    return yield* interpret(status, text)
  })

/** describeCause turns a transport failure into one line (ECONNREFUSED, ENOTFOUND, …). */
const describeCause = (cause: unknown): string => {
  for (let e: unknown = cause, depth = 0; e instanceof Error && depth < 4; depth++) {
    if ("code" in e && typeof e.code === "string")
      return e.message.includes(e.code) ? e.message : `${e.code} (${e.message})`
    e = e instanceof AggregateError && e.errors.length > 0 ? e.errors[0] : e.cause
  }
  return cause instanceof Error ? cause.message : String(cause)
}
