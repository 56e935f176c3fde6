-- One request shape for every scenario, from the environment:
--   WRK_METHOD (GET|POST), WRK_BODY (form body), WRK_AUTH (Basic credentials).
-- done() prints one machine-readable line for bench/load.sh.
wrk.method = os.getenv("WRK_METHOD") or "GET"
local body = os.getenv("WRK_BODY")
if body and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end
local auth = os.getenv("WRK_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = "Basic " .. auth
end

dofile("bench/wrk/result.lua")
