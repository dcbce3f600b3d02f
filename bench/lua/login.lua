-- POST /api/v1/auth/login as a random seeded user (wrk ... URL -- first last password).
-- Seeded users are user<id>@bench.example, all with the same password.
local first, last, password = 1, 1, ""

function init(args)
  first = tonumber(args[1]) or 1
  last = tonumber(args[2]) or first
  password = args[3] or ""
  math.randomseed(os.time())
end

function request()
  local body = string.format('{"email":"user%d@bench.example","password":"%s"}', math.random(first, last), password)
  return wrk.format("POST", "/api/v1/auth/login", {["Content-Type"] = "application/json"}, body)
end
