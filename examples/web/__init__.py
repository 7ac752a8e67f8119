"""Web framework recipes (docs/web-frameworks.md), each run by a test
(tests/integration/test_web_recipes.py)."""
