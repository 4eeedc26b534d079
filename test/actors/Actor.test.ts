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

/** counter: an actor summing Add commands; `inits` counts how often its state was (re)built. */
const counter = (inits: Ref.Ref<number>, capacity = 16) =>
  Actor.make<CounterCmd, number, never, never>({
    name: "counter",
    capacity,
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
      }
    },
  })

const get = (actor: Actor.Actor<CounterCmd>) =>
  Actor.ask(actor, (reply: Deferred.Deferred<number>) => ({ _tag: "Get", reply }) as const)

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
})
