-- wrk script: POST /score with bodies read from a file (one JSON body a line) and count the
-- answers by status; prints {"requests", "status": {...}, latency percentiles} as JSON.
local bodies = {}
local counter = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  counter = math.random(#bodies)
  statuses = {}
end

function request()
  counter = counter % #bodies + 1
  return wrk.format("POST", "/score", {["Content-Type"] = "application/json"}, bodies[counter])
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(total) do parts[#parts + 1] = string.format('"%d": %d', status, n) end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "status": {%s}, "p50_us": %d, "p99_us": %d, ' ..
    '"socket_errors": %d}\n',
    summary.requests, summary.duration, table.concat(parts, ", "), latency:percentile(50),
    latency:percentile(99), e.connect + e.read + e.write + e.timeout))
end
