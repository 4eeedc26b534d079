import { Either, ParseResult, Schema } from "effect"

/**
 * options.ts is what a fault-injection run is asked to do: the nodes, their topology, the miners and
 * payments, the link faults and the partition schedule. The CLI flags and a scenario file (JSON) say
 * the same things; `decodeScenario` checks a file and `checkOptions` the combined result, each with a
 * message that names the bad key.
 */

/** Topology is how the nodes are wired: `nat` puts half of them behind NATs with one public rendezvous node. */
export type Topology = "random" | "line" | "star" | "nat"

/** Partition splits the nodes (by index) into `groups` at `startMs` and heals at `endMs` (simulated, from the run's start). */
export interface Partition {
  readonly startMs: number
  readonly endMs: number
  readonly groups: ReadonlyArray<ReadonlyArray<number>>
}

/** Crash kills `nodes` (by index) at `startMs` and restarts them from their storage at `endMs` (simulated, from the run's start). */
export interface Crash {
  readonly startMs: number
  readonly endMs: number
  readonly nodes: ReadonlyArray<number>
}

/** SimOptions are one run's settings, every duration in simulated milliseconds. */
export interface SimOptions {
  readonly nodes: number
  readonly seed: number
  readonly durationMs: number
  readonly topology: Topology
  readonly miners: number
  readonly blockIntervalMs: number
  /** payments per simulated second between the nodes' wallets (after a premine matures) */
  readonly txRate: number
  readonly loss: number
  readonly dup: number
  readonly reorder: number
  readonly latencyMs: number
  /** bytes per second per link; undefined = unlimited */
  readonly bandwidth: number | undefined
  readonly partitions: ReadonlyArray<Partition>
  /** how long after the last heal (and after mining stops) every node must be on one tip */
  readonly convergeWithinMs: number
  /** crash-restart schedule (default none) */
  readonly crashes?: ReadonlyArray<Crash>
  /** each node's clock is off by a seeded amount in [-clockSkewMs, +clockSkewMs] (default 0) */
  readonly clockSkewMs?: number
  /**
   * a test build switch: every node runs with this deliberate bug (`--planted-bug`), to prove the
   * invariants catch it; never reachable from a node's own config or flags
   */
  readonly plantedBug?: PlantedBug
}

/** PlantedBug is a deliberate bug the planted-bug check runs with ("no-reorg": a node never switches to a heavier branch). */
export type PlantedBug = "no-reorg"

/** defaultSimOptions: 10 nodes, 10 simulated minutes, 2 miners at a block a minute, 50 ms links, no faults. */
export const defaultSimOptions: SimOptions = {
  nodes: 10,
  seed: 1,
  durationMs: 10 * 60_000,
  topology: "random",
  miners: 2,
  blockIntervalMs: 60_000,
  txRate: 0,
  loss: 0,
  dup: 0,
  reorder: 0,
  latencyMs: 50,
  bandwidth: undefined,
  partitions: [],
  convergeWithinMs: 2 * 60_000,
}

/** SimOptionsError is a bad flag or scenario value; `message` names the key and what was expected. */
export class SimOptionsError extends Schema.TaggedError<SimOptionsError>()("SimOptionsError", {
  message: Schema.String,
}) {}

const units: Record<string, number> = {
  ms: 1,
  millis: 1,
  s: 1_000,
  sec: 1_000,
  seconds: 1_000,
  m: 60_000,
  min: 60_000,
  minutes: 60_000,
  h: 3_600_000,
  hours: 3_600_000,
}

/**
 * parseDuration reads "90s", "10m", "1h", "500ms", "1.5 minutes" or a bare number of seconds into
 * milliseconds; undefined when it is none of those or negative.
 */
export const parseDuration = (text: string): number | undefined => {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text)
  if (m === null) return undefined
  const unit = m[2] === undefined || m[2] === "" ? 1_000 : units[m[2].toLowerCase()]
  if (unit === undefined) return undefined
  return Math.round(Number(m[1]) * unit)
}

/** parseGroup reads "0-4", "0,2,5-7" into node indices. */
const parseGroup = (text: string): ReadonlyArray<number> | undefined => {
  const out: Array<number> = []
  for (const part of text.split(",")) {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part)
    if (m === null) return undefined
    const from = Number(m[1])
    const to = m[2] === undefined ? from : Number(m[2])
    if (to < from || to - from > 1_000_000) return undefined
    for (let i = from; i <= to; i++) out.push(i)
  }
  return out
}

