-- POST /api/v1/auth/login as the seeded accounts in turn (args[1]: file of emails, args[2]: the password).
-- A 200 without an access token counts as bad.
local emails, password, i

function init(args)
  emails = readlines(args[1])
  password = args[2]
  i = (tid * 7919) % #emails   -- threads start far apart in the list
end

function request()
  i = i % #emails + 1
  local body = '{"email":"' .. emails[i] .. '","password":"' .. password .. '"}'
  return wrk.format("POST", "/api/v1/auth/login", { ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
  if status == 200 and not body:find('"access_token"', 1, true) then bad = bad + 1 end
end
