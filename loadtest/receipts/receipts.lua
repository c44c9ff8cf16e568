-- wrk script for the maximum receipt ingestion rate: the same JPush callbacks as receipts.js
-- (BATCH items per request, each naming a random one of USERS registration ids
-- `<PREFIX><i, 9 digits>` of message MSGID, 80% "received" and 20% "clicked"), from a client
-- that costs far less CPU than k6, so the hub, not the load generator, is what is measured.
-- Runs closed loop on wrk's connections; every response's `applied + duplicate` is summed and
-- printed, so the runner can check that every receipt named a delivery.
--
--   RECEIPT_BASIC=$(printf %s "$APP_KEY:$MASTER_SECRET" | base64 -w0) MSGID=... USERS=100000 \
--   wrk -t2 -c32 -d10s -s loadtest/receipts/receipts.lua http://127.0.0.1:8080/receipts/2/<token>
local basic = os.getenv("RECEIPT_BASIC") or ""
local msgid = os.getenv("MSGID") or "0"
local users = tonumber(os.getenv("USERS") or "1000")
local batch = tonumber(os.getenv("BATCH") or "100")
local prefix = os.getenv("PREFIX") or "rblast"

local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() * 1000 + id)
  counted = 0
  bad = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Basic " .. basic
end

function request()
  local now = os.time()
  local items = {}
  for k = 1, batch do
    local i = math.random(0, users - 1)
    local kind = (math.random() < 0.8) and 1 or 2
    items[k] = string.format(
      '{"msg_id":"1","registration_id":"%s%09d","platform":"android","type":%d,"time":%d,"params":{"msgid":"%s"}}',
      prefix, i, kind, now, msgid)
  end
  return wrk.format(nil, nil, nil, "[" .. table.concat(items, ",") .. "]")
end

function response(status, headers, body)
  if status ~= 200 then
    bad = bad + 1
    return
  end
  local applied = tonumber(string.match(body, '"applied"%s*:%s*(%d+)')) or 0
  local duplicate = tonumber(string.match(body, '"duplicate"%s*:%s*(%d+)')) or 0
  counted = counted + applied + duplicate
end

function done(summary, latency, requests)
  local total, failed = 0, 0
  for _, t in ipairs(threads) do
    total = total + t:get("counted")
    failed = failed + t:get("bad")
  end
  io.write(string.format("non-200 responses: %d\n", failed))
  io.write(string.format("receipts answered: %d\n", total))
  io.write(string.format("receipts requested: %d\n", summary.requests * batch))
  io.write(string.format("latency p99 us: %d\n", latency:percentile(99)))
end
