"""Detector: model runners usable without Ray, and the thin Serve deployment around them."""
