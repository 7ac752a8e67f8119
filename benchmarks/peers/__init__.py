"""One workload script per system, each run inside that system's own virtualenv.

``python -m benchmarks.peers.<system> --dsn DSN --workload NAME ...`` prints one
line ``RESULT {json}``. Only ``_common`` (standard library) is shared; nothing
here may import another system's packages at module level.
"""
