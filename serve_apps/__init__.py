"""Ray Serve applications: the detector and the control API."""
