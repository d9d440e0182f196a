"""The HTTP face of mudgate: the FastAPI app and its thin real-time transports."""
