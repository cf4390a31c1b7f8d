"""``voxpipe serve``: one ASGI app hosting several deployments (Twilio Media Streams, ConversationRelay, browser).

The app factory is ``voxpipe.server.app.create_app``. This package imports nothing itself, so transports can
use ``voxpipe.server.signatures`` without pulling in the app (and the app in turn imports the transports).
"""
