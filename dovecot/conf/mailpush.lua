-- mailpush.lua: Dovecot 2.3 push_notification Lua driver for mailpush.
--
-- Dovecot's OX driver reports only new deliveries (MessageNew). This script
-- reports everything else that changes the INBOX unread count -- a message
-- read or marked unread (MessageRead, FlagsSet, FlagsClear), deleted
-- (MessageTrash, MessageExpunge) or moved/copied in (MessageAppend) -- so
-- that the badge on a phone follows what other clients do. It posts the OX
-- driver's JSON to the same mailpush endpoint, with the INBOX's current
-- UNSEEN count, once per mail transaction.
--
-- Like the OX driver it only reports users whose INBOX METADATA key
-- /private/vendor/vendor.dovecot/http-notify is set, and sends the value's
-- user=... part (or the login) as "user".
--
-- Settings (plugin section):
--   push_notification_driver2 = lua:file=/etc/dovecot/mailpush.lua
--   mailpush_url      = http://push.example.com/dovecot/notify
--   mailpush_username = dovecot
--   mailpush_password = secret
--
-- Needs Debian's dovecot-auth-lua (mail_lua and push_notification_lua
-- plugins, Lua 5.4) and nothing else: HTTP goes through Dovecot's own client.

local METADATA_KEY = "/private/vendor/vendor.dovecot/http-notify"

local client = nil

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = (a << 16) | ((b or 0) << 8) | (c or 0)
    local chars = math.min(#s - i + 1, 3) + 1
    for j = 1, 4 do
      if j <= chars then
        local k = (n >> (6 * (4 - j))) & 63
        out[#out + 1] = B64:sub(k + 1, k + 1)
      else
        out[#out + 1] = "="
      end
    end
  end
  return table.concat(out)
end

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

function dovecot_lua_notify_begin_txn(user)
  return {user = user, event = nil}
end

local function inbox_changed(ctx, event)
  if event.mailbox == "INBOX" then
    ctx.event = event.name
  end
end

-- New deliveries are the OX driver's: the handler must exist all the same,
-- because the Lua driver is called for every event that any driver asked for.
function dovecot_lua_notify_event_message_new(ctx, event)
end

dovecot_lua_notify_event_message_read = inbox_changed
dovecot_lua_notify_event_message_trash = inbox_changed
dovecot_lua_notify_event_message_expunge = inbox_changed
dovecot_lua_notify_event_message_append = inbox_changed
dovecot_lua_notify_event_flags_set = inbox_changed
dovecot_lua_notify_event_flags_clear = inbox_changed

function dovecot_lua_notify_end_txn(ctx, success)
  if ctx.event == nil or success == false then
    return
  end
  local user = ctx.user
  local box = user:mailbox("INBOX")
  local ok, err = pcall(function()
    local md = user:metadata_get(METADATA_KEY)
    if md == nil then
      return
    end
    local id = md:match("user=([^%s]+)") or user.username
    box:sync()
    local status = box:status(dovecot.storage.STATUS_UNSEEN)
    local body = '{"user":' .. json_string(id) .. ',"folder":"INBOX","event":' ..
      json_string(ctx.event) .. ',"unseen":' .. string.format("%d", status.unseen) .. '}'
    if client == nil then
      client = dovecot.http.client({request_timeout_msecs = 2000, max_attempts = 2})
    end
    local req = client:request({url = user:plugin_getenv("mailpush_url"), method = "PUT"})
    req:add_header("Content-Type", "application/json; charset=utf-8")
    req:add_header("Authorization", "Basic " ..
      base64(user:plugin_getenv("mailpush_username") .. ":" .. user:plugin_getenv("mailpush_password")))
    req:set_payload(body)
    local res = req:submit()
    if res:status() // 100 ~= 2 then
      dovecot.i_error("mailpush: " .. tostring(res:status()) .. " " .. tostring(res:reason()))
    end
  end)
  box:free()
  if not ok then
    dovecot.i_error("mailpush: " .. tostring(err))
  end
end
