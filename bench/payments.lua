-- wrk script: create-and-confirm a PaymentIntent on every request.
--
--   wrk -t2 -c16 -d20s --latency -s bench/payments.lua http://127.0.0.1:PORT \
--       -- <secret_key> <key|nokey> <run_nonce> <label>
--
-- With "key", each request carries an Idempotency-Key that is unique across threads and runs:
-- <run_nonce>-<thread id>-<counter>. With "nokey" the header is left out.
-- Counting and the BENCH_RESULT line are bench/result.lua's.

dofile(debug.getinfo(1, "S").source:sub(2):match("^(.-)[^/]*$") .. "result.lua")

local secret, use_key, nonce
local counter = 0
local body = '{"amount":2000,"currency":"usd","payment_method":"tok_visa","confirm":true}'
local headers = {}

function init(args)
  secret = args[1] or error("usage: -- <secret_key> <key|nokey> <run_nonce> <label>")
  use_key = (args[2] or "key") == "key"
  nonce = args[3] or tostring(os.time())
  run_label = args[4] or "run" -- a global, so done() can read it via thread:get()
  headers["Authorization"] = "Bearer " .. secret
  headers["Content-Type"] = "application/json"
end

function request()
  if use_key then
    counter = counter + 1
    headers["Idempotency-Key"] = nonce .. "-" .. tid .. "-" .. counter
  end
  return wrk.format("POST", "/v1/payment_intents", headers, body)
end
