"""lipkit-example-plugin: the template a plugin author copies (see README.md)."""
