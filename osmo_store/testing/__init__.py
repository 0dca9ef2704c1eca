"""Test and demo helpers shipped with the library: the store contract suite and a mock
OpenAI-compatible model server."""
