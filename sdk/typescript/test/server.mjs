// The conformance suite's server harness: the SDK's tests start the real
// binary the same way (AGENTAUTH_BIN, a fresh SQLite database, users).
export * from '../../../conformance/lib/server.mjs'
