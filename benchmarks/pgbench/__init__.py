"""Raw PostgreSQL limit of the job life cycle, measured with pgbench custom scripts."""
