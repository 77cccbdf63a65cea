-- 0005: every alert belongs to one timeline (a replay's run id, or `live`), so replaying
-- dump B never changes dump A's alerts and a report shows one run's alerts; and it lists
-- every detector of its incident (the heading of a report, the pager's title).
ALTER TABLE dallosh.alerts ADD COLUMN IF NOT EXISTS run_id String DEFAULT '';
ALTER TABLE dallosh.alerts ADD COLUMN IF NOT EXISTS detectors Array(String) DEFAULT [];
