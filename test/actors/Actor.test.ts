import { describe, expect, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Fiber, Ref, Schedule, Scope, TestClock } from "effect"
import * as Actor from "../../src/actors/Actor.js"

type CounterCmd =
  | { readonly _tag: "Add"; readonly n: number }
  | { readonly _tag: "Get"; readonly reply: Deferred.Deferred<number> }
  | { readonly _tag: "Crash"; readonly reply: Deferred.Deferred<number> }
  | {
      readonly _tag: "Block"
      readonly gate: Deferred.Deferred<void>
      readonly started: Deferred.Deferred<void>
    }
  | { readonly _tag: "Log"; readonly source: number }

/**
 * counter: an actor summing Add commands; `inits` counts how often its state was (re)built; `log`
 * records the source of each Log command in the order they were handled.
 */
const counter = (inits: Ref.Ref<number>, capacity = 16, perSource?: number, log: Array<number> = []) =>
  Actor.make<CounterCmd, number, never, never>({
    name: "counter",
    capacity,
    ...(perSource === undefined ? {} : { perSource }),
    initial: Ref.updateAndGet(inits, (n) => n + 1).pipe(Effect.as(0)),
    restart: Schedule.spaced(Duration.seconds(1)),
    handle: (state, cmd) => {
      switch (cmd._tag) {
        case "Add":
          return Effect.succeed(state + cmd.n)
        case "Get":
          return Deferred.succeed(cmd.reply, state).pipe(Effect.as(state))
        case "Crash":
          return Effect.die(new Error("handler bug"))
        case "Block":
          return Deferred.succeed(cmd.started, undefined).pipe(
            Effect.zipRight(Deferred.await(cmd.gate)),
            Effect.as(state),
          )
        case "Log":
          return Effect.sync(() => {
            log.push(cmd.source)
            return state
          })
      }
    },
  })

const get = (actor: Actor.Actor<CounterCmd>) =>
  Actor.ask(actor, (reply: Deferred.Deferred<number>) => ({ _tag: "Get", reply }) as const)

/**
 * block occupies the actor with a command that runs until the returned gate opens (at the latest
 * when the test's scope closes, so a failed assertion does not leave the actor's shutdown waiting).
 */
const block = (send: (cmd: CounterCmd) => Effect.Effect<void>) =>
  Effect.gen(function* () {
    const gate = yield* Deferred.make<void>()
    const started = yield* Deferred.make<void>()
    yield* Effect.addFinalizer(() => Deferred.succeed(gate, undefined))
    yield* send({ _tag: "Block", gate, started })
    yield* Deferred.await(started)
    return gate
  })

/** waiting: the fiber is still suspended after the others had every chance to run. */
const waiting = <A, E>(fiber: Fiber.RuntimeFiber<A, E>) =>
  Effect.map(Effect.repeatN(Effect.yieldNow(), 50), () => fiber.unsafePoll() === null)

