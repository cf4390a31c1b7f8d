"""Deliberately faulty voxpipe plugins for the registry tests (never installed; see README.md)."""
