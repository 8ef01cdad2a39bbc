-- wrk script: replay signed Stripe webhook deliveries made by bench/webhook_requests.py.
--
--   wrk -t2 -c16 -d20s --latency -s bench/webhooks.lua http://127.0.0.1:PORT \
--       -- <requests file> <wrk threads> <label>
--
-- Thread k of n takes every n-th line of the file starting at line k, so the threads send
-- disjoint sets of deliveries (repeats among them are the generator's, on purpose). Running out
-- of lines is an error: make the file bigger rather than measure replays of replays.
-- Counting and the BENCH_RESULT line are bench/result.lua's.

dofile(debug.getinfo(1, "S").source:sub(2):match("^(.-)[^/]*$") .. "result.lua")

local mine = {}
local next_line = 1

function init(args)
  local path = args[1] or error("usage: -- <requests file> <wrk threads> <label>")
  local stride = tonumber(args[2] or "1")
  run_label = args[3] or "webhooks" -- a global, so done() can read it via thread:get()
  local n = 0
  for line in io.lines(path) do
    if n % stride == tid - 1 then
      local p, signature, body = line:match("^([^\t]+)\t([^\t]+)\t(.+)$")
      table.insert(mine, wrk.format("POST", p, {
        ["Content-Type"] = "application/json",
        ["Stripe-Signature"] = signature,
      }, body))
    end
    n = n + 1
  end
end

function request()
  local r = mine[next_line] or error("bench/webhooks.lua: out of requests; generate more")
  next_line = next_line + 1
  return r
end
