-- Refresh chains: run with as many threads as connections (-t N -c N), so each thread owns one connection and
-- one chain. Thread k starts from line k of args[1] and always presents the refresh token its previous
-- response returned (wrk calls response() before it builds the connection's next request). A failed
-- rotation counts as bad and the chain goes on with the token it had.
local token

function init(args)
  local tokens = readlines(args[1])
  token = tokens[tid]
  if token == nil then error("refresh.lua: fewer tokens than threads") end
end

function request()
  return wrk.format("POST", "/api/v1/auth/refresh", { ["Content-Type"] = "application/json" },
                    '{"refresh_token":"' .. token .. '"}')
end

function response(status, headers, body)
  if status ~= 200 then return end   -- counted by wrk (summary.errors.status)
  local child = body:match('"refresh_token"%s*:%s*"([^"]+)"')
  if child then token = child else bad = bad + 1 end
end
