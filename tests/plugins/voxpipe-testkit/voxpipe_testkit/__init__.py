"""voxpipe-testkit: deterministic, in-process voxpipe providers for tests.

Registered through the ``voxpipe`` entry-point group (``testkit = "voxpipe_testkit.plugin"``), exactly as any
third-party provider package is. Nothing here talks to a network or loads a model:

- stt ``testkit_stt``: scripted transcripts, one per utterance (pipecat ``SegmentedSTTService``).
- llm ``testkit_llm``: scripted replies and tool calls (pipecat ``LLMService``).
- tts ``testkit_tts``: a sine tone whose length follows the text (pipecat ``TTSService``).
- realtime ``testkit_realtime``: energy VAD on the caller's audio, then transcript + scripted reply + tone.
- vad ``testkit_vad``: an energy VAD (pipecat ``VADAnalyzer``), so a test tone counts as speech.
"""

__version__ = "0.1.0"
