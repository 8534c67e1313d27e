-- wrk script for benches/ingress.rs: posts pre-signed Stripe events, round robin, each thread
-- from its own starting point. The events and their `Stripe-Signature` headers were made before
-- the run (signed by openssl, not by settle), one per line: the header, a tab, the JSON body.
--
--   wrk -t2 -c64 -d10s --latency -s post_signed.lua http://127.0.0.1:PORT -- events.tsv

local requests = {}
local next_index = 1

function init(args)
  for line in io.lines(args[1]) do
    local signature, body = line:match("^([^\t]+)\t(.*)$")
    requests[#requests + 1] = wrk.format("POST", "/webhooks/stripe", {
      ["Content-Type"] = "application/json",
      ["Stripe-Signature"] = signature,
    }, body)
  end
  next_index = math.random(#requests)
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end
