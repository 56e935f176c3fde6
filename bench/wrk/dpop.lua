-- POST /token with a fresh DPoP proof per request, read from WRK_PROOFS
-- (one proof per line; threads take alternate lines). WRK_AUTH is the
-- Basic credential. done() prints the same RESULT line as request.lua.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local nthreads = counter > 0 and counter or 2
  proofs = {}
  local i = 0
  for line in io.lines(os.getenv("WRK_PROOFS")) do
    if i % 2 == id then
      proofs[#proofs + 1] = line
    end
    i = i + 1
  end
  next_proof = 1
  wrk.method = "POST"
  wrk.body = os.getenv("WRK_BODY")
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.headers["Authorization"] = "Basic " .. os.getenv("WRK_AUTH")
end

function request()
  local proof = proofs[next_proof] or proofs[1]
  next_proof = next_proof + 1
  wrk.headers[os.getenv("WRK_PROOF_HEADER") or "DPoP"] = proof
  return wrk.format()
end

dofile("bench/wrk/result.lua")
