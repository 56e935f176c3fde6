// agentauth for JavaScript and TypeScript: the resource-server verifier,
// the agent and the site. The MCP SDK adapter is `agentauth/mcp`.
export {
  ResourceVerifier, AuthError, MemoryReplayCache, requireScopes, actorChain, bearerOrDpop, ath, replayRetention, certificateMatches,
  ACCESS_TOKEN_TYP, PASSPORT_TYP, DPOP_TYP, DPOP_ALGS, TOKEN_ALGS,
} from './verifier.js'
export {
  Agent, generateAgentKey, loadAgentKey, isLoopback, solveChallenge,
  PASSPORT_GRANT, PASSPORT_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT, ACCESS_TOKEN_TYPE, BRIDGE_CERT_GRANT, CIBA_GRANT,
} from './agent.js'
export {
  MCP_TOOL_CALL, APPROVAL_REQUIRED, MemorySpentStore, SpentStoreError, argumentsDigest, entry, approvesToolCalls, covers, approvalRequiredError,
} from './approvals.js'
export { Site, LoginError, POW_LOGIN_GRANT } from './site.js'
