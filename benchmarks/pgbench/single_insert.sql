-- Enqueue alone, one job per transaction: the raw commit rate a single
-- enqueue is held against (run with as many clients as the enqueue threads).
INSERT INTO job DEFAULT VALUES;
