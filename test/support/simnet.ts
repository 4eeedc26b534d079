/** The multi-node test helpers live with the simulator in src/sim/simnet.ts; tests import them from here. */
export * from "../../src/sim/simnet.js"
