-- The smallest honest job table: a waiting job is found through a partial index,
-- a running one through its owner; finished rows stay (the "update" scripts) or
-- go (the "delete" scripts).
CREATE TABLE job (
    id          bigserial PRIMARY KEY,
    state       text NOT NULL DEFAULT 'queued',
    task        text NOT NULL DEFAULT 'noop',
    args        jsonb NOT NULL DEFAULT '[]',
    owner       integer,
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz
);
CREATE INDEX job_queued_idx ON job (id) WHERE state = 'queued';
CREATE INDEX job_running_idx ON job (owner) WHERE state = 'running';
