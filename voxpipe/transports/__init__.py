"""Transports: how audio reaches a call (in memory, Twilio, browser)."""
