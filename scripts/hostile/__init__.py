"""The attacks of scripts/hostile_check.py: the stack, the requests, one module per section."""
