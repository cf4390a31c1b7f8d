"""``voxpipe serve``: the web app (``app.create_app``) hosting several deployments, and its uvicorn runner (``serve``).

Calls themselves are hosted by ``voxpipe.pipeline.host`` and carried by ``voxpipe.transports``; this package
only routes HTTP and WebSocket requests to them. Nothing imports it but the CLI (and whoever embeds the app).
The serverless designs (Lambda, API Gateway, SQS) are ``voxpipe.serverless``, which never imports a web framework.
"""
