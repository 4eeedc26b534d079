import { Cause, Deferred, Duration, Effect, Exit, Queue, Schedule, type Scope } from "effect"

/**
 * Actor is the handle other fibers hold: a bounded mailbox in front of one fiber that owns the
 * actor's state. Nobody else touches the state; everything goes through commands.
 *
 * `send` waits while the mailbox is full (back-pressure for trusted callers: RPC, other actors);
 * `trySend` never waits and answers false when full (for untrusted sources such as peers, whose
 * excess is dropped and scored rather than queued).
 */
export interface Actor<Cmd> {
  readonly name: string
  readonly send: (cmd: Cmd) => Effect.Effect<void>
  readonly trySend: (cmd: Cmd) => Effect.Effect<boolean>
}

/**
 * Request is the shape of a command that wants an answer: it carries the Deferred the actor completes
 * (btcd's `reply chan` pattern). The kit uses it to fail a caller whose command crashed the actor, and
 * to interrupt callers whose commands were still queued at shutdown, so no caller ever hangs.
 */
export interface Request<A, E = never> {
  readonly reply: Deferred.Deferred<A, E>
}

const isRequest = (cmd: unknown): cmd is Request<unknown, unknown> =>
  typeof cmd === "object" &&
  cmd !== null &&
  "reply" in cmd &&
  Deferred.DeferredTypeId in (cmd.reply as object)

/** ActorOptions describes an actor to `make`. */
export interface ActorOptions<Cmd, S, E, R> {
  readonly name: string
  /** mailbox capacity: a full mailbox makes `send` wait and `trySend` answer false */
  readonly capacity: number
  /** initial state; run again on every restart (re-read from storage, not from the crashed state) */
  readonly initial: Effect.Effect<S, E, R>
  /**
   * handle processes one command and returns the next state. It runs uninterruptibly: once a command
   * starts it finishes, so a handler that commits to storage is never cut in half by shutdown. A
   * defect (a thrown bug, a failed invariant) restarts the actor from `initial`; expected failures
   * belong in the command's reply, not here.
   */
  readonly handle: (state: S, cmd: Cmd) => Effect.Effect<S, never, R>
  /** restart schedule after a crash; default: exponential from 100 ms, capped at 10 s, forever */
  readonly restart?: Schedule.Schedule<unknown, unknown>
}

/** defaultRestart backs off exponentially from 100 ms up to 10 s between restarts. */
export const defaultRestart: Schedule.Schedule<unknown, unknown> = Schedule.exponential(
  Duration.millis(100),
).pipe(Schedule.union(Schedule.spaced(Duration.seconds(10))))

/**
 * make starts an actor in the current scope: its loop is forked with `Effect.forkScoped`, so closing
 * the scope (the Layer's) stops it after the command in progress, and interrupts the callers of
 * commands still queued. Call it inside `Layer.scoped`.
 */
export const make = <Cmd, S, E, R>(
  options: ActorOptions<Cmd, S, E, R>,
): Effect.Effect<Actor<Cmd>, E, R | Scope.Scope> =>
  Effect.gen(function* () {
    const mailbox = yield* Queue.bounded<Cmd>(options.capacity)
    // The first initialisation happens here so a failure to start (e.g. unreadable storage) fails
    // the layer instead of looping in the background.
    const first = yield* options.initial
    let pending: S | undefined = first

    const run: Effect.Effect<never, Cause.Cause<unknown>, R> = Effect.gen(function* () {
      let state: S
      if (pending !== undefined) {
        state = pending
        pending = undefined
      } else {
        state = yield* options.initial
      }
      while (true) {
        const cmd = yield* Queue.take(mailbox)
        const exit = yield* Effect.exit(Effect.uninterruptible(options.handle(state, cmd)))
        if (Exit.isSuccess(exit)) {
          state = exit.value
          continue
        }
        if (isRequest(cmd)) yield* Deferred.failCause(cmd.reply, exit.cause)
        return yield* Effect.failCause(exit.cause)
      }
    }).pipe(Effect.sandbox)

    const supervised = run.pipe(
      Effect.tapError((cause) =>
        Cause.isInterruptedOnly(cause)
          ? Effect.void
          : Effect.logError(`actor ${options.name} crashed; restarting`, cause),
      ),
      Effect.retry(options.restart ?? defaultRestart),
      Effect.unsandbox,
      Effect.annotateLogs("actor", options.name),
    )

    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        const queued = yield* Queue.takeAll(mailbox)
        for (const cmd of queued) if (isRequest(cmd)) yield* Deferred.interrupt(cmd.reply)
        yield* Queue.shutdown(mailbox)
      }),
    )
    yield* Effect.forkScoped(supervised)

    return {
      name: options.name,
      send: (cmd) => Effect.asVoid(Queue.offer(mailbox, cmd)),
      trySend: (cmd) => Effect.sync(() => Queue.unsafeOffer(mailbox, cmd)),
    }
  })

/**
 * ask sends a request built around a fresh Deferred and waits for the actor's answer. If the command
 * crashes the actor the caller gets the defect; if the actor shuts down first, an interruption.
 */
export const ask = <Cmd, A, E>(
  actor: Actor<Cmd>,
  build: (reply: Deferred.Deferred<A, E>) => Cmd,
): Effect.Effect<A, E> =>
  Effect.gen(function* () {
    const reply = yield* Deferred.make<A, E>()
    yield* actor.send(build(reply))
    return yield* Deferred.await(reply)
  })
