"""Twilio's telephony protocols as plain code: no pipecat, no web framework, no pydantic (stdlib only).

- ``media_streams``: the Media Streams events (``connected``, ``start``, ``media``, ``mark``, ``dtmf``,
  ``stop`` in; ``media``, ``mark``, ``clear`` out) and the state machine of one stream, driven through a send
  callback, with playout marks (what the caller has heard).
- ``keypad`` and ``keypad_entry``: keypad digits grouped into one entry (a pause or ``#`` ends it), and the
  message that tells the agent about it.
- ``conversation_relay``: ConversationRelay messages, partial prompts, and the ``end`` handoff rules.
- ``twiml``: TwiML documents built from plain values (``<Connect><Stream>``, ``<ConversationRelay>``, ``<Say>``,
  ``<Dial>``, ``<Hangup>``).
- ``recording_status``: Twilio's recording status callback (which recording of which call, and its file).
- ``json_messages``: the one place a JSON text message is parsed, and rejected (logged and skipped) if malformed.

The server's transports (``voxpipe.transports``), the Lambda handlers and the audio bridge
(``voxpipe.serverless``) are adapters over these modules, so each protocol behaviour has one implementation.

Where later behaviour belongs: ending a call with an outcome (say a message, then hang up or transfer) is
``twiml.end_call`` for a media stream (sent by ``TwilioAccount.carry_out``) and ``conversation_relay.handoff``
for ConversationRelay; a per-call signed ``<Parameter>`` is written by ``twiml.stream_call`` and checked where
``start`` (``MediaStream``'s ``parse`` and ``StreamHandler.started``, which refuse with ``Malformed``) and
``setup`` (``conversation_relay.Setup.custom_parameters``) arrive; timers on the caller's silence belong to the
stream's handler (``transports.media_stream_call.MediaStreamCall``), which is also the one place the bot's
audio leaves for the caller (``send_audio``) and the caller's arrives (``audio``), for recordings.
"""
