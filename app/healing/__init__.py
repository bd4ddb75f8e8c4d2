"""Healing: the healer and its actions, the auto-heal middleware, the watchdog and its health
checks."""
