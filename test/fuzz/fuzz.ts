import {
  Cause,
  Clock,
  Effect,
  Either,
  Exit,
  Fiber,
  FiberRef,
  HashSet,
  Logger,
  LogLevel,
  Option,
  Stream,
  TestClock,
  TestContext,
} from "effect"
import { Chain } from "../../src/actors/Chain.js"
import type { ProbeEvent } from "../../src/actors/net.js"
import type { SpamPolicy } from "../../src/actors/spamPolicy.js"
import type { Connection, Endpoint } from "../../src/layers/Transport.js"
import { makeSimNetwork, type SimNetwork } from "../../src/layers/TransportSim.js"
import { encodeMessage, FRAME_HEADER_BYTES, type FrameEvent, Framer } from "../../src/schema/frame.js"
import { hostToBytes } from "../../src/schema/netaddr.js"
import {
  type Command,
  decodePayload,
  encodePayload,
  isCommand,
  PingMessage,
  VerackMessage,
  VersionMessage,
} from "../../src/schema/wire.js"
import { P2P_PORT, type SimNode, settle, simConfig, simTime, startNode } from "../support/simnet.js"
import {
  type Corpus,
  chunks,
  concatFrames,
  corpus,
  type FuzzFrame,
  hex,
  type Mutation,
  Rng,
  type Session,
  session,
  sessionSeed,
} from "./frames.js"

/**
 * fuzz.ts drives generated frames (frames.ts) through fibercoin's P2P input path and counts what
 * breaks. Two paths share one generator:
 *
 * - the fast path pushes sessions of frames, cut into random chunks, through a `Framer` and decodes
 *   every payload with `decodePayload` (as the Peer, the Chain and the Mempool would), checking that
 *   neither throws, that the framer's events do not depend on where the chunks split, and that what
 *   decodes re-encodes to the same bytes;
 * - the node path sends sessions from many simulated hosts to two real nodes in-process (the sim
 *   transport, memory storage, inline signature checks, the TestClock): one with the default spam
 *   policy, which bans its attackers quickly, and one whose thresholds are out of reach, so long
 *   sessions keep reaching Sync, Relay, the AddrBook, the Chain and the Mempool after the handshake.
 *
 * An error is anything uncaught: a throw from the framer or a decoder, a log line at Error or Fatal
 * (an actor crash logs "actor X crashed; restarting"; a fiber that dies unobserved, e.g. a Peer, is
 * logged at Error here), a defect in any log's cause, a run that does not exit successfully, a
 * connection the node stops reading for two minutes of simulated time, and a node that no longer
 * answers its chain tip or an honest peer's ping at the end.
 */

/** FuzzError is one uncaught failure, with what it takes to reproduce it. */
export interface FuzzError {
  readonly where: "fast" | "node"
  readonly what: string
  /** the session (with the seed, it regenerates the frames) */
  readonly session?: number
  /** the offending frame or session bytes, hex */
  readonly frame?: string
}

/** FastResult is what the fast path did. */
export interface FastResult {
  readonly frames: number
  readonly sessions: number
  readonly bytes: number
  /** frames that decoded to a message (or raw block/tx payloads the decoders accepted) */
  readonly decoded: number
  /** framer errors: refused frames and payloads */
  readonly refused: number
  readonly seconds: number
}

/** NodeResult is what the node path did. */
export interface NodeResult {
  readonly frames: number
  readonly sessions: number
  readonly bytes: number
  /** messages the nodes' Peers decoded and dispatched (the NetProbe sees each), from attackers */
  readonly dispatched: number
  /** of those, on connections whose handshake had completed */
  readonly afterHandshake: number
  readonly byCommand: Readonly<Partial<Record<Command, number>>>
  /** sessions the node ended by closing the connection */
  readonly disconnects: number
  /** sessions refused at once (the attacker's host was banned or over a limit) */
  readonly refused: number
  /** addresses the spam filter banned ("banned …" log lines) */
  readonly bans: number
  readonly warnings: number
  readonly disconnectReasons: Readonly<Record<string, number>>
  /** chain tips of the strict and the lenient node at the end */
  readonly tips: ReadonlyArray<number>
  readonly simulatedSeconds: number
  readonly seconds: number
}

