"""Tool kinds the agent can call: ``http``, ``python``, and the call-control tools ``end_call`` / ``transfer``.

Each kind is a ``ToolKind`` plugin delivered through the same hook as providers, so third parties can add
their own. The pipeline turns a deployment's ``agent.tools`` into function handlers (``pipeline.tools``).
"""