/**
 * parsePartition reads a schedule "T1-T2:G1/G2/…": split at T1, heal at T2 (durations as
 * `parseDuration` reads them, from the run's start), each group a list of node indices and ranges
 * ("60s-3m:0-4/5-9"). Nodes in no group form one more group.
 */
export const parsePartition = (text: string): Either.Either<Partition, string> => {
  const colon = text.indexOf(":")
  const bad = (why: string) =>
    Either.left(`partition ${JSON.stringify(text)}: ${why} (expected "T1-T2:0-4/5-9", e.g. "60s-3m:0-4/5-9")`)
  if (colon < 0) return bad("no ':' between the times and the groups")
  const times = text.slice(0, colon).split("-")
  if (times.length !== 2) return bad("the times are not T1-T2")
  const startMs = parseDuration(times[0] ?? "")
  const endMs = parseDuration(times[1] ?? "")
  if (startMs === undefined || endMs === undefined) return bad("a time is not a duration")
  if (endMs <= startMs) return bad("the heal time is not after the split time")
  const groups: Array<ReadonlyArray<number>> = []
  for (const g of text.slice(colon + 1).split("/")) {
    const group = parseGroup(g)
    if (group === undefined || group.length === 0)
      return bad(`group ${JSON.stringify(g)} is not a list of node indices`)
    groups.push(group)
  }
  if (groups.length < 1) return bad("no groups")
  return Either.right({ startMs, endMs, groups })
}

/**
 * parseCrash reads a schedule "T1-T2:NODES": kill the nodes at T1, restart them from their storage at
 * T2 (durations as `parseDuration` reads them), nodes a list of indices and ranges ("2m-3m:0-2").
 */
export const parseCrash = (text: string): Either.Either<Crash, string> => {
  const colon = text.indexOf(":")
  const bad = (why: string) =>
    Either.left(`crash ${JSON.stringify(text)}: ${why} (expected "T1-T2:NODES", e.g. "2m-3m:0-2")`)
  if (colon < 0) return bad("no ':' between the times and the nodes")
  const times = text.slice(0, colon).split("-")
  if (times.length !== 2) return bad("the times are not T1-T2")
  const startMs = parseDuration(times[0] ?? "")
  const endMs = parseDuration(times[1] ?? "")
  if (startMs === undefined || endMs === undefined) return bad("a time is not a duration")
  if (endMs <= startMs) return bad("the restart time is not after the crash time")
  const nodes = parseGroup(text.slice(colon + 1))
  if (nodes === undefined || nodes.length === 0) return bad("the nodes are not a list of node indices")
  return Either.right({ startMs, endMs, nodes })
}

/** parseSkew reads a clock skew "60s", "±60s", "+-60s" or a number of seconds into milliseconds. */
export const parseSkew = (value: number | string): number | undefined =>
  typeof value === "number"
    ? value >= 0
      ? Math.round(value * 1000)
      : undefined
    : parseDuration(value.replace(/^\s*(±|\+-|\+\/-)/, ""))

/** Duration in a scenario file: a number of seconds or a string like "10m". */
const DurationField = Schema.Union(Schema.Number, Schema.String)
const Probability = Schema.Number.pipe(Schema.between(0, 1))

/**
 * Scenario is a scenario file: the CLI's options by their flag names (camelCase or as the flag is
 * spelled), durations as seconds or "10m"-style strings, partitions in the flag's syntax. Unknown
 * keys are errors (a typo must not silently run something else).
 */
export const Scenario = Schema.Struct({
  nodes: Schema.optional(Schema.Int.pipe(Schema.between(1, 100_000))),
  seed: Schema.optional(Schema.Int),
  duration: Schema.optional(DurationField),
  topology: Schema.optional(Schema.Literal("random", "line", "star", "nat")),
  miners: Schema.optional(Schema.Int.pipe(Schema.nonNegative())),
  blockInterval: Schema.optional(DurationField),
  txRate: Schema.optional(Schema.Number.pipe(Schema.nonNegative())),
  loss: Schema.optional(Probability),
  dup: Schema.optional(Probability),
  reorder: Schema.optional(Probability),
  latency: Schema.optional(DurationField),
  bandwidth: Schema.optional(Schema.Number.pipe(Schema.positive())),
  partition: Schema.optional(Schema.Array(Schema.String)),
  convergeWithin: Schema.optional(DurationField),
  crash: Schema.optional(Schema.Array(Schema.String)),
  clockSkew: Schema.optional(DurationField),
  plantedBug: Schema.optional(Schema.Literal("no-reorg")),
})
export type Scenario = typeof Scenario.Type

