-- POST with a different body per request, read from WRK_BODIES (one body
-- per line; the two threads take alternate lines): each carries a fresh,
-- single-use client assertion (and, after a TAB, a DPoP proof for it). done() prints the RESULT line.
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  bodies = {}
  local i = 0
  for line in io.lines(os.getenv("WRK_BODIES")) do
    if i % 2 == id then
      bodies[#bodies + 1] = line
    end
    i = i + 1
  end
  next_body = 1
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

function request()
  local body = bodies[next_body]
  if body == nil then
    -- Out of fresh assertions: repeat the last (refused as a replay, and
    -- counted as non-2xx, so a too-short file shows in the table).
    body = bodies[#bodies]
  end
  next_body = next_body + 1
  -- "body<TAB>proof": a DPoP proof made for this body.
  local tab = string.find(body, "\t", 1, true)
  if tab then
    wrk.headers["DPoP"] = string.sub(body, tab + 1)
    body = string.sub(body, 1, tab - 1)
  end
  wrk.body = body
  return wrk.format()
end

dofile("bench/wrk/result.lua")
