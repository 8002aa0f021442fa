-- wrk script of benchmarks/serve.py --cache: POSTs the request bodies of a file (one JSON document per
-- line) in order, each of wrk's n threads taking every n-th line (serve_production.py interleaves one
-- stream per thread); a thread that runs out starts again at its first line and says so (the stream's
-- repeat fraction then no longer holds, and the benchmark stops).
local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local path, n = args[1], tonumber(args[2])
  requests_ = {}
  local line_no = 0
  for line in io.lines(path) do
    if line_no % n == id then
      requests_[#requests_ + 1] = wrk.format(
        "POST", args[3], {["Host"] = "bench", ["Content-Type"] = "application/json"}, line)
    end
    line_no = line_no + 1
  end
  next_ = 0
  wrapped = 0
end

function request()
  next_ = next_ + 1
  if next_ > #requests_ then
    next_ = 1
    wrapped = 1
  end
  return requests_[next_]
end

function done(summary, latency, requests)
  local w = 0
  for _, thread in ipairs(threads) do
    w = w + thread:get("wrapped")
  end
  io.write(string.format("wrapped %d\n", w))
  io.write(string.format("p50_us %d\n", latency:percentile(50)))
end
