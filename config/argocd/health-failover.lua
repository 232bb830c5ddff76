-- Argo CD health for drover.io/Failover, from status.phase and conditions.
-- Succeeded: Healthy. Pending/Running: Progressing (Degraded while the steps after
-- promotion keep failing). RolledBack: Suspended (nothing changed; waiting for a person).
-- AwaitingApproval: Suspended (nothing changed yet; waiting for `drover approve`).
-- Failed/Rejected: Degraded.
local hs = {}
local function condition(type_)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == type_ then
        return c
      end
    end
  end
  return nil
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Drover operator to pick up this failover"
  return hs
end

local phase = obj.status.phase
local step = obj.status.currentStep or "?"
local progressing = condition("Progressing")
local detail = ""
if progressing ~= nil and progressing.message ~= nil and progressing.message ~= "" then
  detail = ": " .. progressing.message
end

if phase == "Succeeded" then
  hs.status = "Healthy"
  local rto = ""
  if obj.status.timings ~= nil and obj.status.timings.totalSeconds ~= nil then
    rto = string.format(" in %.1fs", obj.status.timings.totalSeconds)
  end
  hs.message = "Succeeded" .. rto .. ": " .. obj.spec.targetRegion .. " is active"
elseif phase == "Pending" then
  hs.status = "Progressing"
  hs.message = "Pending"
elseif phase == "Running" then
  if progressing ~= nil and progressing.status == "False" then
    hs.status = "Degraded"
    hs.message = "Running, step " .. step .. " is retrying" .. detail
  else
    hs.status = "Progressing"
    hs.message = "Running step " .. step
  end
elseif phase == "AwaitingApproval" then
  hs.status = "Suspended"
  local why = ""
  if obj.status.approval ~= nil and obj.status.approval.reason ~= nil then
    why = " (" .. obj.status.approval.reason .. ")"
  end
  hs.message = "Awaiting approval" .. why .. "; nothing has changed yet. Approve with: drover approve "
    .. obj.metadata.name .. " -n " .. (obj.metadata.namespace or "default")
elseif phase == "RolledBack" then
  hs.status = "Suspended"
  hs.message = "Rolled back before promotion; the source region is still active" .. detail
elseif phase == "Failed" or phase == "Rejected" then
  hs.status = "Degraded"
  hs.message = phase .. " at step " .. step .. detail
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
