"""`userlm serve`: the simulator as an OpenAI-compatible HTTP server (server.py), its
batching engine and its wire protocol."""