/** FuzzReport is a whole run. */
export interface FuzzReport {
  readonly seed: number
  readonly fast: FastResult
  readonly node: NodeResult
  readonly errors: ReadonlyArray<FuzzError>
  readonly mutations: Readonly<Partial<Record<Mutation, number>>>
}

/** FuzzOptions: the seed and how many frames each path gets. */
export interface FuzzOptions {
  readonly seed: number
  /** frames through the fast path */
  readonly fastFrames: number
  /** frames sent to the nodes */
  readonly nodeFrames: number
  /** concurrent attacker connections (default 8) */
  readonly attackers?: number
  /** called now and then with a line of progress */
  readonly progress?: (line: string) => void
  /** sees every message the nodes send and receive, after the fuzzer's own counting (tests inject faults here) */
  readonly probe?: (event: ProbeEvent) => void
}

const RAW: ReadonlySet<Command> = new Set<Command>(["block", "tx"])
/** the first session number of the node path (the fast path counts from 0) */
export const NODE_SESSIONS = 1 << 30

/** MAX_CHUNKS: a session's stream is written in at most this many pieces */
const MAX_CHUNKS = 64

/**
 * planOf regenerates session `n` of the run with `seed`: its frames, the pieces its stream is cut
 * into, and whether it went to the strict node. Sessions from NODE_SESSIONS on are the node path's
 * (one in four to the strict node, with shorter sessions); the fast path's count from 0.
 */
export const planOf = (c: Corpus, seed: number, n: number) => {
  const rng = new Rng(sessionSeed(seed, n))
  const node = n >= NODE_SESSIONS
  const strict = node && (n - NODE_SESSIONS) % 4 === 0
  const plan: Session = session(rng, c, {
    maxFrames: node ? (strict ? 40 : 400) : 30,
    handshakeRate: 0.9,
    node,
  })
  const stream = concatFrames(plan.frames)
  return { plan, stream, strict, chunks: chunks(rng, stream, MAX_CHUNKS) }
}

const countMutations = (into: Partial<Record<Mutation, number>>, frames: ReadonlyArray<FuzzFrame>) => {
  for (const f of frames) into[f.mutation] = (into[f.mutation] ?? 0) + 1
}

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean =>
  a.length === b.length && Buffer.compare(a, b) === 0

/**
 * checkDecode decodes one aligned frame's payload the way its consumer would and checks that the
 * decoder neither throws nor accepts bytes that re-encode differently (the codec promises canonical
 * encodings). Answers an error description, or undefined.
 */
const checkDecode = (frame: FuzzFrame): string | undefined => {
  const b = frame.bytes
  let end = 4
  while (end < 16 && b[end] !== 0) end++
  const command = String.fromCharCode(...b.subarray(4, end))
  if (!isCommand(command)) return undefined
  const payload = b.subarray(FRAME_HEADER_BYTES)
  const decoded = decodePayload(command, payload)
  if (Either.isLeft(decoded)) return undefined
  const again = encodePayload(decoded.right)
  return sameBytes(again, payload) ? undefined : `${command}: decoded payload re-encodes differently`
}

/** eventKey describes a framer event for comparing two runs of one stream. */
const eventKey = (event: FrameEvent): string =>
  event._tag === "Message"
    ? `message ${event.message._tag}`
    : event._tag === "Raw"
      ? `raw ${event.command} ${hex(event.payload, 16)}`
      : `error ${event.error.what} ${event.error.reason} at ${event.error.offset}`

/**
 * fastPath pushes `frames` generated frames through Framers (a fresh one per session, as a new
 * connection would get) in random chunks, and decodes every aligned payload directly too.
 */
