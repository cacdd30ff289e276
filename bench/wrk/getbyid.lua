-- GET /v2/queues/Q/messages/ID, cycling through the ids of a seeded queue.
-- wrk -s getbyid.lua URL -- PROJECT CLIENT_ID QUEUE ID,ID,...
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

local requests = {}
local next_request = 0

function init(args)
   local queue = common.headers(args)
   wrk.headers["Content-Type"] = nil
   for id in string.gmatch(args[4], "[^,]+") do
      requests[#requests + 1] = wrk.format("GET", "/v2/queues/" .. queue .. "/messages/" .. id)
   end
end

function request()
   next_request = next_request % #requests + 1
   return requests[next_request]
end
