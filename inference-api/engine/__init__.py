"""Continuous batching over a fixed number of rows, independent of what computes the tokens.

Engine (core) runs the step: admit waiting prompts, plan, hand the plan to a runner, turn new
tokens into text and finish what is done. The scheduler assigns rows and shares each step's
prompt tokens by the budget (step_budget); the plan is its own module (step_plan), the input of
every runner. Prefix reuse (prefix_cache) starts a prompt where a row's cache already holds its
start. A request's state is a Sequence (sequence); its text comes through the detokenizer and
the stop strings (text_state, detokenize). It imports only the leaves: runners import it.
"""
