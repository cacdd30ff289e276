-- GET /v2/queues/Q/messages?limit=N&echo=true (the queue is seeded first).
-- wrk -s list.lua URL -- PROJECT CLIENT_ID QUEUE N
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

function init(args)
   local queue = common.headers(args)
   wrk.headers["Content-Type"] = nil
   wrk.method = "GET"
   wrk.path = "/v2/queues/" .. queue .. "/messages?limit=" .. (args[4] or "10") .. "&echo=true"
end
