-- As single_update.sql, but completion deletes the row (no history).
INSERT INTO job DEFAULT VALUES;
UPDATE job SET state = 'running', owner = :client_id, started_at = now()
WHERE id = (SELECT id FROM job WHERE state = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED);
DELETE FROM job WHERE owner = :client_id AND state = 'running';