describe("Actor kit", () => {
  it.scoped("one fiber applies commands in the order they were sent and answers requests", () =>
    Effect.gen(function* () {
      const actor = yield* counter(yield* Ref.make(0))
      for (let i = 1; i <= 10; i++) yield* actor.send({ _tag: "Add", n: i })
      expect(yield* get(actor)).toBe(55)
    }),
  )

  it.scoped("trySend answers false when the mailbox is full instead of waiting", () =>
    Effect.gen(function* () {
      const actor = yield* counter(yield* Ref.make(0), 2)
      const gate = yield* Deferred.make<void>()
      const started = yield* Deferred.make<void>()
      yield* actor.send({ _tag: "Block", gate, started })
      yield* Deferred.await(started)
      expect(yield* actor.trySend({ _tag: "Add", n: 1 })).toBe(true)
      expect(yield* actor.trySend({ _tag: "Add", n: 1 })).toBe(true)
      expect(yield* actor.trySend({ _tag: "Add", n: 1 })).toBe(false)
      yield* Deferred.succeed(gate, undefined)
      expect(yield* get(actor)).toBe(2)
    }),
  )

  it.scoped("a crashing command fails its caller, and the actor restarts from its initial state", () =>
    Effect.gen(function* () {
      const inits = yield* Ref.make(0)
      const actor = yield* counter(inits)
      yield* actor.send({ _tag: "Add", n: 5 })
      const crashed = yield* Effect.exit(
        Actor.ask(actor, (reply: Deferred.Deferred<number>) => ({ _tag: "Crash", reply }) as const),
      )
      expect(Exit.isFailure(crashed)).toBe(true)
      expect(Exit.isFailure(crashed) && String(crashed.cause)).toContain("handler bug")
      const after = yield* Effect.fork(get(actor))
      yield* TestClock.adjust(Duration.seconds(1))
      expect(yield* Fiber.join(after)).toBe(0)
      expect(yield* Ref.get(inits)).toBe(2)
    }),
  )

  it.effect("closing the scope finishes the command in progress and interrupts queued requests", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const actor = yield* counter(yield* Ref.make(0)).pipe(Scope.extend(scope))
      const gate = yield* Deferred.make<void>()
      const started = yield* Deferred.make<void>()
      yield* actor.send({ _tag: "Block", gate, started })
      yield* Deferred.await(started)
      const queued = yield* Effect.fork(get(actor))
      yield* Effect.yieldNow()
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      yield* Effect.yieldNow()
      // the command in progress still completes: closing waits for it
      expect(closing.unsafePoll()).toBe(null)
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(closing)
      const queuedExit = yield* Fiber.await(queued)
      expect(Exit.isInterrupted(queuedExit)).toBe(true)
    }),
  )

  it.scoped(
    "sendFrom: beyond perSource commands queued or in progress, the source's sender waits for one to be handled",
    () =>
      Effect.gen(function* () {
        const actor = yield* counter(yield* Ref.make(0), 16, 2)
        const gate = yield* block((cmd) => actor.sendFrom(1, cmd))
        yield* actor.sendFrom(1, { _tag: "Add", n: 1 })
        const third = yield* Effect.fork(actor.sendFrom(1, { _tag: "Add", n: 10 }))
        expect(yield* waiting(third)).toBe(true)
        // the quota is per source: another one is not held up, nor is plain send
        yield* actor.sendFrom(2, { _tag: "Add", n: 100 })
        yield* actor.send({ _tag: "Add", n: 1000 })
        expect(yield* waiting(third)).toBe(true)
        yield* Deferred.succeed(gate, undefined)
        yield* Fiber.join(third)
        expect(yield* get(actor)).toBe(1111)
      }),
  )

  it.scoped(
    "a flooding source holding its quota: another source's command is handled after at most perSource of its",
    () =>
      Effect.gen(function* () {
        const log: Array<number> = []
        const actor = yield* counter(yield* Ref.make(0), 4096, Actor.defaultPerSource, log)
        const gate = yield* block(actor.send)
        let handedOver = 0
        const flood = yield* Effect.fork(
          Effect.forEach(
            Array.from({ length: 1000 }),
            () =>
              Effect.tap(actor.sendFrom(1, { _tag: "Log", source: 1 }), () =>
                Effect.sync(() => handedOver++),
              ),
            { discard: true },
          ),
        )
        expect(yield* waiting(flood)).toBe(true)
        expect(handedOver).toBe(Actor.defaultPerSource)
        yield* actor.sendFrom(2, { _tag: "Log", source: 2 })
        yield* Deferred.succeed(gate, undefined)
        yield* Fiber.join(flood)
        expect(yield* get(actor)).toBe(0)
        expect(log).toHaveLength(1001)
        expect(log.indexOf(2)).toBe(Actor.defaultPerSource)
      }),
  )

  it.scoped(
    "trySendFrom drops a source's hints beyond its quota, never waits, and frees the slot when handled",
    () =>
      Effect.gen(function* () {
        const log: Array<number> = []
        const actor = yield* counter(yield* Ref.make(0), 4096, 2, log)
        const gate = yield* block(actor.send)
        const accepted: Array<boolean> = []
        for (let i = 0; i < 1000; i++) accepted.push(yield* actor.trySendFrom(1, { _tag: "Log", source: 1 }))
        expect(accepted.filter((a) => a)).toHaveLength(2)
        // another source is not held up by the first one's used quota
        expect(yield* actor.trySendFrom(2, { _tag: "Log", source: 2 })).toBe(true)
        yield* Deferred.succeed(gate, undefined)
        expect(yield* get(actor)).toBe(0)
        expect(log).toEqual([1, 1, 2])
        // handled: the slots are free again
        expect(yield* actor.trySendFrom(1, { _tag: "Log", source: 1 })).toBe(true)
      }),
  )

  it.scoped("a sender waiting for a slot is let in when the command holding it crashes the actor", () =>
    Effect.gen(function* () {
      const inits = yield* Ref.make(0)
      const actor = yield* counter(inits, 16, 1)
      const crash = yield* Deferred.make<number>()
      yield* actor.sendFrom(1, { _tag: "Crash", reply: crash })
      const next = yield* Effect.fork(actor.sendFrom(1, { _tag: "Add", n: 5 }))
      expect(Exit.isFailure(yield* Deferred.await(crash).pipe(Effect.exit))).toBe(true)
      // the crash gave the slot back: the waiting sender's command is queued for the restarted actor
      expect(yield* waiting(next)).toBe(false)
      yield* Fiber.join(next)
      const after = yield* Effect.fork(get(actor))
      yield* TestClock.adjust(Duration.seconds(1))
      expect(yield* Fiber.join(after)).toBe(5)
      expect(yield* Ref.get(inits)).toBe(2)
    }),
  )

  it.scoped("closing the scope interrupts senders waiting for a slot, and later senders", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const actor = yield* counter(yield* Ref.make(0), 16, 1).pipe(Scope.extend(scope))
      const gate = yield* block((cmd) => actor.sendFrom(1, cmd))
      const waiter = yield* Effect.fork(actor.sendFrom(1, { _tag: "Add", n: 1 }))
      expect(yield* waiting(waiter)).toBe(true)
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(closing)
      expect(Exit.isInterrupted(yield* Fiber.await(waiter))).toBe(true)
      expect(Exit.isInterrupted(yield* Effect.exit(actor.sendFrom(2, { _tag: "Add", n: 1 })))).toBe(true)
      expect(yield* actor.trySend({ _tag: "Add", n: 1 })).toBe(false)
    }),
  )

  it.scoped("a request waiting on a full mailbox at shutdown is interrupted, not left hanging", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const actor = yield* counter(yield* Ref.make(0), 1).pipe(Scope.extend(scope))
      const gate = yield* block(actor.send)
      yield* actor.send({ _tag: "Add", n: 1 })
      const asking = yield* Effect.fork(get(actor))
      expect(yield* waiting(asking)).toBe(true)
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(closing)
      expect(yield* waiting(asking)).toBe(false)
      expect(Exit.isInterrupted(yield* Fiber.await(asking))).toBe(true)
    }),
  )
})
