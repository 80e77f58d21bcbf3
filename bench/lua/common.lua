-- Prepended to every workload script by bench/run.py. Each wrk thread has its own Lua state: setup() (in the
-- main state) numbers the threads, done() (main state again) adds up the per-thread `bad` counters and
-- prints one machine-readable line for the orchestrator.
local counter = 0
local threads = {}

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

bad = 0          -- responses with the right status but the wrong content (set by response() where defined)
tid = 0

function readlines(path)
  local lines = {}
  for line in io.lines(path) do
    if #line > 0 then lines[#lines + 1] = line end
  end
  return lines
end

function done(summary, latency, requests)
  local wrong = 0
  for _, thread in ipairs(threads) do wrong = wrong + (thread:get("bad") or 0) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"bad":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    wrong, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
  -- the latency quantile function in 0.1 % steps, so the orchestrator can merge several runs' distributions
  local q = {}
  for k = 1, 1000 do q[k] = string.format("%d", latency:percentile(k / 10)) end
  io.write("BENCH_QUANTILES " .. table.concat(q, ",") .. "\n")
end
