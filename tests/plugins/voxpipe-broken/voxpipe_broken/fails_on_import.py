"""A plugin module that cannot be imported: discovery must report it and carry on."""

raise RuntimeError("voxpipe-broken fails on import on purpose")
