-- POST /api/v1/auth/introspect as a service client (HTTP Basic, args[2] = base64 "id:secret") about the
-- access tokens in the file args[1], in turn, with token_type_hint=access_token as resource servers send it.
-- Every token is live, so an answer without "active": true counts as bad.
local tokens, basic, i

function init(args)
  tokens = readlines(args[1])
  basic = "Basic " .. args[2]
  i = tid
end

function request()
  i = i % #tokens + 1
  return wrk.format("POST", "/api/v1/auth/introspect",
                    { ["Content-Type"] = "application/x-www-form-urlencoded", ["Authorization"] = basic },
                    "token=" .. tokens[i] .. "&token_type_hint=access_token")
end

function response(status, headers, body)
  if status == 200 and not body:find('"active":%s*true') then bad = bad + 1 end
end
