"""voxpipe-echo: an example LLM provider plugin, written from docs/plugins.md alone."""
