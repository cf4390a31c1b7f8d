"""Per-call pipelines: ``builder`` turns a Deployment into a pipecat pipeline; ``tools`` wires agent tools."""
