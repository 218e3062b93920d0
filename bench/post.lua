-- wrk script for `python -m bench`: POST one AdmissionReview file, check every answer.
-- Usage: wrk ... -s post.lua URL -- BODY_FILE
-- Every response must be HTTP 200 and contain "allowed":true and a "patch"; the count of
-- responses that are not is printed by done(), with the latency percentiles, as one line
-- starting with BENCH_RESULT that the Python side parses.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local path = args[1]
  if path == nil then
    error("post.lua: give the body file after --")
  end
  local file = assert(io.open(path, "rb"))
  wrk.method = "POST"
  wrk.body = file:read("*a")
  file:close()
  wrk.headers["Content-Type"] = "application/json"
  checked = 0
  bad = 0
  first_bad = ""
end

function response(status, headers, body)
  checked = checked + 1
  if status ~= 200
    or not string.find(body, '"allowed":true', 1, true)
    or not string.find(body, '"patch":"', 1, true) then
    bad = bad + 1
    if first_bad == "" then
      first_bad = status .. " " .. string.sub(body, 1, 200)
    end
  end
end

local function json_string(text)
  return '"' .. string.gsub(text, '[%c"\\]', function(c)
    return string.format("\\u%04x", string.byte(c))
  end) .. '"'
end

function done(summary, latency, requests)
  local checked_total, bad_total, first = 0, 0, ""
  for _, thread in ipairs(threads) do
    checked_total = checked_total + thread:get("checked")
    bad_total = bad_total + thread:get("bad")
    if first == "" then
      first = thread:get("first_bad")
    end
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d},'
      .. '"checked":%d,"bad":%d,"first_bad":%s}\n',
    summary.requests, summary.duration, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max,
    checked_total, bad_total, json_string(first)))
end
