-- mailpush ActiveSync gate for HAProxy 2.6 and later (gate.proxy: haproxy):
-- an auth request made with HAProxy's built-in core.httpclient, no library.
--
--   http-request lua.mailpush_gate http://MAILPUSH/gate/auth
--   http-request deny deny_status 403 unless { var(txn.mailpush_allow) -m bool }
--
-- The request to the gate is built from scratch: X-Original-URI and
-- X-Original-Method are what HAProxy received, X-Forwarded-For is the
-- client's own lines followed by the address HAProxy saw (the gate believes
-- the rightmost address that is not a trusted proxy), and only
-- Authorization, User-Agent and MS-ASProtocolVersion are copied, every line
-- of them (the gate refuses repeated ones). No other client header reaches
-- the gate. Any failure to ask leaves txn.mailpush_allow unset: denied.

local function lines(headers, name)
  local out, vs = {}, headers[name]
  if vs == nil then
    return out
  end
  local i = 0
  while vs[i] ~= nil do -- req_get_headers numbers a header's lines from 0
    out[#out + 1] = vs[i]
    i = i + 1
  end
  return out
end

core.register_action("mailpush_gate", { "http-req" }, function(txn, url)
  local h = txn.http:req_get_headers()
  local ask = {
    ["X-Original-URI"] = { txn.f:url() },
    ["X-Original-Method"] = { txn.f:method() },
  }
  local xff = lines(h, "x-forwarded-for")
  xff[#xff + 1] = txn.f:src()
  ask["X-Forwarded-For"] = xff
  for name, as in pairs({ ["authorization"] = "Authorization", ["user-agent"] = "User-Agent",
                          ["ms-asprotocolversion"] = "MS-ASProtocolVersion" }) do
    local v = lines(h, name)
    if #v > 0 then
      ask[as] = v
    end
  end
  local ok, res = pcall(function()
    return core.httpclient():get({ url = url, headers = ask, timeout = 5000 })
  end)
  txn:set_var("txn.mailpush_allow", ok and res ~= nil and res.status == 200)
end, 1)
