"""The parts of scripts/soak.py: the stack it starts (stack), the clients that drive it
(calls, answers, clients), the faults it injects (chaos), what it watches while it runs (watch)
and the checks and table at the end (report)."""
