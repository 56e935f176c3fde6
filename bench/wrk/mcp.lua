-- MCP tools/call over streamable HTTP, from the environment:
--   WRK_BODY (the JSON-RPC request), WRK_BEARER (an access token; empty:
--   none), WRK_SESSION (the Mcp-Session-Id from initialize).
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
local bearer = os.getenv("WRK_BEARER")
if bearer and bearer ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. bearer
end
local session = os.getenv("WRK_SESSION")
if session and session ~= "" then
  wrk.headers["Mcp-Session-Id"] = session
end

dofile("bench/wrk/result.lua")
