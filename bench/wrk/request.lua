-- One request shape for every server under test (bench/run.py sets the environment):
-- BENCH_METHOD, BENCH_BODY (form-encoded), BENCH_AUTHORIZATION (the whole header value).
-- No response() callback: in wrk it runs Lua per response on the client's CPU, which on a
-- 2-core machine understated the faster server by 1.5–2.3× (issue 14).
local method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY") or ""
local authorization = os.getenv("BENCH_AUTHORIZATION") or ""

wrk.method = method
if body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end
if authorization ~= "" then
  wrk.headers["Authorization"] = authorization
end
