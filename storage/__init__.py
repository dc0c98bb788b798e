"""S3 storage over the minio SDK: clips, sidecars, upload spool. Knows nothing of Ray."""