/** flagNames maps a scenario key spelled as its flag ("block-interval") to the key ("blockInterval"). */
const camel = (key: string): string => key.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())

/** decodeScenario parses and checks a scenario file's text; the error names the file and the bad key. */
export const decodeScenario = (text: string, path: string): Either.Either<Scenario, SimOptionsError> => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (e) {
    return Either.left(
      new SimOptionsError({
        message: `scenario ${path}: not JSON: ${e instanceof Error ? e.message : String(e)}`,
      }),
    )
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return Either.left(
      new SimOptionsError({ message: `scenario ${path}: expected a JSON object of options` }),
    )
  }
  const renamed = Object.fromEntries(Object.entries(json).map(([k, v]) => [camel(k), v]))
  return Schema.decodeUnknownEither(Scenario, { onExcessProperty: "error", errors: "all" })(renamed).pipe(
    Either.mapLeft(
      (e) =>
        new SimOptionsError({
          message: `scenario ${path}: ${ParseResult.ArrayFormatter.formatErrorSync(e)
            // an optional key's "or undefined" alternative says nothing about the value
            .filter((issue) => !issue.message.startsWith("Expected undefined"))
            .map((issue) => `${issue.path.join(".") || "(top)"}: ${issue.message.split("\n").pop()}`)
            .join("; ")}`,
        }),
    ),
  )
}

/** durationOf reads a scenario/flag duration (seconds or "10m") for `key`. */
const durationOf = (key: string, value: number | string): Either.Either<number, SimOptionsError> => {
  const ms =
    typeof value === "number" ? (value >= 0 ? Math.round(value * 1000) : undefined) : parseDuration(value)
  return ms === undefined
    ? Either.left(
        new SimOptionsError({
          message: `${key}: expected a duration like "90s", "10m", "1h" or a number of seconds, got ${JSON.stringify(value)}`,
        }),
      )
    : Either.right(ms)
}

/**
 * resolveOptions lays `overrides` (flags) over `scenario` (a file) over the defaults and checks the
 * result: partition groups name existing nodes, miners are at most the nodes, the heal times fit.
 */
export const resolveOptions = (
  scenario: Scenario,
  overrides: Scenario,
): Either.Either<SimOptions, SimOptionsError> =>
  Either.gen(function* () {
    const s: Scenario = {
      ...scenario,
      ...Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined)),
    }
    const d = defaultSimOptions
    const dur = (key: string, v: number | string | undefined, fallback: number) =>
      v === undefined ? Either.right(fallback) : durationOf(key, v)
    const partitions: Array<Partition> = []
    for (const text of s.partition ?? []) {
      partitions.push(
        yield* Either.mapLeft(parsePartition(text), (message) => new SimOptionsError({ message })),
      )
    }
    const crashes: Array<Crash> = []
    for (const text of s.crash ?? []) {
      crashes.push(yield* Either.mapLeft(parseCrash(text), (message) => new SimOptionsError({ message })))
    }
    const clockSkewMs = s.clockSkew === undefined ? 0 : parseSkew(s.clockSkew)
    if (clockSkewMs === undefined) {
      return yield* Either.left(
        new SimOptionsError({
          message: `clock-skew: expected a duration like "60s" or "±2h", got ${JSON.stringify(s.clockSkew)}`,
        }),
      )
    }
    const options: SimOptions = {
      nodes: s.nodes ?? d.nodes,
      seed: s.seed ?? d.seed,
      durationMs: yield* dur("duration", s.duration, d.durationMs),
      topology: s.topology ?? d.topology,
      miners: s.miners ?? d.miners,
      blockIntervalMs: yield* dur("block-interval", s.blockInterval, d.blockIntervalMs),
      txRate: s.txRate ?? d.txRate,
      loss: s.loss ?? d.loss,
      dup: s.dup ?? d.dup,
      reorder: s.reorder ?? d.reorder,
      latencyMs: yield* dur("latency", s.latency, d.latencyMs),
      bandwidth: s.bandwidth ?? d.bandwidth,
      partitions,
      convergeWithinMs: yield* dur("converge-within", s.convergeWithin, d.convergeWithinMs),
      ...(crashes.length > 0 ? { crashes } : {}),
      ...(clockSkewMs > 0 ? { clockSkewMs } : {}),
      ...(s.plantedBug === undefined ? {} : { plantedBug: s.plantedBug }),
    }
    return yield* checkOptions(options)
  })

