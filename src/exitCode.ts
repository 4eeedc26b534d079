import { ValidationError } from "@effect/cli"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Cause, Effect, Exit, Option } from "effect"

/**
 * exitCodeOf maps a program's end to CONTRACT.md's exit codes and prints one line for a failure:
 * 0 after success or an interruption (SIGINT, SIGTERM), 2 for a bad flag (@effect/cli has printed it),
 * 1 for anything else. `known` answers the program's own errors first (printing what it wants),
 * undefined for the rest. Shared by `dist/main.js` and `dist/sim.js`.
 */
export const exitCodeOf =
  (name: string, known: (e: unknown) => number | undefined) =>
  (exit: Exit.Exit<unknown, unknown>): number => {
    if (Exit.isSuccess(exit) || Cause.isInterruptedOnly(exit.cause)) return 0
    const failure = Cause.failureOption(exit.cause)
    if (Option.isSome(failure)) {
      const e = failure.value
      const code = known(e)
      if (code !== undefined) return code
      if (ValidationError.isValidationError(e)) return 2 // @effect/cli already printed the problem
      console.error(`${name}: ${e instanceof Error ? e.message : String(e)}`)
      return 1
    }
    console.error(`${name}: fatal: ${Cause.pretty(exit.cause).split("\n")[0]}`)
    return 1
  }

/** runProgram runs a command-line program on Node and exits with `exitCode`'s answer for how it ended. */
export const runProgram = (
  program: Effect.Effect<unknown, unknown, NodeContext.NodeContext>,
  exitCode: (exit: Exit.Exit<unknown, unknown>) => number,
): void =>
  NodeRuntime.runMain(Effect.provide(program, NodeContext.layer), {
    disableErrorReporting: true,
    teardown: (exit, onExit) => onExit(exitCode(exit)),
  })
