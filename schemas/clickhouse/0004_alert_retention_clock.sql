-- 0004: alerts expire by when they were stored, not by their event time. An alert's
-- window and updated_at are event time (replays of old dumps raise the same alerts,
-- dated in the dump's past), so a TTL on updated_at deleted a replayed dump's alerts on
-- insert. The retention step (stream_app/storage/retention.py) puts the TTL on this column.
ALTER TABLE dallosh.alerts ADD COLUMN IF NOT EXISTS stored_at DateTime64(3, 'UTC') DEFAULT now64(3);
