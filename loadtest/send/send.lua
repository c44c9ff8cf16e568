-- wrk script for the maximum accepted rate of durable single-user sends.
--   MSGHUB_BASIC=$(printf %s "$KEY:$SECRET" | base64 -w0) wrk -t2 -c64 -d10s -s loadtest/send/send.lua http://127.0.0.1:8080
-- MSGHUB_BASIC is base64("key:secret"), e.g. $(printf %s "$KEY:$SECRET" | base64 -w0)
local basic = os.getenv("MSGHUB_BASIC") or ""
local userid = os.getenv("MSGHUB_USERID") or "demo-user-1"

wrk.method = "POST"
wrk.path = "/v1/sent"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Basic " .. basic
wrk.body = '{"aud_userid":["' .. userid .. '"],"msg_app":[{"platform":"all","notification":{"alert":"code 123456"}}]}'

function done(summary, latency, requests)
  io.write(string.format("non-200 responses: %d\n", summary.errors.status))
end
