"""Twilio's recording of a ConversationRelay call, linked to the call's record.

Twilio speaks a relay call, so voxpipe has no audio of it. With ``recording.enabled`` the relay TwiML asks
Twilio to record the call (``<Start><Recording channels="dual" recordingStatusCallback=".../recording-status"
recordingStatusCallbackEvent="completed"/>``), and once the file is ready Twilio posts ``POST
/{name}/recording-status`` (signed like every webhook) with ``CallSid``, ``RecordingSid``, ``RecordingUrl``,
``RecordingStatus`` (``completed``; ``absent``: too short or silent, no file), ``RecordingDuration``,
``RecordingChannels``, ``RecordingSource`` (``StartCallRecordingTwiML``) and ``ErrorCode``.

The call's record is keyed by the relay's session id, which the callback does not carry, and it is saved when
the session ends, which may be before or after the callback. So each side notes its half under the CallSid in
the record store (``RecordStore.link_recording``), and whichever comes second puts the URL on the record (a
later save of the record keeps it): a shared store (SQLite for ``--workers``, PostgreSQL for a fleet) matches
them whichever process got which.
Only the URL is kept, never credentials: fetching the audio needs the Twilio account's (docs/records.md).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from loguru import logger

from voxpipe.pipeline.host import CallHost
from voxpipe.records.store import RecordStoreError
from voxpipe.telephony.recording_status import RecordingStatus
from voxpipe.transports.twilio_account import RECORDING_STATUS_PATH as PATH
from voxpipe.transports.twilio_account import TwilioAccount


def add_routes(router: APIRouter, host: CallHost, twilio: TwilioAccount) -> None:
    """``POST /recording-status``: Twilio's recording status callback."""

    @router.post(f"/{PATH}")
    async def recording_status(request: Request) -> Response:
        form = await twilio.signed_form(request, PATH)
        if form is None:
            return Response(status_code=403)
        try:
            await recording_ready(host, form)
        except RecordStoreError as exc:
            logger.error(f"[{host.deployment.name}] Twilio's recording of {form.get('CallSid')} not linked: {exc}")
            return Response(status_code=503)
        return Response(status_code=204)


async def recording_ready(host: CallHost, form: dict[str, str]) -> None:
    """Note the URL of a completed recording for its call's record (other statuses have no file: logged)."""
    name, recording = host.deployment.name, RecordingStatus.of(form)
    if not recording.linkable:
        logger.warning(f"[{name}] {recording.why_not_linked()}")
        return
    call_sid, sid = recording.call_sid, recording.recording_sid
    records = host.bookkeeping.records
    if records is None:
        logger.info(f"[{name}] Twilio recorded call {call_sid} ({sid}); no record store keeps it")
        return
    linked = await asyncio.to_thread(records.link_recording, call_sid, recording=recording.url)
    if linked is None:
        logger.info(
            f"[{name}] Twilio's recording {sid} of call {call_sid} ({recording.duration}s) waits for the call's record"
        )
    else:
        logger.info(f"[{name}] call {linked}: Twilio's recording {sid} ({recording.duration}s) linked to its record")


async def record_saved(host: CallHost, call_sid: str, call_id: str) -> None:
    """A recorded relay call's record ``call_id`` is saved (or, if its session was slow to stop, is about to
    be): note it, so Twilio's recording, come or to come, is put on it."""
    records = host.bookkeeping.records
    if records is None or not host.deployment.recording.enabled or not call_sid:
        return
    try:
        linked = await asyncio.to_thread(records.link_recording, call_sid, call_id=call_id)
    except RecordStoreError as exc:
        logger.error(f"[{host.deployment.name}] call {call_id}: Twilio's recording cannot be linked: {exc}")
        return
    if linked is not None:
        logger.info(f"[{host.deployment.name}] call {call_id}: Twilio's recording linked to its record")
