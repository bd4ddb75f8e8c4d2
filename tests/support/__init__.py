"""Helpers the tests share: real processes on real ports."""
