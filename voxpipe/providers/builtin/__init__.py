"""Built-in provider plugins, written exactly as third-party plugins are."""
