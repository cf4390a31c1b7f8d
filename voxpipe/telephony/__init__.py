"""Twilio's telephony protocols as plain code: no pipecat, no web framework, no pydantic (stdlib only).

- ``media_streams``: the Media Streams events (``connected``, ``start``, ``media``, ``mark``, ``dtmf``,
  ``stop`` in; ``media``, ``mark``, ``clear`` out) and the state machine of one stream, driven through a send
  callback, with playout marks (what the caller has heard).
- ``keypad``: keypad digits grouped into one entry (a pause or ``#`` ends it), and the message that tells the
  agent about it.
- ``conversation_relay``: ConversationRelay messages, partial prompts, and the ``end`` handoff rules.
- ``twiml``: TwiML documents built from plain values (``<Connect><Stream>``, ``<ConversationRelay>``, ``<Say>``,
  ``<Dial>``, ``<Hangup>``).
- ``json_messages``: the one place a JSON text message is parsed, and rejected (logged and skipped) if malformed.

The server's transports (``voxpipe.transports``), the Lambda handlers and the audio bridge
(``voxpipe.serverless``) are adapters over these modules, so each protocol behaviour has one implementation.
"""
