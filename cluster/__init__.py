"""Control plane: camera assignment, runtime start/stop, command line."""
