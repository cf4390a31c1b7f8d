"""voxpipe: phone and browser voice agents from YAML, built on pipecat.

Data flows one way: YAML -> ``config.Deployment`` -> ``pipeline`` (one per call) -> ``CallRecord``.
"""

__version__ = "0.1.0"
