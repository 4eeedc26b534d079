#!/usr/bin/env node
/**
 * fibercoin's node program: `node dist/main.js [--config FILE] [flags]`. Flags override the file,
 * the file overrides the network's defaults (src/schema/config.ts). Exit codes (CONTRACT.md): 0 after
 * a clean shutdown (SIGINT, SIGTERM or the `stop` RPC), 2 for a bad config or flag (the message names
 * the key), 1 for any other fatal error (one clear line).
 */
import { readFileSync } from "node:fs"
import { Command, Options } from "@effect/cli"
import { Effect, Either, Logger, LogLevel, Option } from "effect"
import { exitCodeOf, runProgram } from "./exitCode.js"
import * as Node from "./node/Node.js"
import {
  ConfigError,
  type ConfigFile,
  checkConfig,
  decodeConfigFile,
  type HostPort,
  type PeerAddress,
  parseHostPort,
  parsePeerAddress,
  resolveConfig,
} from "./schema/config.js"
import { VERSION } from "./version.js"

const optionalText = (name: string, description: string) =>
  Options.text(name).pipe(Options.withDescription(description), Options.optional)
const repeatedText = (name: string, description: string) =>
  Options.text(name).pipe(Options.withDescription(description), Options.repeated)

const options = {
  config: optionalText("config", "node.json to read (flags override it)"),
  network: Options.choice("network", ["regtest", "testnet", "mainnet"]).pipe(
    Options.withDescription("chain to run (default regtest)"),
    Options.optional,
  ),
  datadir: optionalText("datadir", "data directory (default ./.fibercoin)"),
  role: Options.choice("role", ["full", "miner", "light"]).pipe(
    Options.withDescription("node role"),
    Options.optional,
  ),
  listen: optionalText("listen", "P2P address HOST:PORT"),
  rpc: optionalText("rpc", "JSON-RPC address HOST:PORT"),
  connect: repeatedText(
    "connect",
    "HOST:PORT or udp:NODEKEY@SERVER:PORT, repeatable: connect only to these peers",
  ),
  addnode: repeatedText(
    "addnode",
    "HOST:PORT or udp:NODEKEY@SERVER:PORT (a NAT'd node through a rendezvous server), repeatable: extra peers",
  ),
  rendezvous: repeatedText("rendezvous", "HOST:PORT, repeatable: UDP rendezvous servers"),
  udp: optionalText("udp", "this node's UDP address HOST:PORT"),
  mine: Options.boolean("mine").pipe(Options.withDescription("mine blocks")),
  miningAddress: optionalText("mining-address", "address the miner pays"),
  logLevel: Options.choice("log-level", ["trace", "debug", "info", "warning", "error", "fatal", "none"]).pipe(
    Options.withDescription("log level (default info)"),
    Options.optional,
  ),
  logFormat: Options.choice("log-format", ["pretty", "json"]).pipe(
    Options.withDescription("log format"),
    Options.optional,
  ),
  storage: Options.choice("storage", ["lmdb", "memory"]).pipe(
    Options.withDescription("storage engine"),
    Options.optional,
  ),
  reindex: Options.boolean("reindex").pipe(
    Options.withDescription("rebuild the chain state from the stored blocks"),
  ),
  snapshot: optionalText("snapshot", "UTXO snapshot FILE (dumptxoutset's) to start from at genesis"),
  snapshotHash: optionalText(
    "snapshot-hash",
    "the snapshot id (64 hex) you vouch for, if not committed in the params",
  ),
  snapshotId: optionalText(
    "snapshot-id",
    "load the UTXO snapshot with this id (64 hex) from peers at genesis",
  ),
}

type Flags = {
  readonly [K in keyof typeof options]: (typeof options)[K] extends Options.Options<infer A> ? A : never
}

const endpoint = (flag: string, value: string): Either.Either<HostPort, ConfigError> => {
  const hp = parseHostPort(value)
  return hp === undefined
    ? Either.left(
        new ConfigError({
          message: `--${flag}: expected HOST:PORT with a port 0-65535, got ${JSON.stringify(value)}`,
        }),
      )
    : Either.right(hp)
}

const peerAddress = (flag: string, value: string): Either.Either<PeerAddress, ConfigError> => {
  const a = parsePeerAddress(value)
  return a === undefined
    ? Either.left(
        new ConfigError({
          message: `--${flag}: expected HOST:PORT (port 0-65535) or udp:<64-hex node key>@HOST:PORT, got ${JSON.stringify(value)}`,
        }),
      )
    : Either.right(a)
}