export const fastPath = (
  c: Corpus,
  seed: number,
  frames: number,
  errors: Array<FuzzError>,
  mutations: Partial<Record<Mutation, number>>,
  progress?: (line: string) => void,
): FastResult => {
  const started = performance.now()
  let sent = 0
  let sessions = 0
  let bytes = 0
  let decoded = 0
  let refused = 0
  let lastReport = started
  while (sent < frames) {
    const index = sessions++
    const planned = planOf(c, seed, index)
    // the last session may be cut short to the budget; its stream then goes in one piece
    const whole = planned.plan.frames.length <= frames - sent
    const take = whole ? planned.plan.frames : planned.plan.frames.slice(0, frames - sent)
    sent += take.length
    countMutations(mutations, take)
    const stream = whole ? planned.stream : concatFrames(take)
    bytes += stream.length
    try {
      const framer = new Framer(c.magic, RAW)
      const seen: Array<string> = []
      for (const chunk of whole ? planned.chunks : [stream]) {
        for (const event of framer.push(chunk)) {
          seen.push(eventKey(event))
          if (event._tag === "Error") {
            refused++
          } else if (event._tag === "Message") {
            decoded++
          } else if (Either.isRight(decodePayload(event.command, event.payload))) {
            decoded++
          } else {
            refused++
          }
        }
      }
      // the same stream in one piece must give the same events: chunks may split anywhere
      const inOne = new Framer(c.magic, RAW).push(stream).map(eventKey)
      if (inOne.join("\n") !== seen.join("\n")) {
        const at = inOne.findIndex((k, i) => k !== seen[i])
        errors.push({
          where: "fast",
          what: `framer events depend on the chunking: event ${at} is ${seen[at]} in chunks, ${inOne[at]} in one piece`,
          session: index,
          frame: hex(stream, 4096),
        })
      }
    } catch (e) {
      errors.push({
        where: "fast",
        what: `framer threw: ${String(e)}`,
        session: index,
        frame: hex(stream, 4096),
      })
    }
    for (const frame of take) {
      if (!frame.aligned) continue
      try {
        const problem = checkDecode(frame)
        if (problem !== undefined)
          errors.push({ where: "fast", what: problem, session: index, frame: hex(frame.bytes, 4096) })
      } catch (e) {
        errors.push({
          where: "fast",
          what: `decoder threw: ${String(e)}`,
          session: index,
          frame: hex(frame.bytes, 4096),
        })
      }
    }
    const now = performance.now()
    if (progress !== undefined && now - lastReport > 10_000) {
      lastReport = now
      progress(`fast path: ${sent} frames, ${Math.round(sent / ((now - started) / 1000))} frames/s`)
    }
  }
  const seconds = (performance.now() - started) / 1000
  return { frames: sent, sessions, bytes, decoded, refused, seconds }
}

// ---------------------------------------------------------------------------------------------------
// The node path

/** STRICT runs the default spam policy; LENIENT a policy no attacker reaches, so sessions go on. */
const STRICT = "10.0.0.1"
const LENIENT = "10.0.0.2"
/** HONEST is the host of the well-behaved peer that checks each node still answers at the end */
const HONEST = "10.250.0.1"

const unlimited = { rate: 1e9, burst: 1e9 }
/** lenientPolicy: no bucket or score bans; framing errors and protocol violations still disconnect. */
const lenientPolicy: Partial<SpamPolicy> = {
  connections: unlimited,
  messages: unlimited,
  inv: unlimited,
  addr: unlimited,
  tx: unlimited,
  unrequestedBlocks: unlimited,
  maxInboundPerIp: 1_000,
  maxInboundPer24: 1_000,
  maxInboundPer16: 1_000,
  banThreshold: Number.MAX_SAFE_INTEGER,
}

/** attackerHost is session `i`'s own host (one /32 each: a ban of one never refuses the next). */
const attackerHost = (i: number): string => `10.${1 + ((i >>> 16) % 240)}.${(i >>> 8) & 0xff}.${i & 0xff}`

const at = (host: string): Endpoint => ({ host, port: P2P_PORT })

/** yieldToLoop lets the event loop turn once (the nodes' fibers run meanwhile). */
const yieldToLoop = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))

/** LogWatch is what `watching` saw of the logs: the errors in full, the rest counted. */
export interface LogWatch {
  readonly errors: Array<string>
  warnings: number
  /** "banned …" lines: the spam filter banning an address */
  bans: number
  /** why the nodes dropped peers, from their "disconnecting: …" debug lines (numbers and hashes elided) */
  readonly disconnectReasons: Record<string, number>
}

/** makeLogWatch is an empty LogWatch. */
export const makeLogWatch = (): LogWatch => ({ errors: [], warnings: 0, bans: 0, disconnectReasons: {} })

const messageText = (message: unknown): string =>
  Array.isArray(message) ? message.map(String).join(" ") : String(message)

const DISCONNECTING = ": disconnecting: "

