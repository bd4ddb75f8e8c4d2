"""Metrics, JSON log lines, healing events and per-request bookkeeping."""
