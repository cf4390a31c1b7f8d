"""Simulated callers, offline A/B runs and their reports."""
