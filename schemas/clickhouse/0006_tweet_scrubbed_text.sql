-- 0006: the PII-scrubbed text of each tweet (CleanTweet.text_scrubbed: phone numbers,
-- e-mails, customer numbers... replaced by placeholders), stored next to the original so
-- that whatever leaves the system (alert pages, e-mails, notification templates) can
-- quote tweets without quoting personal data. Rows stored before this migration keep ''
-- (the alert rules then show no example for them rather than the raw text).
ALTER TABLE dallosh.tweets ADD COLUMN IF NOT EXISTS text_scrubbed String DEFAULT '' AFTER text_clean;
