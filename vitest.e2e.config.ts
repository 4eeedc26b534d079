import { defineConfig } from "vitest/config"

/** End-to-end suite: real processes built from dist/, run by `npm run test:e2e` after `npm run build`. */
export default defineConfig({
  test: {
    include: ["test/e2e/**/*.test.ts"],
    testTimeout: 300_000,
    hookTimeout: 120_000,
    fileParallelism: false,
  },
})
