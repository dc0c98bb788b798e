"""Configuration data and the pydantic schemas that validate it (lowest layer: imports nothing of ours)."""