/** overridesOf turns parsed flags into a partial config, validating each HOST:PORT. */
const overridesOf = (f: Flags) =>
  Either.gen(function* () {
    const one = (flag: string, v: Option.Option<string>) =>
      Option.isSome(v)
        ? Either.map(endpoint(flag, v.value), Option.some)
        : Either.right(Option.none<HostPort>())
    const many = (flag: string, vs: ReadonlyArray<string>) => Either.all(vs.map((v) => endpoint(flag, v)))
    const listen = yield* one("listen", f.listen)
    const rpc = yield* one("rpc", f.rpc)
    const udp = yield* one("udp", f.udp)
    const peers = (flag: string, vs: ReadonlyArray<string>) => Either.all(vs.map((v) => peerAddress(flag, v)))
    const connect = yield* peers("connect", f.connect)
    const addnode = yield* peers("addnode", f.addnode)
    const rendezvous = yield* many("rendezvous", f.rendezvous)
    const overrides: ConfigFile & { reindex?: boolean } = {
      ...Option.match(f.network, { onNone: () => ({}), onSome: (network) => ({ network }) }),
      ...Option.match(f.datadir, { onNone: () => ({}), onSome: (dataDir) => ({ dataDir }) }),
      ...Option.match(f.role, { onNone: () => ({}), onSome: (role) => ({ role }) }),
      ...Option.match(f.storage, { onNone: () => ({}), onSome: (storage) => ({ storage }) }),
      ...Option.match(listen, { onNone: () => ({}), onSome: (l) => ({ listen: l }) }),
      ...Option.match(rpc, { onNone: () => ({}), onSome: (l) => ({ rpc: { listen: l } }) }),
      ...Option.match(udp, { onNone: () => ({}), onSome: (u) => ({ udp: u }) }),
      ...(connect.length > 0 ? { connect } : {}),
      ...(addnode.length > 0 ? { addnode } : {}),
      ...(rendezvous.length > 0 ? { rendezvous } : {}),
      mining: {
        ...(f.mine ? { enabled: true } : {}),
        ...Option.match(f.miningAddress, { onNone: () => ({}), onSome: (address) => ({ address }) }),
      },
      log: {
        ...Option.match(f.logLevel, { onNone: () => ({}), onSome: (level) => ({ level }) }),
        ...Option.match(f.logFormat, { onNone: () => ({}), onSome: (format) => ({ format }) }),
      },
      reindex: f.reindex,
      ...Option.match(f.snapshot, { onNone: () => ({}), onSome: (snapshot) => ({ snapshot }) }),
      ...Option.match(f.snapshotHash, { onNone: () => ({}), onSome: (snapshotHash) => ({ snapshotHash }) }),
      ...Option.match(f.snapshotId, { onNone: () => ({}), onSome: (snapshotId) => ({ snapshotId }) }),
    }
    return overrides
  })

const readConfigFile = (path: string): Either.Either<ConfigFile, ConfigError> => {
  let text: string
  try {
    text = readFileSync(path, "utf8")
  } catch (e) {
    return Either.left(
      new ConfigError({
        message: `--config: cannot read ${path}: ${e instanceof Error ? e.message : String(e)}`,
      }),
    )
  }
  return decodeConfigFile(text, path)
}

const logLevels = {
  trace: LogLevel.Trace,
  debug: LogLevel.Debug,
  info: LogLevel.Info,
  warning: LogLevel.Warning,
  error: LogLevel.Error,
  fatal: LogLevel.Fatal,
  none: LogLevel.None,
} as const

const command = Command.make("fibercoin", options, (flags) =>
  Effect.gen(function* () {
    const file = Option.isSome(flags.config) ? yield* readConfigFile(flags.config.value) : {}
    const config = yield* checkConfig(resolveConfig(file, yield* overridesOf(flags)))
    const logger = config.log.format === "json" ? Logger.jsonLogger : Logger.prettyLoggerDefault
    return yield* Node.run(config).pipe(
      Effect.provide(Logger.replace(Logger.defaultLogger, logger)),
      Logger.withMinimumLogLevel(logLevels[config.log.level]),
    )
  }),
)

const cli = Command.run(command, { name: "fibercoin", version: VERSION })

/**
 * exitCode maps how the program ended to CONTRACT.md's codes, printing one line for a failure:
 * 2 for a config or flag error, 1 for anything else, 0 for success or a signal's interruption.
 */
const exitCode = exitCodeOf("fibercoin", (e) => {
  if (!(e instanceof ConfigError)) return undefined
  console.error(`fibercoin: bad configuration: ${e.message}`)
  return 2
})

runProgram(cli(process.argv), exitCode)
