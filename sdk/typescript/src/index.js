// agentauth for JavaScript and TypeScript: the resource-server verifier,
// the agent and the site. The MCP SDK adapter is `agentauth/mcp`.
export {
  ResourceVerifier, AuthError, MemoryReplayCache, requireScopes, actorChain, bearerOrDpop, ath, replayRetention,
  ACCESS_TOKEN_TYP, PASSPORT_TYP, DPOP_TYP, DPOP_ALGS, TOKEN_ALGS,
} from './verifier.js'
