-- The benchmark's wrk script:  wrk [options] -s wrk.lua <url> -- <METHOD> [<JSON body>]
-- Sets the method and body, and prints one machine-readable summary line at the end.

function init(args)
  wrk.method = args[1] or "GET"
  if args[2] ~= nil and args[2] ~= "" then
    wrk.body = args[2]
    wrk.headers["Content-Type"] = "application/json"
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "http_errors": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
