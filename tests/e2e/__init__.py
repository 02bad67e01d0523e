"""Real-server tests: the promises of fastapi-hangup checked over loopback sockets."""
