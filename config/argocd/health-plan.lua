-- Argo CD health for drover.io/DisasterRecoveryPlan, from conditions and lastFailover.
-- Valid=False or Ready=False: Degraded, except while standbys are re-protected
-- (Ready=False, reason Reprotecting): Progressing. Status not yet written for this
-- generation, or a failover running: Progressing; one awaiting approval: Suspended.
-- Ready=True: Healthy.
local hs = {}
-- Conditions by type (each Argo CD health script is a standalone chunk).
local conditions = {}
for _, c in ipairs((obj.status or {}).conditions or {}) do
  conditions[c.type] = c
end

local generation = obj.metadata.generation
if obj.status == nil or obj.status.observedGeneration == nil
    or (generation ~= nil and obj.status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the Drover operator to check this plan"
  return hs
end

local valid = conditions["Valid"]
local ready = conditions["Ready"]
local last = obj.status.lastFailover
if valid ~= nil and valid.status == "False" then
  hs.status = "Degraded"
  hs.message = "Invalid: " .. (valid.message or "")
elseif last ~= nil and (last.phase == "Running" or last.phase == "Pending") then
  hs.status = "Progressing"
  hs.message = "Failing over to " .. last.targetRegion .. " (" .. last.name .. ")"
elseif last ~= nil and last.phase == "AwaitingApproval" then
  hs.status = "Suspended"
  hs.message = "Failover " .. last.name .. " to " .. last.targetRegion .. " awaits approval"
elseif ready ~= nil and ready.status == "False" and ready.reason == "Reprotecting" then
  hs.status = "Progressing"
  hs.message = "Re-protecting standbys: " .. (ready.message or "")
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = "Active region " .. (obj.status.activeRegion or "?")
elseif ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = "Not ready: " .. (ready.message or "")
else
  hs.status = "Progressing"
  hs.message = "Waiting for the region checks"
end
return hs
