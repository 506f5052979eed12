"""The decode-backend process: its entry point and loop (process), and the engine it serves,
built on the real model or on the mock (build).

The loop takes Submit, Cancel and Shutdown messages between steps, runs one engine step, and
puts the new Outputs and a heartbeat on the output queue; the process exits with its parent.
It may import engine, model, mock and the leaves; the model is imported only when it is
used, so the mock backend never loads torch.
"""
