-- wrk script for POST /v1/detect (scripts/bench-http):
--   wrk -t2 -c4 -d20s --latency -s deploy/wrk/detect.lua http://127.0.0.1:8080/v1/detect
-- Environment: WRK_IMAGE (default models/images/bus.jpg, relative to wrk's working directory), WRK_TOKEN (optional
-- bearer token). Counts every answer whose status is not 200 (wrk itself only counts statuses > 399) and ends with one
-- machine-readable line:
--   RESULT requests=N duration_s=S rps=R p50_ms=.. p90_ms=.. p99_ms=.. p999_ms=.. max_ms=.. non200=N errors=N

local image = os.getenv("WRK_IMAGE") or "models/images/bus.jpg"
local file = assert(io.open(image, "rb"), "cannot open " .. image)
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "image/jpeg"
local token = os.getenv("WRK_TOKEN")
if token and token ~= "" then wrk.headers["Authorization"] = "Bearer " .. token end

local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    non200 = 0           -- global: read back per thread in done()
    statuses = ""
end

function response(status, headers, body)
    if status ~= 200 then
        non200 = non200 + 1
        if non200 <= 5 then statuses = statuses .. " " .. status end
    end
end

function done(summary, latency, requests)
    local non200_total, examples = 0, ""
    for _, thread in ipairs(threads) do
        non200_total = non200_total + thread:get("non200")
        examples = examples .. thread:get("statuses")
    end
    local e = summary.errors
    local errors = e.connect + e.read + e.write + e.timeout
    local seconds = summary.duration / 1e6
    local function ms(p) return latency:percentile(p) / 1000 end
    if non200_total > 0 then io.write(string.format("non-200 statuses (first few):%s\n", examples)) end
    io.write(string.format(
        "RESULT requests=%d duration_s=%.3f rps=%.2f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f p999_ms=%.2f max_ms=%.2f " ..
        "non200=%d errors=%d\n",
        summary.requests, seconds, summary.requests / seconds, ms(50), ms(90), ms(99), ms(99.9), latency.max / 1000,
        non200_total, errors))
end
