-- One job per transaction, three transactions per job: insert, claim, complete.
INSERT INTO job DEFAULT VALUES;
UPDATE job SET state = 'running', owner = :client_id, started_at = now()
WHERE id = (SELECT id FROM job WHERE state = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED);
UPDATE job SET state = 'done', finished_at = now() WHERE owner = :client_id AND state = 'running';