/** watchingLogger records log lines into `watch`; Error, Fatal and a defect at any level are errors. */
const watchingLogger = (watch: LogWatch) =>
  Logger.make(({ logLevel, message, cause, annotations }) => {
    const text = messageText(message)
    if (LogLevel.greaterThanEqual(logLevel, LogLevel.Error) || Cause.isDie(cause)) {
      const where = [...annotations].map(([k, v]) => `${k}=${String(v)}`).join(" ")
      const detail = Cause.isEmpty(cause) ? "" : `\n${Cause.pretty(cause)}`
      watch.errors.push(`[${logLevel.label}] ${text}${where === "" ? "" : ` (${where})`}${detail}`)
    } else if (logLevel === LogLevel.Warning) {
      watch.warnings++
    }
    if (text.startsWith("banned ")) watch.bans++
    const d = text.indexOf(DISCONNECTING)
    if (d >= 0) {
      const reason = text
        .slice(d + DISCONNECTING.length)
        .replace(/[0-9a-f]{16,}/g, "…")
        .replace(/\d+/g, "N")
        .slice(0, 80)
      watch.disconnectReasons[reason] = (watch.disconnectReasons[reason] ?? 0) + 1
    }
  })

/**
 * watching runs `effect` with every log line of it and of the fibers it starts (the nodes' actors and
 * peers) going to `watch` instead of the console, Debug and up. A fiber that fails with nobody awaiting
 * it (a Peer's connection fiber, say) is logged at Error, so it is counted as an error too.
 */
export const watching =
  (watch: LogWatch) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    effect.pipe(
      Effect.locally(FiberRef.currentLoggers, HashSet.make(watchingLogger(watch))),
      Logger.withMinimumLogLevel(LogLevel.Debug),
      Effect.withUnhandledErrorLogLevel(Option.some(LogLevel.Error)),
    )

/** Dispatch counts what the nodes' Peers decoded from attackers, through the NetProbe. */
class Dispatch {
  total = 0
  afterHandshake = 0
  readonly byCommand: Partial<Record<Command, number>> = {}
  /** per node and peer id: 1 after an inbound version, 2 after the verack that completes the handshake */
  private readonly state = new Map<string, number>()

  observe(event: ProbeEvent): void {
    if (event.direction !== "in" || event.remote.host === HONEST) return
    this.total++
    this.byCommand[event.command] = (this.byCommand[event.command] ?? 0) + 1
    const key = `${event.local.host} ${event.peer}`
    const s = this.state.get(key) ?? 0
    if (s === 2) this.afterHandshake++
    else if (event.command === "version" && s === 0) this.state.set(key, 1)
    else if (event.command === "verack" && s === 1) this.state.set(key, 2)
  }
}

/**
 * honestPing dials `node` from HONEST, handshakes, pings and waits for the matching pong, advancing
 * the TestClock; fails when the node does not answer within a minute of simulated time.
 */
const honestPing = (sim: SimNetwork, node: SimNode, c: Corpus) =>
  Effect.scoped(
    Effect.gen(function* () {
      const conn = yield* sim.transport(HONEST).connect(at(node.host))
      const framer = new Framer(c.magic, RAW)
      const seen: Array<string> = []
      let pong = false
      const nonce = 0xfeedn
      yield* Effect.forkScoped(
        Stream.runForEach(conn.read, (chunk) =>
          Effect.sync(() => {
            for (const e of framer.push(chunk)) {
              if (e._tag !== "Message") continue
              seen.push(e.message._tag)
              if (e.message._tag === "pong" && e.message.nonce === nonce) pong = true
            }
          }),
        ).pipe(Effect.either),
      )
      const version = new VersionMessage({
        protocolVersion: 1,
        services: 1,
        bestHeight: 0,
        userAgent: "/honest:0.1/",
        nonce: 0x1234_5678n,
        listenPort: 0,
        theirAddress: { host: hostToBytes(node.host)!, port: P2P_PORT },
      })
      yield* conn.write(encodeMessage(c.magic, version))
      yield* conn.write(encodeMessage(c.magic, new VerackMessage()))
      const within = (condition: () => boolean, what: string) =>
        Effect.gen(function* () {
          for (let t = 0; t < 600; t++) {
            if (condition()) return
            yield* TestClock.adjust("100 millis")
            yield* settle
          }
          return yield* Effect.fail(`${node.host}: ${what} within a minute (saw ${seen.join(",")})`)
        })
      yield* within(() => seen.includes("version") && seen.includes("verack"), "no handshake")
      yield* conn.write(encodeMessage(c.magic, new PingMessage({ nonce })))
      yield* within(() => pong, "no pong")
    }),
  )