/** checkOptions refuses settings a run cannot honour, naming the key. */
export const checkOptions = (o: SimOptions): Either.Either<SimOptions, SimOptionsError> => {
  const fail = (message: string) => Either.left(new SimOptionsError({ message }))
  if (!Number.isInteger(o.nodes) || o.nodes < 1)
    return fail(`nodes: expected a positive integer, got ${o.nodes}`)
  if (o.topology === "nat" && o.nodes < 3)
    return fail("topology nat: needs at least 3 nodes (a rendezvous node and two behind NATs)")
  if (o.miners > o.nodes) return fail(`miners: ${o.miners} is more than the ${o.nodes} nodes`)
  if (o.blockIntervalMs <= 0) return fail("block-interval: must be more than 0")
  if (o.durationMs <= 0) return fail("duration: must be more than 0")
  for (const [key, p] of [
    ["loss", o.loss],
    ["dup", o.dup],
    ["reorder", o.reorder],
  ] as const) {
    if (!(p >= 0 && p < 1)) return fail(`${key}: expected a probability 0 ≤ p < 1, got ${p}`)
  }
  for (const p of o.partitions) {
    for (const group of p.groups) {
      for (const i of group) {
        if (i >= o.nodes) return fail(`partition: node ${i} does not exist (nodes are 0-${o.nodes - 1})`)
      }
    }
    if (p.endMs > o.durationMs)
      return fail(`partition: heals at ${p.endMs} ms, after the run's ${o.durationMs} ms`)
  }
  for (const c of o.crashes ?? []) {
    for (const i of c.nodes) {
      if (i >= o.nodes) return fail(`crash: node ${i} does not exist (nodes are 0-${o.nodes - 1})`)
    }
    if (c.endMs > o.durationMs)
      return fail(`crash: restarts at ${c.endMs} ms, after the run's ${o.durationMs} ms`)
  }
  for (const [a, c] of (o.crashes ?? []).entries()) {
    for (const d of (o.crashes ?? []).slice(a + 1)) {
      const both = c.nodes.filter((i) => d.nodes.includes(i))
      if (both.length > 0 && c.startMs <= d.endMs && d.startMs <= c.endMs)
        return fail(`crash: node ${both[0]} is in two crashes that overlap`)
    }
  }
  if ((o.clockSkewMs ?? 0) < 0) return fail(`clock-skew: must not be negative, got ${o.clockSkewMs}`)
  return Either.right(o)
}

/** replayFlags are the CLI flags that run `o` again (for the one-line replay command). */
export const replayFlags = (o: SimOptions): string => {
  const flags = [
    `--nodes ${o.nodes}`,
    `--seed ${o.seed}`,
    `--duration ${o.durationMs}ms`,
    `--topology ${o.topology}`,
    `--miners ${o.miners}`,
    `--block-interval ${o.blockIntervalMs}ms`,
    `--tx-rate ${o.txRate}`,
    `--loss ${o.loss}`,
    `--dup ${o.dup}`,
    `--reorder ${o.reorder}`,
    `--latency ${o.latencyMs}ms`,
    ...(o.bandwidth === undefined ? [] : [`--bandwidth ${o.bandwidth}`]),
    ...o.partitions.map(
      (p) => `--partition ${p.startMs}ms-${p.endMs}ms:${p.groups.map((g) => g.join(",")).join("/")}`,
    ),
    `--converge-within ${o.convergeWithinMs}ms`,
    ...(o.crashes ?? []).map((c) => `--crash ${c.startMs}ms-${c.endMs}ms:${c.nodes.join(",")}`),
    ...(o.clockSkewMs === undefined || o.clockSkewMs === 0 ? [] : [`--clock-skew ${o.clockSkewMs}ms`]),
    ...(o.plantedBug === undefined ? [] : [`--planted-bug ${o.plantedBug}`]),
  ]
  return flags.join(" ")
}
