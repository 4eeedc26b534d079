import { Either, ParseResult, Schema } from "effect"
import { fromHex, toHex } from "./hex.js"
import { endpointKey } from "./netaddr.js"

/** HostPort is a `host:port` endpoint (IPv6 hosts in brackets: `[::1]:18444`). */
export interface HostPort {
  readonly host: string
  readonly port: number
}

const hostPortPattern = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/

/** parseHostPort reads `host:port`; undefined when malformed or the port is out of range. */
export const parseHostPort = (s: string): HostPort | undefined => {
  const m = hostPortPattern.exec(s)
  if (m === null) return undefined
  const port = Number(m[3])
  if (port > 65535) return undefined
  return { host: m[1] ?? m[2]!, port }
}

/** HostPortString decodes `"host:port"` to a HostPort and encodes it back. */
export const HostPortString = Schema.transformOrFail(
  Schema.String,
  Schema.Struct({ host: Schema.String, port: Schema.Number }),
  {
    strict: true,
    decode: (s, _, ast) => {
      const hp = parseHostPort(s)
      return hp === undefined
        ? ParseResult.fail(
            new ParseResult.Type(
              ast,
              s,
              `expected "host:port" with a port 0-65535, got ${JSON.stringify(s)}`,
            ),
          )
        : ParseResult.succeed(hp)
    },
    encode: (hp) =>
      ParseResult.succeed(hp.host.includes(":") ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`),
  },
)

/**
 * PeerAddress is a peer to connect to: a TCP `host:port`, or with `nodeKey` the NAT'd node with that
 * x-only key, reached through the rendezvous server `host:port` over UDP (written
 * `udp:<64-hex node key>@host:port`; getnetworkinfo's `udpaddresses` are in this form).
 */
export interface PeerAddress extends HostPort {
  readonly nodeKey?: Uint8Array
}

const udpPeerPattern = /^udp:([0-9a-fA-F]{64})@(.+)$/

/** parsePeerAddress reads `host:port` or `udp:<64 hex>@host:port`; undefined when malformed. */
export const parsePeerAddress = (s: string): PeerAddress | undefined => {
  if (!s.startsWith("udp:")) return parseHostPort(s)
  const m = udpPeerPattern.exec(s)
  const server = m === null ? undefined : parseHostPort(m[2]!)
  const nodeKey = m === null ? undefined : fromHex(m[1]!)
  return server === undefined || nodeKey === undefined ? undefined : { ...server, nodeKey }
}

/** peerAddressText is a PeerAddress's canonical text (map keys, logs, RPC answers). */
export const peerAddressText = (a: PeerAddress): string => {
  const server = endpointKey(a)
  return a.nodeKey === undefined ? server : `udp:${toHex(a.nodeKey)}@${server}`
}

const peerAddressExpected = 'expected "host:port" (port 0-65535) or "udp:<64-hex node key>@host:port"'

/** PeerAddressString decodes a peer's address text (TCP or UDP through a rendezvous server) and encodes it back. */
export const PeerAddressString = Schema.transformOrFail(
  Schema.String,
  Schema.Struct({
    host: Schema.String,
    port: Schema.Number,
    nodeKey: Schema.optionalWith(Schema.Uint8ArrayFromSelf, { exact: true }),
  }),
  {
    strict: true,
    decode: (s, _, ast) => {
      const a = parsePeerAddress(s)
      return a === undefined
        ? ParseResult.fail(new ParseResult.Type(ast, s, `${peerAddressExpected}, got ${JSON.stringify(s)}`))
        : ParseResult.succeed(a)
    },
    encode: (a) => ParseResult.succeed(peerAddressText(a)),
  },
)

const NonNegativeInt = Schema.Number.pipe(Schema.int(), Schema.nonNegative())
const PositiveInt = Schema.Number.pipe(Schema.int(), Schema.positive())
/** SnapshotIdHex is a UTXO snapshot id: 64 hex characters. */
const SnapshotIdHex = Schema.String.pipe(
  Schema.pattern(/^[0-9a-fA-F]{64}$/),
  Schema.annotations({ message: () => "expected a snapshot id: 64 hex characters" }),
)

const NonNegativeNumber = Schema.Number.pipe(Schema.nonNegative(), Schema.finite())

/** Bucket is a token bucket in node.json: `burst` at most, refilled at `rate` a second. */
export const Bucket = Schema.Struct({
  rate: NonNegativeNumber,
  burst: NonNegativeNumber,
})

/**
 * SpamConfig overrides the spam filter's policy (src/actors/spamPolicy.ts has the defaults and what
 * each limit does): per-IP connection rate, per-peer buckets, the per-IP datagram bucket (rendezvous
 * requests, UDP session opens), getdata size, inbound caps per IP and subnet, the ban threshold; and
 * the rendezvous server's registration caps, in total and per IP (RendezvousLimits).
 */
export const SpamConfig = Schema.Struct({
  connections: Schema.optional(Bucket),
  messages: Schema.optional(Bucket),
  bytes: Schema.optional(Bucket),
  inv: Schema.optional(Bucket),
  addr: Schema.optional(Bucket),
  tx: Schema.optional(Bucket),
  unrequestedBlocks: Schema.optional(Bucket),
  datagrams: Schema.optional(Bucket),
  filters: Schema.optional(Bucket),
  maxGetDataItems: Schema.optional(PositiveInt),
  maxInboundPerIp: Schema.optional(NonNegativeInt),
  maxInboundPer24: Schema.optional(NonNegativeInt),
  maxInboundPer16: Schema.optional(NonNegativeInt),
  banThreshold: Schema.optional(PositiveInt),
  maxRegistrations: Schema.optional(NonNegativeInt),
  maxRegistrationsPerIp: Schema.optional(NonNegativeInt),
})
export type SpamConfig = typeof SpamConfig.Type

/** NetworkName: the chain a node runs. */
export const NetworkName = Schema.Literal("regtest", "testnet", "mainnet")
/** Role: full (validates and relays), miner (full + mining), light (headers and proofs only). */
export const Role = Schema.Literal("full", "miner", "light")
export const StorageKind = Schema.Literal("lmdb", "memory")
export const LogLevel = Schema.Literal("trace", "debug", "info", "warning", "error", "fatal", "none")
export const LogFormat = Schema.Literal("pretty", "json")

/**
 * ConfigFile is node.json as CONTRACT.md fixes it: every key optional, defaults per network, and an
 * unknown key is an error (decoded with `onExcessProperty: "error"`).
 */
export const ConfigFile = Schema.Struct({
  network: Schema.optional(NetworkName),
  dataDir: Schema.optional(Schema.NonEmptyString),
  role: Schema.optional(Role),
  storage: Schema.optional(StorageKind),
  listen: Schema.optional(HostPortString),
  rpc: Schema.optional(
    Schema.Struct({
      listen: Schema.optional(HostPortString),
      user: Schema.optional(Schema.NonEmptyString),
      password: Schema.optional(Schema.NonEmptyString),
    }),
  ),
  connect: Schema.optional(Schema.Array(PeerAddressString)),
  addnode: Schema.optional(Schema.Array(PeerAddressString)),
  udp: Schema.optional(HostPortString),
  rendezvous: Schema.optional(Schema.Array(HostPortString)),
  mining: Schema.optional(
    Schema.Struct({
      enabled: Schema.optional(Schema.Boolean),
      address: Schema.optional(Schema.NonEmptyString),
      minTxs: Schema.optional(NonNegativeInt),
      workers: Schema.optional(PositiveInt),
    }),
  ),
  limits: Schema.optional(
    Schema.Struct({
      maxInbound: Schema.optional(NonNegativeInt),
      maxOutbound: Schema.optional(NonNegativeInt),
      maxOutboundUdp: Schema.optional(NonNegativeInt),
      maxMempoolBytes: Schema.optional(PositiveInt),
      handshakeTimeoutSeconds: Schema.optional(PositiveInt),
      banSeconds: Schema.optional(NonNegativeInt),
    }),
  ),
  spam: Schema.optional(SpamConfig),
  wallet: Schema.optional(Schema.Struct({ passphrase: Schema.optional(Schema.NonEmptyString) })),
  snapshot: Schema.optional(Schema.NonEmptyString),
  snapshotHash: Schema.optional(SnapshotIdHex),
  snapshotId: Schema.optional(SnapshotIdHex),
  log: Schema.optional(
    Schema.Struct({ level: Schema.optional(LogLevel), format: Schema.optional(LogFormat) }),
  ),
})
export type ConfigFile = typeof ConfigFile.Type

/** NodeConfig is the resolved configuration: every key present. */
export interface NodeConfig {
  readonly network: typeof NetworkName.Type
  readonly dataDir: string
  readonly role: typeof Role.Type
  readonly storage: typeof StorageKind.Type
  readonly listen: HostPort
  readonly rpc: { readonly listen: HostPort; readonly user?: string; readonly password?: string }
  readonly connect: ReadonlyArray<PeerAddress>
  readonly addnode: ReadonlyArray<PeerAddress>
  readonly udp: HostPort
  readonly rendezvous: ReadonlyArray<HostPort>
  readonly mining: {
    readonly enabled: boolean
    readonly address?: string
    readonly minTxs: number
    readonly workers: number
  }
  readonly limits: {
    readonly maxInbound: number
    readonly maxOutbound: number
    /** outbound UDP sessions to NAT'd nodes found by gossip (beside maxOutbound) */
    readonly maxOutboundUdp: number
    readonly maxMempoolBytes: number
    readonly handshakeTimeoutSeconds: number
    readonly banSeconds: number
  }
  /** overrides of the spam policy's defaults (the node merges them over defaultSpamPolicy) */
  readonly spam: SpamConfig
  readonly wallet: { readonly passphrase?: string }
  readonly log: { readonly level: typeof LogLevel.Type; readonly format: typeof LogFormat.Type }
  /** --reindex: rebuild the chain state from the stored blocks at start */
  readonly reindex: boolean
  /**
   * --snapshot FILE: a UTXO snapshot (dumptxoutset's) to start from when the chain is at genesis; it
   * loads only if committed in the network params or named by `snapshotHash` (issue 9)
   */
  readonly snapshot?: string
  /** --snapshot-hash ID: the snapshot id (64 hex) the operator vouches for */
  readonly snapshotHash?: string
  /** --snapshot-id ID: load this snapshot (the operator's word) from peers when the chain is at genesis */
  readonly snapshotId?: string
}

/** ConfigError: a bad config file or flag. The message names the offending key and what was expected. */
export class ConfigError extends Schema.TaggedError<ConfigError>()("ConfigError", {
  message: Schema.String,
}) {}

/** decodeConfigFile parses and decodes node.json text, refusing unknown keys. */
export const decodeConfigFile = (text: string, source: string): Either.Either<ConfigFile, ConfigError> => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (e) {
    return Either.left(
      new ConfigError({ message: `${source}: not JSON: ${e instanceof Error ? e.message : String(e)}` }),
    )
  }
  return Either.mapLeft(
    Schema.decodeUnknownEither(ConfigFile, { onExcessProperty: "error", errors: "all" })(json),
    (e) => new ConfigError({ message: `${source}: ${ParseResult.TreeFormatter.formatErrorSync(e)}` }),
  )
}

/** ports of each network: p2p, rpc, udp (CONTRACT.md). */
const ports = {
  regtest: { p2p: 18444, rpc: 18443, udp: 18445 },
  testnet: { p2p: 28444, rpc: 28443, udp: 28445 },
  mainnet: { p2p: 8888, rpc: 8887, udp: 8889 },
} as const

/**
 * resolveConfig lays `overrides` (flags) over `file` over the network's defaults. `npm start`'s
 * embedded default is `resolveConfig({}, {})`: a regtest miner with RPC on 127.0.0.1:18443 and data in
 * ./.fibercoin.
 */
export const resolveConfig = (
  file: ConfigFile,
  overrides: ConfigFile & { readonly reindex?: boolean },
): NodeConfig => {
  const network = overrides.network ?? file.network ?? "regtest"
  const port = ports[network]
  const role = overrides.role ?? file.role ?? (network === "regtest" ? "miner" : "full")
  const user = overrides.rpc?.user ?? file.rpc?.user
  const password = overrides.rpc?.password ?? file.rpc?.password
  const address = overrides.mining?.address ?? file.mining?.address
  const passphrase = overrides.wallet?.passphrase ?? file.wallet?.passphrase
  return {
    network,
    dataDir: overrides.dataDir ?? file.dataDir ?? "./.fibercoin",
    role,
    storage: overrides.storage ?? file.storage ?? "lmdb",
    listen: overrides.listen ?? file.listen ?? { host: "127.0.0.1", port: port.p2p },
    rpc: {
      listen: overrides.rpc?.listen ?? file.rpc?.listen ?? { host: "127.0.0.1", port: port.rpc },
      ...(user === undefined ? {} : { user }),
      ...(password === undefined ? {} : { password }),
    },
    connect: overrides.connect ?? file.connect ?? [],
    addnode: [...(file.addnode ?? []), ...(overrides.addnode ?? [])],
    udp: overrides.udp ?? file.udp ?? { host: "127.0.0.1", port: port.udp },
    rendezvous: overrides.rendezvous ?? file.rendezvous ?? [],
    mining: {
      enabled: overrides.mining?.enabled ?? file.mining?.enabled ?? role === "miner",
      ...(address === undefined ? {} : { address }),
      minTxs: overrides.mining?.minTxs ?? file.mining?.minTxs ?? 0,
      workers: overrides.mining?.workers ?? file.mining?.workers ?? 1,
    },
    limits: {
      maxInbound: file.limits?.maxInbound ?? 117,
      maxOutbound: file.limits?.maxOutbound ?? 8,
      maxOutboundUdp: file.limits?.maxOutboundUdp ?? 2,
      maxMempoolBytes: file.limits?.maxMempoolBytes ?? 300_000_000,
      handshakeTimeoutSeconds: file.limits?.handshakeTimeoutSeconds ?? 60,
      banSeconds: file.limits?.banSeconds ?? 86_400,
    },
    spam: { ...file.spam, ...overrides.spam },
    wallet: passphrase === undefined ? {} : { passphrase },
    log: {
      level: overrides.log?.level ?? file.log?.level ?? "info",
      format: overrides.log?.format ?? file.log?.format ?? "pretty",
    },
    reindex: overrides.reindex ?? false,
    ...snapshotKeys(overrides.snapshot ?? file.snapshot, overrides.snapshotHash ?? file.snapshotHash),
    ...snapshotIdKey(overrides.snapshotId ?? file.snapshotId),
  }
}

const snapshotIdKey = (snapshotId: string | undefined) =>
  snapshotId === undefined ? {} : { snapshotId: snapshotId.toLowerCase() }

const snapshotKeys = (snapshot: string | undefined, snapshotHash: string | undefined) => ({
  ...(snapshot === undefined ? {} : { snapshot }),
  ...(snapshotHash === undefined ? {} : { snapshotHash: snapshotHash.toLowerCase() }),
})

/** checkConfig refuses combinations no single key can express as wrong (user without password, …). */
export const checkConfig = (c: NodeConfig): Either.Either<NodeConfig, ConfigError> => {
  if ((c.rpc.user === undefined) !== (c.rpc.password === undefined)) {
    return Either.left(
      new ConfigError({ message: "rpc.user and rpc.password: give both or neither (neither: cookie auth)" }),
    )
  }
  if (c.snapshotId !== undefined && !/^[0-9a-f]{64}$/.test(c.snapshotId)) {
    return Either.left(
      new ConfigError({ message: "snapshotId (--snapshot-id): expected a snapshot id, 64 hex characters" }),
    )
  }
  if (c.snapshotHash !== undefined && !/^[0-9a-f]{64}$/.test(c.snapshotHash)) {
    return Either.left(
      new ConfigError({
        message: "snapshotHash (--snapshot-hash): expected a snapshot id, 64 hex characters",
      }),
    )
  }
  if (c.role === "light" && c.mining.enabled) {
    return Either.left(new ConfigError({ message: "mining.enabled: a light node cannot mine (role light)" }))
  }
  return Either.right(c)
}
