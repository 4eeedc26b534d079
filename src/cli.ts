#!/usr/bin/env node
/**
 * fibercoin-cli, the RPC client (like bitcoin-cli):
 * `node dist/cli.js [--rpc HOST:PORT] [--datadir DIR] [--rpcuser U --rpcpassword P] <method> [params…]`.
 * Params are parsed as JSON where they parse, else passed as strings (a run of digits too long for
 * a safe integer stays a string: it is a hash, never an amount). Options may also follow the
 * method; put `--` before params that look like options. Prints the result: nothing for null, a
 * bare string or number, else pretty JSON.
 *
 * Exit codes (CONTRACT.md): 0 ok, 1 RPC error (code and message on stderr), 2 usage error,
 * 3 cannot connect (nothing listening, or no cookie file to log in with).
 */
import * as path from "node:path"
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Console, Effect, Exit, Layer, Option, Schema } from "effect"
import { call, type RpcClientError, type RpcConnectError } from "./rpc/Client.js"
import type { RpcError } from "./rpc/Server.js"
import { VERSION } from "./version.js"

/** UsageError: the command line is wrong in a way @effect/cli cannot see (exit 2). */
class UsageError extends Schema.TaggedError<UsageError>()("UsageError", { message: Schema.String }) {}

/** parseHostPort reads `HOST:PORT` or `[IPv6]:PORT`. */
const parseHostPort = (text: string): Option.Option<{ host: string; port: number }> => {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text)
  if (match === null) return Option.none()
  const host = match[1] ?? match[2]
  const port = Number(match[3])
  return host === undefined || port > 65535 ? Option.none() : Option.some({ host, port })
}

/** parseParam: JSON where it parses, else the string itself (bitcoin-cli's rule, simplified). */
const parseParam = (text: string): unknown => {
  if (/^\d+$/.test(text) && !Number.isSafeInteger(Number(text))) return text
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

/** render is what bitcoin-cli prints for a result: nothing for null, bare strings, else JSON. */
const render = (result: unknown): Option.Option<string> => {
  if (result === null || result === undefined) return Option.none()
  if (typeof result === "string") return Option.some(result)
  return Option.some(JSON.stringify(result, null, 2))
}

const rpc = Options.text("rpc").pipe(
  Options.withPseudoName("HOST:PORT"),
  Options.withDescription("RPC server address"),
  Options.withDefault("127.0.0.1:18443"),
)
const datadir = Options.text("datadir").pipe(
  Options.withPseudoName("DIR"),
  Options.withDescription(
    "data directory; the cookie file <datadir>/.cookie is used unless --rpcuser is given",
  ),
  Options.withDefault("./.fibercoin"),
)
const rpcuser = Options.text("rpcuser").pipe(
  Options.withPseudoName("USER"),
  Options.withDescription("RPC user name"),
  Options.optional,
)
const rpcpassword = Options.text("rpcpassword").pipe(
  Options.withPseudoName("PASSWORD"),
  Options.withDescription("RPC password"),
  Options.optional,
)
const method = Args.text({ name: "method" }).pipe(Args.withDescription("RPC method, e.g. getblockcount"))
const params = Args.text({ name: "params" }).pipe(
  Args.withDescription("params, each parsed as JSON where it parses, else a string"),
  Args.repeated,
)

const command = Command.make(
  "fibercoin-cli",
  { rpc, datadir, rpcuser, rpcpassword, method, params },
  (args) =>
    Effect.gen(function* () {
      const address = yield* Option.match(parseHostPort(args.rpc), {
        onNone: () => Effect.fail(new UsageError({ message: `--rpc: expected HOST:PORT, got ${args.rpc}` })),
        onSome: Effect.succeed,
      })
      if (args.method.startsWith("-")) {
        return yield* new UsageError({ message: `unknown option ${args.method}` })
      }
      if (Option.isSome(args.rpcuser) !== Option.isSome(args.rpcpassword)) {
        return yield* new UsageError({ message: "--rpcuser and --rpcpassword go together" })
      }
      const auth =
        Option.isSome(args.rpcuser) && Option.isSome(args.rpcpassword)
          ? { user: args.rpcuser.value, password: args.rpcpassword.value }
          : { cookieFile: path.join(args.datadir, ".cookie") }
      const result = yield* call({ ...address, auth }, args.method, args.params.map(parseParam))
      yield* Option.match(render(result), { onNone: () => Effect.void, onSome: Console.log })
    }),
).pipe(Command.withDescription("Send one JSON-RPC call to a fibercoin node and print the result."))

const cli = Command.run(command, { name: "fibercoin-cli", version: VERSION })

/** report prints a failure the way bitcoin-cli does and picks the contract's exit code. */
const report = (
  error: RpcError | RpcConnectError | RpcClientError | UsageError | ValidationError.ValidationError,
): Effect.Effect<number> => {
  if (ValidationError.isValidationError(error)) return Effect.succeed(2) // @effect/cli printed it
  switch (error._tag) {
    case "RpcError":
      return Console.error(`error code: ${error.code}\nerror message:\n${error.message}`).pipe(Effect.as(1))
    case "RpcClientError":
      return Console.error(`error: ${error.message}`).pipe(Effect.as(1))
    case "RpcConnectError":
      return Console.error(`error: ${error.message}`).pipe(Effect.as(3))
    case "UsageError":
      return Console.error(`error: ${error.message}`).pipe(Effect.as(2))
  }
}

const main: Effect.Effect<number> = cli(process.argv).pipe(
  Effect.as(0),
  Effect.catchAll(report),
  Effect.provide(Layer.merge(NodeContext.layer, NodeHttpClient.layerUndici)),
)

NodeRuntime.runMain(main, {
  disableErrorReporting: true,
  teardown: (exit, onExit) => {
    // success carries report's code; a failure here is a defect, or Ctrl-C (130, as a shell's)
    let code = 1
    if (Exit.isSuccess(exit)) code = typeof exit.value === "number" ? exit.value : 1
    else if (Cause.isInterruptedOnly(exit.cause)) code = 130
    else console.error(`error: ${Cause.pretty(exit.cause)}`)
    process.exitCode = code
    onExit(code)
  },
})
