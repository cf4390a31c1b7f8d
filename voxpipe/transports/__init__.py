"""Transports: how a call's audio (or text) reaches its pipeline.

- ``memory``: a simulated caller (``voxpipe call``, ``voxpipe bench``, tests).
- ``media_transport`` + ``media_stream_call``: a media stream (Twilio or the browser page, over the server's
  WebSocket or the serverless bridge), adapting ``voxpipe.telephony.media_streams`` to pipecat.
- ``twilio_media``, ``conversation_relay``, ``browser``: the server's routes for each; ``twilio_account`` and
  ``twilio_signatures``: signed Twilio requests and the REST API; ``json_socket``: JSON over a WebSocket.
"""
