"""The backend's engine, built on the real model or on the mock, and warmed up."""
from __future__ import annotations

from inference_api.config import Config
from inference_api.engine.core import Engine
from inference_api.engine.step_budget import step_budget
from inference_api.engine.text_state import TextMaker
from inference_api.process_messages import Submit
from inference_api.sampling_params import SamplingParams


def build_engine(config: Config) -> tuple[Engine, dict]:
    """The engine on the real model, or on the mock when MOCK_MODEL=1 (which never imports torch).

    Returns the engine and the model's info for the server.
    """
    if config.mock_model:
        from inference_api.mock.runner import MockRunner
        from inference_api.mock.text import MockTextMaker

        runner, texts = MockRunner(config), MockTextMaker()
    else:
        from inference_api.model.runner import ModelRunner

        runner = ModelRunner(config)
        texts = TextMaker.for_tokenizer(runner.tokenizer, runner.eos_ids)
    budget = step_budget(config.itl_target_ms, config.prefill_chunk)
    engine = Engine(runner, texts, config.max_users, budget, runner.max_seq_len,
                    prefix_caching=config.prefix_caching)
    return engine, runner.info


def warm_up(engine: Engine) -> None:
    """Run one short request through every stage so the first user does not pay for it."""
    engine.add(Submit("warm-up", [1, 2, 3], SamplingParams(max_tokens=2, temperature=0)))
    while engine.has_work():
        engine.step()
