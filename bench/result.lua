-- Shared by the wrk scripts (payments.lua, webhooks.lua), loaded with dofile: setup() numbers
-- the threads, response() counts 200s and every other status, done() prints one
-- machine-readable line, "BENCH_RESULT {json}", that bench/report.py parses. The loading
-- script sets the global run_label in its init().

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
  table.insert(threads, thread)
end

-- Read by done() through thread:get().
ok = 0
bad = 0
statuses = {}

function response(status, _headers, _body)
  if status == 200 then
    ok = ok + 1
  else
    bad = bad + 1
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
    if bad <= 3 then
      io.stderr:write("non-200 response " .. status .. ": " .. tostring(_body) .. "\n")
    end
  end
end

function done(summary, latency, requests)
  local total_ok, total_bad, merged = 0, 0, {}
  local label = threads[1] and threads[1]:get("run_label") or "run"
  for _, thread in ipairs(threads) do
    total_ok = total_ok + (thread:get("ok") or 0)
    total_bad = total_bad + (thread:get("bad") or 0)
    for status, n in pairs(thread:get("statuses") or {}) do
      merged[status] = (merged[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(merged) do
    table.insert(parts, string.format('"%s":%d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"label":"%s","threads":%d,"duration_us":%d,"requests":%d,"bytes":%d,'
      .. '"ok":%d,"non_200":%d,"statuses":{%s},'
      .. '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},"status_errors":%d,'
      .. '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    label, thread_count, summary.duration, summary.requests, summary.bytes,
    total_ok, total_bad, table.concat(parts, ","),
    e.connect, e.read, e.write, e.timeout, e.status,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)
  ))
end
