import { Cause, Deferred, Duration, Effect, Exit, FiberId, Queue, Schedule, type Scope } from "effect"

/**
 * Actor is the handle other fibers hold: a bounded mailbox in front of one fiber that owns the
 * actor's state. Nobody else touches the state; everything goes through commands.
 *
 * `send` waits while the mailbox is full (back-pressure for trusted callers: RPC, other actors);
 * `trySend` never waits and answers false when full (for hints from untrusted sources, such as a
 * peer's inv, whose excess is dropped rather than queued); `sendFrom` is for the messages of one
 * untrusted source (a peer) that must not be dropped: fair queueing, each source's share bounded.
 */
export interface Actor<Cmd> {
  readonly name: string
  readonly send: (cmd: Cmd) => Effect.Effect<void>
  readonly trySend: (cmd: Cmd) => Effect.Effect<boolean>
  /**
   * sendFrom sends a command on behalf of `source` (a peer id): a source has at most `perSource`
   * commands queued or in progress, and beyond that the calling fiber waits until one of its own has
   * been handled. A flooding peer then only slows its own reader (whose transport stops reading the
   * socket), and a command of another source waits behind at most `perSource` of the flooder's, not
   * a mailbox full of them (issue 7: honest peers and RPC keep being served under a flood). A sender
   * still waiting when the actor shuts down is interrupted, like the callers of queued requests.
   */
  readonly sendFrom: (source: number, cmd: Cmd) => Effect.Effect<void>
  /**
   * trySendFrom is `sendFrom` for hints (a peer's block inv): it never waits, and answers false (the
   * command is dropped) when the source has used its quota or the mailbox is full, so a flooding
   * source cannot fill the mailbox with hints either
   */
  readonly trySendFrom: (source: number, cmd: Cmd) => Effect.Effect<boolean>
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
  /** commands one source may have queued or in progress through `sendFrom`; default `defaultPerSource` */
  readonly perSource?: number
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
 * defaultPerSource is `sendFrom`'s quota: 4 commands per source. One in progress and three queued
 * keep the actor busy with a source's next message while its reader hands over the one after (a
 * syncing peer's blocks flow without a gap: Sync never waits for the reader), and a flooder's share
 * of the mailbox stays 4 commands however fast it writes.
 */
export const defaultPerSource = 4

/** Envelope is a mailbox entry: the command and the `sendFrom` source whose quota it holds, if any. */
interface Envelope<Cmd> {
  readonly cmd: Cmd
  readonly source: number | undefined
}

/** Quota is one source's commands queued or in progress, and the signal its waiting senders await. */
interface Quota {
  used: number
  freed: Deferred.Deferred<void> | undefined
}

/**
 * make starts an actor in the current scope: its loop is forked with `Effect.forkScoped`, so closing
 * the scope (the Layer's) stops it after the command in progress, and interrupts the callers of
 * commands still queued and the `sendFrom` callers waiting for a slot. Call it inside `Layer.scoped`.
 */
export const make = <Cmd, S, E, R>(
  options: ActorOptions<Cmd, S, E, R>,
): Effect.Effect<Actor<Cmd>, E, R | Scope.Scope> =>
  Effect.gen(function* () {
    const mailbox = yield* Queue.bounded<Envelope<Cmd>>(options.capacity)
    const perSource = Math.max(1, options.perSource ?? defaultPerSource)
    /** quotas of the sources with commands queued or in progress (an idle source has no entry) */
    const quotas = new Map<number, Quota>()
    /** set when shutdown begins: `sendFrom` callers from then on, and those waiting for a slot, are interrupted */
    let closing = false
    /** set when the mailbox is drained, after the command in progress: every sender is interrupted */
    let stopped = false

    /** tryAcquire takes one of the source's slots if it has a free one (synchronous: no interruption between). */
    const tryAcquire = (source: number): boolean => {
      let q = quotas.get(source)
      if (q === undefined) {
        q = { used: 0, freed: undefined }
        quotas.set(source, q)
      }
      if (q.used >= perSource) return false
      q.used++
      return true
    }

    /** freedOf is the signal the next release of the source's slots completes. */
    const freedOf = (source: number): Deferred.Deferred<void> => {
      const q = quotas.get(source)!
      q.freed ??= Deferred.unsafeMake<void>(FiberId.none)
      return q.freed
    }

    const wake = (q: Quota) => {
      if (q.freed === undefined) return
      Deferred.unsafeDone(q.freed, Exit.void)
      q.freed = undefined
    }

    /** release gives a slot back (the command was handled, crashed, or dropped at shutdown) and wakes the source's senders. */
    const release = (source: number | undefined) => {
      if (source === undefined) return
      const q = quotas.get(source)
      if (q === undefined) return
      q.used--
      wake(q)
      if (q.used <= 0) quotas.delete(source)
    }

    // The first initialisation happens here so a failure to start (e.g. unreadable storage) fails
    // the layer instead of looping in the background.
    const first = yield* options.initial
    let pending: S | undefined = first

    /**
     * step takes the next command and handles it. Once taken, a command is handled and its slot given
     * back whatever happens (only the wait for it can be interrupted), so no command is lost between
     * the mailbox and the handler, and no source's quota leaks.
     */
    const step = (state: S) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(restore(Queue.take(mailbox)), ({ cmd, source }) =>
          Effect.flatMap(Effect.exit(options.handle(state, cmd)), (exit) => {
            release(source)
            if (Exit.isSuccess(exit) || !isRequest(cmd)) return Effect.succeed(exit)
            return Effect.as(Deferred.failCause(cmd.reply, exit.cause), exit)
          }),
        ),
      )

    const run: Effect.Effect<never, Cause.Cause<unknown>, R> = Effect.gen(function* () {
      let state: S
      if (pending !== undefined) {
        state = pending
        pending = undefined
      } else {
        state = yield* options.initial
      }
      while (true) {
        const exit = yield* step(state)
        if (Exit.isFailure(exit)) return yield* Effect.failCause(exit.cause)
        state = exit.value
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
        stopped = true
        // Senders waiting on a full mailbox get their commands in as it empties: drain until it stays
        // empty, so none of them is left with a command nobody will handle.
        let queued = yield* Queue.takeAll(mailbox)
        while (queued.length > 0) {
          for (const { cmd, source } of queued) {
            release(source)
            if (isRequest(cmd)) yield* Deferred.interrupt(cmd.reply)
          }
          queued = yield* Queue.takeAll(mailbox)
        }
        yield* Queue.shutdown(mailbox)
      }),
    )
    yield* Effect.forkScoped(supervised)
    // Finalizers run in reverse: this one first, before the command in progress finishes. Senders
    // waiting for a slot wake, see `closing`, and are interrupted.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closing = true
        for (const q of quotas.values()) wake(q)
      }),
    )

    const offer = (envelope: Envelope<Cmd>) =>
      Effect.suspend(() => (stopped ? Effect.interrupt : Effect.asVoid(Queue.offer(mailbox, envelope))))

    /** sendFrom's loop: take a slot (or wait for one), then queue; runs uninterruptibly except in `restore`. */
    const sendFrom = (source: number, cmd: Cmd): Effect.Effect<void> =>
      Effect.uninterruptibleMask((restore) => {
        const attempt: Effect.Effect<void> = Effect.suspend(() => {
          if (closing) return Effect.interrupt
          if (tryAcquire(source)) {
            return restore(offer({ cmd, source })).pipe(
              Effect.onInterrupt(() => Effect.sync(() => release(source))),
            )
          }
          return Effect.zipRight(restore(Deferred.await(freedOf(source))), attempt)
        })
        return attempt
      })

    return {
      name: options.name,
      send: (cmd) => offer({ cmd, source: undefined }),
      trySend: (cmd) => Effect.sync(() => !stopped && Queue.unsafeOffer(mailbox, { cmd, source: undefined })),
      sendFrom,
      trySendFrom: (source, cmd) =>
        Effect.sync(() => {
          if (closing || stopped || !tryAcquire(source)) return false
          if (Queue.unsafeOffer(mailbox, { cmd, source })) return true
          release(source)
          return false
        }),
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