interface NodeRun {
  /** frames of sessions under way or done (a session reserves its frames, then gives back the unsent) */
  reserved: number
  /** frames written whole before the node hung up */
  frames: number
  sessions: number
  bytes: number
  disconnects: number
  refused: number
}

/**
 * attackSession runs session `index` against `target` from its own host: it writes the session's
 * chunks one at a time as the node reads them, stops when the node hangs up, and counts the frames it
 * wrote whole. A connection the node stops reading for two minutes of simulated time is a hang.
 */
const attackSession = (
  sim: SimNetwork,
  c: Corpus,
  seed: number,
  index: number,
  run: NodeRun,
  errors: Array<FuzzError>,
  mutations: Partial<Record<Mutation, number>>,
  budget: number,
) =>
  Effect.gen(function* () {
    const planned = planOf(c, seed, NODE_SESSIONS + index)
    const target = planned.strict ? STRICT : LENIENT
    // the last session may be cut short to the budget; its stream then goes in one piece
    const whole = planned.plan.frames.length <= budget
    const frames = whole ? planned.plan.frames : planned.plan.frames.slice(0, budget)
    const stream = whole ? planned.stream : concatFrames(frames)
    run.reserved += frames.length
    run.sessions++
    let written = 0
    const report = Effect.sync(() => {
      let n = 0
      let end = 0
      for (const f of frames) {
        end += f.bytes.length
        if (end > written) break
        n++
      }
      const sent = frames.slice(0, n)
      countMutations(mutations, sent)
      run.frames += n
      run.reserved -= frames.length - n
      run.bytes += written
    })
    yield* Effect.scoped(
      Effect.gen(function* () {
        const conn: Connection = yield* sim.transport(attackerHost(index)).connect(at(target))
        // read (and drop) what the node sends, so its writes never stall; done when the node hangs up
        const reader = yield* Effect.forkScoped(Stream.runDrain(conn.read).pipe(Effect.either))
        const closedByNode = Effect.map(Fiber.poll(reader), Option.isSome)
        yield* yieldToLoop
        if (yield* closedByNode) {
          run.refused++
          return
        }
        /** taken waits until the node has taken all our bytes, or hung up; false: it stopped reading */
        const taken = Effect.gen(function* () {
          let last = -1
          let since = 0
          while (true) {
            const pending = yield* conn.pendingWriteBytes
            if (pending === 0 || (yield* closedByNode)) return true
            const now = yield* Clock.currentTimeMillis
            if (pending !== last) {
              last = pending
              since = now
            } else if (now - since > 120_000) {
              return false
            }
            yield* yieldToLoop
          }
        })
        for (const chunk of whole ? planned.chunks : [stream]) {
          if (yield* closedByNode) break
          if (Either.isLeft(yield* Effect.either(conn.write(chunk)))) break
          written += chunk.length
          if (!(yield* taken)) {
            errors.push({
              where: "node",
              what: `${target} stopped reading for 2 minutes of simulated time`,
              session: NODE_SESSIONS + index,
              frame: hex(stream, 4096),
            })
            return
          }
        }
        yield* settle
        if (yield* closedByNode) run.disconnects++
      }),
    ).pipe(Effect.ensuring(report))
  })

/**
 * nodePath sends `frames` frames in sessions to a strict and a lenient node, `attackers` sessions at
 * a time, while simulated time advances, then checks that both nodes still answer.
 */
