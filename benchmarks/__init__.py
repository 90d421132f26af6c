"""Benchmarks that print figures; nothing here asserts on timing."""
