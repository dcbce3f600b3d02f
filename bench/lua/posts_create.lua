-- POST /api/v1/posts as one authenticated user (wrk ... URL -- ACCESS_TOKEN).
function init(args)
  if not args[1] or args[1] == "" then
    error("posts_create.lua needs the access token: wrk ... URL -- TOKEN")
  end
  wrk.method = "POST"
  wrk.path = "/api/v1/posts"
  wrk.headers["Authorization"] = "Bearer " .. args[1]
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = '{"title":"bench post","body":"Written by bench/services.py to measure POST /api/v1/posts."}'
end
