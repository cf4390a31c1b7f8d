"""``voxpipe serve``: one ASGI app hosting several deployments (Twilio Media Streams, ConversationRelay, browser)."""

from voxpipe.server.app import create_app

__all__ = ["create_app"]
