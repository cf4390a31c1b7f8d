"""Pure building blocks the routes and handlers use to refuse what they must: limits and signed tokens.

Standard library only, so the Lambda handlers can import them without paying for pydantic or pipecat.
"""
