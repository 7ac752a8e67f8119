-- 100 jobs per transaction: insert 100, claim 100, complete them.
INSERT INTO job (task) SELECT 'noop' FROM generate_series(1, 100);
UPDATE job SET state = 'running', owner = :client_id, started_at = now()
WHERE id IN (SELECT id FROM job WHERE state = 'queued' ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED);
UPDATE job SET state = 'done', finished_at = now() WHERE owner = :client_id AND state = 'running';
