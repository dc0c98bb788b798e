"""Control API for the control centre: FastAPI ingress under Ray Serve."""
