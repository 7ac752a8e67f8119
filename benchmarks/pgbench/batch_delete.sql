-- As batch_update.sql, but completion deletes the rows (no history).
INSERT INTO job (task) SELECT 'noop' FROM generate_series(1, 100);
UPDATE job SET state = 'running', owner = :client_id, started_at = now()
WHERE id IN (SELECT id FROM job WHERE state = 'queued' ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED);
DELETE FROM job WHERE owner = :client_id AND state = 'running';
