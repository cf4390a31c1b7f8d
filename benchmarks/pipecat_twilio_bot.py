"""A plain pipecat-ai Twilio bot, the baseline of benchmarks/capacity.py.

Written the way pipecat's own Twilio example (``examples/twilio-chatbot``) is: a FastAPI app whose
WebSocket endpoint reads Twilio's ``connected``/``start`` messages with ``parse_telephony_websocket``,
builds a ``TwilioFrameSerializer`` and a ``FastAPIWebsocketTransport`` for the call, a ``SileroVADAnalyzer``
in the user aggregator, and runs ``transport.input() -> STT -> user aggregator -> LLM -> TTS ->
transport.output() -> assistant aggregator`` on a ``WorkerRunner`` of its own, with pipecat's defaults
elsewhere. Only the services differ from the example: the same deterministic in-process STT, LLM and TTS
that voxpipe is measured with (the voxpipe-testkit plugin's pipecat services), so that both servers do
the same work per call. Auto hang-up is off: there is no Twilio account to call.

    python benchmarks/pipecat_twilio_bot.py --port 8765 --settings '{"reply": "...", ...}'
"""

from __future__ import annotations

import argparse
import json
import sys

import uvicorn
from fastapi import FastAPI, WebSocket
from loguru import logger
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair, LLMUserAggregatorParams
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.workers.runner import WorkerRunner
from voxpipe_testkit.plugin import ScriptedLLMOptions, ScriptedSTTOptions, ToneTTSOptions
from voxpipe_testkit.services import ScriptedLLMService, ScriptedSTTService, ToneTTSService

app = FastAPI()
SETTINGS: dict = {}


async def run_bot(transport: FastAPIWebsocketTransport) -> None:
    stt = ScriptedSTTService(options=ScriptedSTTOptions())
    llm = ScriptedLLMService(options=ScriptedLLMOptions(default_reply=SETTINGS["reply"]), system_instruction="Help.")
    tts = ToneTTSService(options=ToneTTSOptions())
    context = LLMContext()
    vad = SileroVADAnalyzer(params=VADParams(**SETTINGS["vad"]))
    stop = [SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=SETTINGS["turn_timeout_secs"])]
    user_params = LLMUserAggregatorParams(vad_analyzer=vad, user_turn_strategies=UserTurnStrategies(stop=stop))
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(context, user_params=user_params)
    pipeline = Pipeline([transport.input(), stt, user_aggregator, llm, tts, transport.output(), assistant_aggregator])
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(
            audio_in_sample_rate=8000, audio_out_sample_rate=8000, enable_metrics=True, enable_usage_metrics=True
        ),
    )

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport: FastAPIWebsocketTransport, client: object) -> None:
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


@app.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    _, call_data = await parse_telephony_websocket(websocket)
    serializer = TwilioFrameSerializer(
        stream_sid=call_data["stream_id"],
        call_sid=call_data["call_id"],
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
    )
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True, audio_out_enabled=True, add_wav_header=False, serializer=serializer
        ),
    )
    await run_bot(transport)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--settings", required=True, help="JSON: reply, vad (VADParams), turn_timeout_secs")
    args = parser.parse_args()
    SETTINGS.update(json.loads(args.settings))
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