export const nodePath = (
  c: Corpus,
  options: FuzzOptions,
  errors: Array<FuzzError>,
  mutations: Partial<Record<Mutation, number>>,
): Effect.Effect<NodeResult> => {
  const { seed, nodeFrames: frames, attackers = 8, progress, probe: extraProbe } = options
  const watch = makeLogWatch()
  const dispatch = new Dispatch()
  const run: NodeRun = { reserved: 0, frames: 0, sessions: 0, bytes: 0, disconnects: 0, refused: 0 }
  const started = performance.now()
  let simulatedSeconds = 0
  const tips: Array<number> = []
  const body = Effect.gen(function* () {
    yield* simTime
    const startMs = yield* Clock.currentTimeMillis
    // a receive buffer of one chunk: what the node has not read stays with the sender, so an attacker
    // sees at once how far the node got, and stops when it hangs up
    const sim = yield* makeSimNetwork({ seed, receiveBufferChunks: 1 })
    const probe = (e: ProbeEvent) => {
      dispatch.observe(e)
      extraProbe?.(e)
    }
    const strict = yield* startNode(sim, simConfig(STRICT), { probe })
    const lenient = yield* startNode(sim, simConfig(LENIENT), { probe, spam: lenientPolicy })
    let next = 0
    let done = false
    let lastReport = performance.now()
    const attacker = Effect.gen(function* () {
      while (run.reserved < frames) {
        const index = next++
        yield* attackSession(sim, c, seed, index, run, errors, mutations, frames - run.reserved).pipe(
          Effect.catchAll((e) =>
            Effect.sync(() =>
              errors.push({ where: "node", what: `${String(e)}`, session: NODE_SESSIONS + index }),
            ),
          ),
        )
        const now = performance.now()
        if (progress !== undefined && now - lastReport > 10_000) {
          lastReport = now
          progress(
            `node path: ${run.frames} frames, ${dispatch.total} dispatched, ${Math.round(run.frames / ((now - started) / 1000))} frames/s`,
          )
        }
      }
    })
    /** ticker: 100 ms of simulated time per 8 finished sessions, or a second whenever none finished for 20 ms */
    const ticker = Effect.gen(function* () {
      let sessionsAt = 0
      let realAt = performance.now()
      while (!done) {
        yield* yieldToLoop
        const idle = performance.now() - realAt > 20
        if (run.sessions - sessionsAt >= 8 || idle) {
          sessionsAt = run.sessions
          realAt = performance.now()
          yield* TestClock.adjust(idle ? "1 second" : "100 millis")
        }
      }
    })
    const tick = yield* Effect.fork(ticker)
    yield* Effect.all(
      Array.from({ length: attackers }, () => attacker),
      { concurrency: "unbounded", discard: true },
    ).pipe(
      Effect.ensuring(
        Effect.sync(() => {
          done = true
        }),
      ),
    )
    yield* Fiber.join(tick)
    for (const node of [strict, lenient]) {
      tips.push((yield* node.run(Effect.flatMap(Chain, (chain) => chain.tip))).height)
      yield* honestPing(sim, node, c).pipe(
        Effect.catchAll((e) =>
          Effect.sync(() => errors.push({ where: "node", what: `honest peer: ${String(e)}` })),
        ),
      )
    }
    simulatedSeconds = ((yield* Clock.currentTimeMillis) - startMs) / 1000
  })
  return body.pipe(
    Effect.scoped,
    Effect.exit,
    Effect.tap((exit) => {
      if (Exit.isFailure(exit))
        errors.push({ where: "node", what: `the run failed:\n${Cause.pretty(exit.cause)}` })
    }),
    watching(watch),
    Effect.provide(TestContext.TestContext),
    Effect.map(() => {
      for (const line of watch.errors) errors.push({ where: "node", what: line })
      return {
        frames: run.frames,
        sessions: run.sessions,
        bytes: run.bytes,
        dispatched: dispatch.total,
        afterHandshake: dispatch.afterHandshake,
        byCommand: dispatch.byCommand,
        disconnects: run.disconnects,
        refused: run.refused,
        bans: watch.bans,
        warnings: watch.warnings,
        disconnectReasons: watch.disconnectReasons,
        tips,
        simulatedSeconds,
        seconds: (performance.now() - started) / 1000,
      }
    }),
  )
}

/** runFuzz runs both paths with one seed and reports. */
export const runFuzz = (options: FuzzOptions): Effect.Effect<FuzzReport> =>
  Effect.gen(function* () {
    const c = corpus()
    const errors: Array<FuzzError> = []
    const mutations: Partial<Record<Mutation, number>> = {}
    const fast = fastPath(c, options.seed, options.fastFrames, errors, mutations, options.progress)
    const node = yield* nodePath(c, options, errors, mutations)
    return { seed: options.seed, fast, node, errors, mutations }
  })
