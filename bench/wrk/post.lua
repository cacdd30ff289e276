-- POST /v2/queues/Q/messages with N messages per request.
-- wrk -s post.lua URL -- PROJECT CLIENT_ID QUEUE N
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

function init(args)
   local queue = common.headers(args)
   wrk.method = "POST"
   wrk.path = "/v2/queues/" .. queue .. "/messages"
   wrk.body = common.messages(tonumber(args[4] or "1"))
end
