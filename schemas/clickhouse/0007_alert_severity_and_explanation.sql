-- 0007: an alert's severity level, 1 to 10, from its magnitude, the distinct people
-- complaining, the places rising and how long it has lasted (signals.alerts.severity_level);
-- the Grafana notification policy pages on-call from 7 and notifies the SAV channel below.
-- `authors`: the distinct people complaining in the incident (one account's flood is one).
-- Rows stored before this migration keep 0 for both (the rule then pages on `severity`).
ALTER TABLE dallosh.alerts ADD COLUMN IF NOT EXISTS severity_level UInt8 DEFAULT 0;
ALTER TABLE dallosh.alerts ADD COLUMN IF NOT EXISTS authors UInt32 DEFAULT 0;
-- And its explanation: the terms that distinguish the incident from the same key's day
-- before (weighted log-odds), and one sentence (where, complaints, people, ratio, terms,
-- start) that the pager and the wall show.
ALTER TABLE dallosh.alerts ADD COLUMN IF NOT EXISTS terms Array(String) DEFAULT [];
ALTER TABLE dallosh.alerts ADD COLUMN IF NOT EXISTS summary String DEFAULT '';
