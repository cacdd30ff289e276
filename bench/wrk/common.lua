-- Shared by the Marconi wrk scripts: headers, message bodies and the
-- machine-readable summary that bench/run.py reads.

common = {}

-- Arguments after "--" on the wrk command line: PROJECT CLIENT_ID QUEUE [...]
function common.headers(args)
   wrk.headers["X-Project-ID"] = args[1]
   wrk.headers["Client-ID"] = args[2]
   if os.getenv("MARCONI_BENCH_TOKEN") then
      wrk.headers["X-Auth-Token"] = os.getenv("MARCONI_BENCH_TOKEN")
   end
   wrk.headers["Accept"] = "application/json"
   wrk.headers["Content-Type"] = "application/json"
   return args[3]
end

-- The same message bodies as bench/driver.py sends.
function common.messages(n)
   local parts = {}
   for i = 1, n do
      parts[i] = string.format(
         '{"body":{"event":"bench","n":%d,"payload":"%s"},"ttl":3600}',
         i - 1, string.rep("x", 64))
   end
   return '{"messages":[' .. table.concat(parts, ",") .. ']}'
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'MARCONI-BENCH {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean))
end

return common
