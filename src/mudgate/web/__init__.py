"""The HTTP face of mudgate: the FastAPI app, the raw ASGI real-time endpoints in front of it,
monitoring, admin and the pages."""
