import { Clock, Duration, Effect, Scheduler } from "effect"

/**
 * SimClock is the simulator's clock: a discrete-event clock that only the simulator loop moves, as
 * the TestClock is, but without its cost. TestClock.adjust waits three real `setTimeout(0)` turns
 * (at least 1 ms each) for every sleeper it wakes, which made a 6-node run spend about 90% of its
 * real time idle (measured: 8 simulated seconds per real second). Here a woken batch of sleepers
 * runs until every fiber is suspended again on the microtask queue, which `settle` (one
 * `setImmediate` turn) observes, because every sim fiber runs on `scheduler`, which never defers to
 * a real timer. No real timer is involved, so a seed gives one interleaving.
 */

interface Sleeper {
  readonly at: number
  readonly seq: number
  readonly wake: () => void
  cancelled: boolean
}

/** scheduler runs every sim fiber on microtasks only (Effect's default falls back to setTimeout after 2,048 turns). */
export const scheduler = new Scheduler.MixedScheduler(Number.MAX_SAFE_INTEGER)

/** settle lets every runnable fiber run to its next suspension: microtasks drain before a setImmediate turn. */
export const settle: Effect.Effect<void> = Effect.promise(
  () => new Promise<void>((resolve) => setImmediate(resolve)),
).pipe(Effect.zipRight(Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))))

/** MAX_WAKE_ROUNDS bounds one `advanceTo` (a fiber sleeping 0 ms forever would otherwise spin it). */
const MAX_WAKE_ROUNDS = 10_000_000

/** SimClock's state and its advancing; `clock` is the Clock service to run the nodes on. */
export class SimClock {
  private now: number
  private seq = 0
  private readonly heap: Array<Sleeper> = []
  /** wakes counts the sleepers woken so far (a cost measure) */
  wakes = 0
  readonly clock: Clock.Clock

  constructor(startMillis: number) {
    this.now = startMillis
    this.clock = {
      [Clock.ClockTypeId]: Clock.ClockTypeId,
      unsafeCurrentTimeMillis: () => this.now,
      currentTimeMillis: Effect.sync(() => this.now),
      unsafeCurrentTimeNanos: () => BigInt(Math.floor(this.now * 1_000_000)),
      currentTimeNanos: Effect.sync(() => BigInt(Math.floor(this.now * 1_000_000))),
      sleep: (duration: Duration.Duration) =>
        Effect.async<void>((resume) => {
          const millis = Duration.toMillis(duration)
          const entry: Sleeper = {
            at: this.now + Math.max(0, millis),
            seq: this.seq++,
            wake: () => resume(Effect.void),
            cancelled: false,
          }
          if (Number.isFinite(entry.at)) this.push(entry)
          return Effect.sync(() => {
            entry.cancelled = true
          })
        }),
    }
  }

  /** millis is the current simulated time. */
  get millis(): number {
    return this.now
  }

  /** pending is the number of sleepers waiting (cancelled ones included until they surface). */
  get pending(): number {
    return this.heap.length
  }

  /**
   * advanceTo moves time to `to`, waking sleepers in (time, sleep order) and letting each batch of
   * equal wake times run to suspension before the next; the simulator's fiber only.
   */
  advanceTo(to: number): Effect.Effect<void> {
    return Effect.gen(this, function* () {
      // what the caller set off (a block mined, a partition) runs at the current time first
      yield* settle
      for (let round = 0; round < MAX_WAKE_ROUNDS; round++) {
        const top = this.heap[0]
        if (top === undefined || top.at > to) {
          this.now = Math.max(this.now, to)
          return
        }
        this.now = Math.max(this.now, top.at)
        while (this.heap[0] !== undefined && this.heap[0].at <= this.now) {
          const sleeper = this.pop()!
          if (sleeper.cancelled) continue
          this.wakes += 1
          sleeper.wake()
        }
        yield* settle
      }
      return yield* Effect.dieMessage(`SimClock: more than ${MAX_WAKE_ROUNDS} wake rounds before ${to}`)
    })
  }

  private less(a: Sleeper, b: Sleeper): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq)
  }

  private push(item: Sleeper): void {
    const h = this.heap
    h.push(item)
    let i = h.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!this.less(h[i]!, h[parent]!)) break
      ;[h[i], h[parent]] = [h[parent]!, h[i]!]
      i = parent
    }
  }

  private pop(): Sleeper | undefined {
    const h = this.heap
    const top = h[0]
    const last = h.pop()
    if (h.length > 0 && last !== undefined) {
      h[0] = last
      let i = 0
      while (true) {
        const l = 2 * i + 1
        const r = l + 1
        let m = i
        if (l < h.length && this.less(h[l]!, h[m]!)) m = l
        if (r < h.length && this.less(h[r]!, h[m]!)) m = r
        if (m === i) break
        ;[h[i], h[m]] = [h[m]!, h[i]!]
        i = m
      }
    }
    return top
  }
}
