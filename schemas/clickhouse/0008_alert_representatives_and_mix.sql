-- 0008: the rest of an alert's explanation (signals.alerts.explain). The tweets that
-- stand for the incident's main cluster (signals.alerts.representatives): their ids and
-- their SCRUBBED text (text_scrubbed: PII replaced by placeholders; the raw text never
-- reaches an alert, a page or the wall), the most central first.
ALTER TABLE dallosh.alerts ADD COLUMN IF NOT EXISTS representative_ids Array(String) DEFAULT [];
ALTER TABLE dallosh.alerts ADD COLUMN IF NOT EXISTS representative_texts Array(String) DEFAULT [];
-- And the mix of the incident's tweets: tweets per topic (the four largest, the rest as
-- `other`) and per sentiment. Rows stored before this migration keep empty maps.
ALTER TABLE dallosh.alerts ADD COLUMN IF NOT EXISTS topic_mix Map(String, UInt32) DEFAULT map();
ALTER TABLE dallosh.alerts ADD COLUMN IF NOT EXISTS sentiment_mix Map(String, UInt32) DEFAULT map();
