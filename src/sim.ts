#!/usr/bin/env node
/**
 * fibercoin's fault-injection runs: `node dist/sim.js [flags]` (also `npm run sim -- [flags]`) runs N
 * real nodes on a simulated network in this process (src/sim/) and checks the invariants. Exit codes:
 * 0 when every invariant holds, 1 when one fails (the seed and a replay command are printed), 2 for a
 * bad flag or scenario file.
 */
import { readFileSync } from "node:fs"
import { Command, Options } from "@effect/cli"
import { Console, Effect, Either, Option } from "effect"
import { exitCodeOf, runProgram } from "./exitCode.js"
import { decodeScenario, resolveOptions, type Scenario, SimOptionsError } from "./sim/options.js"
import { formatJson, formatText } from "./sim/report.js"
import { runSim } from "./sim/Simulator.js"
import { VERSION } from "./version.js"

const optionalText = (name: string, description: string) =>
  Options.text(name).pipe(Options.withDescription(description), Options.optional)
const optionalInt = (name: string, description: string) =>
  Options.integer(name).pipe(Options.withDescription(description), Options.optional)
const optionalFloat = (name: string, description: string) =>
  Options.float(name).pipe(Options.withDescription(description), Options.optional)

const options = {
  scenario: optionalText("scenario", "a JSON scenario file with the same options (flags override it)"),
  nodes: optionalInt("nodes", "number of nodes (default 10)"),
  seed: optionalInt("seed", "the seed of every random choice (default 1)"),
  duration: optionalText("duration", 'simulated time to run, e.g. "10m" (default 10m)'),
  topology: Options.choice("topology", ["random", "line", "star", "nat"]).pipe(
    Options.withDescription(
      "how the nodes connect (default random; nat: half behind NATs, node 0 the rendezvous)",
    ),
    Options.optional,
  ),
  miners: optionalInt("miners", "nodes that mine (default 2)"),
  blockInterval: optionalText("block-interval", "mean time between one miner's blocks (default 60s)"),
  txRate: optionalFloat("tx-rate", "payments per simulated second between wallets (default 0)"),
  loss: optionalFloat("loss", "probability a message is lost (default 0)"),
  dup: optionalFloat("dup", "probability a message is delivered twice (default 0)"),
  reorder: optionalFloat("reorder", "probability a message is held back behind the next (default 0)"),
  latency: optionalText("latency", "one-way link latency (default 50ms)"),
  bandwidth: optionalFloat("bandwidth", "link bandwidth in bytes per second (default unlimited)"),
  partition: Options.text("partition").pipe(
    Options.withDescription('split and heal, "T1-T2:0-4/5-9" (node indices), repeatable'),
    Options.repeated,
  ),
  convergeWithin: optionalText(
    "converge-within",
    "bound on reaching one tip after the last heal and after mining stops (default 2m)",
  ),
  crash: Options.text("crash").pipe(
    Options.withDescription(
      'kill nodes and restart them from their storage, "T1-T2:0-2" (node indices), repeatable',
    ),
    Options.repeated,
  ),
  clockSkew: optionalText(
    "clock-skew",
    'each node\'s clock off by a seeded amount within ±this, e.g. "60s" (default 0)',
  ),
  plantedBug: Options.choice("planted-bug", ["no-reorg"]).pipe(
    Options.withDescription(
      "test build switch: run every node with a deliberate bug (no-reorg: never switch to a heavier branch) to prove the invariants catch it",
    ),
    Options.optional,
  ),
  json: Options.boolean("json").pipe(Options.withDescription("print the report as JSON")),
  verbose: Options.boolean("verbose").pipe(Options.withDescription("print the nodes' warnings and errors")),
}

type Flags = {
  readonly [K in keyof typeof options]: (typeof options)[K] extends Options.Options<infer A> ? A : never
}

/** scenarioOfFlags is the flags as a scenario (only those given). */
const scenarioOfFlags = (f: Flags): Scenario => {
  const pick = <A>(o: Option.Option<A>) => Option.getOrUndefined(o)
  const entries = {
    nodes: pick(f.nodes),
    seed: pick(f.seed),
    duration: pick(f.duration),
    topology: pick(f.topology),
    miners: pick(f.miners),
    blockInterval: pick(f.blockInterval),
    txRate: pick(f.txRate),
    loss: pick(f.loss),
    dup: pick(f.dup),
    reorder: pick(f.reorder),
    latency: pick(f.latency),
    bandwidth: pick(f.bandwidth),
    partition: f.partition.length > 0 ? f.partition : undefined,
    convergeWithin: pick(f.convergeWithin),
    crash: f.crash.length > 0 ? f.crash : undefined,
    clockSkew: pick(f.clockSkew),
    plantedBug: pick(f.plantedBug),
  }
  return Object.fromEntries(Object.entries(entries).filter(([, v]) => v !== undefined)) as Scenario
}

const readScenario = (path: string): Either.Either<Scenario, SimOptionsError> => {
  let text: string
  try {
    text = readFileSync(path, "utf8")
  } catch (e) {
    return Either.left(
      new SimOptionsError({
        message: `scenario ${path}: cannot read it: ${e instanceof Error ? e.message : String(e)}`,
      }),
    )
  }
  return decodeScenario(text, path)
}

/** SimFailed ends the program with exit code 1 after the report is printed. */
class SimFailed extends Error {}

const command = Command.make("fibercoin-sim", options, (flags) =>
  Effect.gen(function* () {
    const file = Option.isSome(flags.scenario) ? yield* readScenario(flags.scenario.value) : {}
    const simOptions = yield* resolveOptions(file, scenarioOfFlags(flags))
    const report = yield* runSim(simOptions, { verbose: flags.verbose })
    yield* Console.log(flags.json ? formatJson(report) : formatText(report))
    if (!report.ok) return yield* Effect.fail(new SimFailed())
  }),
)

const cli = Command.run(command, { name: "fibercoin-sim", version: VERSION })

const exitCode = exitCodeOf("fibercoin-sim", (e) => {
  if (e instanceof SimFailed) return 1 // the report said why
  if (!(e instanceof SimOptionsError)) return undefined
  console.error(`fibercoin-sim: ${e.message}`)
  return 2
})

runProgram(cli(process.argv), exitCode)
