-- wrk script for bench/bench_load.py: POSTs the JSON bodies of a file (one a line) in turn, counts non-2xx
-- and 429 responses, and prints one machine-readable summary line at the end.
--
--   wrk -t1 -c32 -d15s --timeout 30s -s bench/bench_load.lua http://127.0.0.1:PORT -- BODIES_FILE /search
--
-- With BENCH_LOAD_RETRY_AFTER=1 in the environment, each 429 makes the thread wait its Retry-After before
-- one later request (wrk's Lua sees no connection identity, so the wait goes to the next request the thread
-- sends: the clients back off as long in all as the 429s asked). Latencies are wrk's: every response,
-- 429s included, measured from the moment the request is written (a back-off wait is not counted).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(args[1], "r"), "cannot open " .. tostring(args[1]))
  local headers = { ["Content-Type"] = "application/json" }
  prepared = {}
  for line in file:lines() do
    if #line > 0 then
      prepared[#prepared + 1] = wrk.format("POST", args[2], headers, line)
    end
  end
  file:close()
  assert(#prepared > 0, "no request bodies in " .. args[1])
  index = 0
  non2xx = 0
  n429 = 0
  owed = 0          -- back-off waits not yet taken
  retry_ms = 1000
end

function request()
  index = index % #prepared + 1
  return prepared[index]
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if status == 429 then
      n429 = n429 + 1
      owed = owed + 1
      local after = tonumber(headers["retry-after"] or headers["Retry-After"] or "")
      if after then retry_ms = after * 1000 end
    end
  end
end

if os.getenv("BENCH_LOAD_RETRY_AFTER") == "1" then
  function delay()
    if owed > 0 then
      owed = owed - 1
      return retry_ms
    end
    return 0
  end
end

function done(summary, latency, requests)
  local bad, too_many = 0, 0
  for _, thread in ipairs(threads) do
    bad = bad + (thread:get("non2xx") or 0)
    too_many = too_many + (thread:get("n429") or 0)
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_LOAD {"duration_us": %d, "requests": %d, "non2xx": %d, "n429": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.duration, summary.requests, bad, too_many, errors.connect, errors.read, errors.write,
    errors.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
