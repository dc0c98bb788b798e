"""Throughput and capacity: ingest, RTSP receive, inference, end to end, the control API."""
