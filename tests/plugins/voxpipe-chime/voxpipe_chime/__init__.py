"""voxpipe-chime: an example TTS provider plugin, written from docs/plugins.md alone."""
