"""JWT-authenticating reverse proxy in front of the Inference API."""
