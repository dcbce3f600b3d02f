-- GET /api/v1/users/{id} with a uniformly random id in [first, last] (wrk ... URL -- first last).
local first, last = 1, 1

function init(args)
  first = tonumber(args[1]) or 1
  last = tonumber(args[2]) or first
  math.randomseed(os.time())
end

function request()
  return wrk.format("GET", "/api/v1/users/" .. math.random(first, last))
end
