"""Integrations over jobqueue's core; the core never imports them."""
