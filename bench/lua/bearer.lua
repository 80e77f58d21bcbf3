-- GET args[2] with `Authorization: Bearer` tokens from the file args[1], one after another (several users).
-- Non-2xx answers are counted by wrk itself (summary.errors.status).
local tokens, path, i

function init(args)
  tokens = readlines(args[1])
  path = args[2]
  i = tid
end

function request()
  i = i % #tokens + 1
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. tokens[i] })
end
