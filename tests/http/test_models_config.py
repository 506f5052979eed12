"""MODELS as the server reads it: one Config per model with its own options, and a ConfigError
that names the variable for every malformed list."""
from __future__ import annotations

import pytest

from common.settings import ConfigError
from inference_api.config import DEFAULT_MODEL_ID, Config


def configs(models: str, **env) -> list[Config]:
    return Config.from_env({"MODELS": models, **env}).model_configs()


def test_unset_is_the_one_model_of_model_path_and_model_id():
    [only] = Config.from_env({"MODEL_ID": "mine", "MAX_USERS": "8"}).model_configs()
    assert (only.model_id, only.model_path, only.max_users) == ("mine", "", 8)
    assert Config().model_configs()[0].model_id == DEFAULT_MODEL_ID


def test_each_entry_is_a_model_with_its_options_and_the_global_settings():
    first, second = configs("small=/m/a.gguf;max_users=16;max_seq_len=1024, other=/m/dir",
                            MAX_USERS="4", DTYPE="float32", LORA_MODULES="tune=/m/lora")
    assert (first.model_id, first.model_path, first.max_users, first.max_seq_len) == \
        ("small", "/m/a.gguf", 16, 1024)
    assert (second.model_id, second.model_path, second.max_users, second.max_seq_len) == \
        ("other", "/m/dir", 4, 2048)
    assert first.dtype == second.dtype == "float32"
    # The adapters are the first model's: they were trained on one base model.
    assert first.lora_adapters == {"tune": "/m/lora"} and second.lora_adapters == {}
    assert not first.models and not second.models


def test_an_empty_path_is_the_bundled_model_and_options_may_be_spaced():
    first, second = configs(" a= ; max_queue = 3 ; cpu_threads=1 ,b=")
    assert (first.model_path, first.max_queue, first.cpu_threads) == ("", 3, 1)
    assert (second.model_id, second.model_path) == ("b", "")


@pytest.mark.parametrize("models,words", [
    ("a=x,a=y", "given twice"),
    ("just-a-name", "name=path"),
    ("=x", "name=path"),
    ("a/b=x", "name=path"),
    ("a b=x", "name=path"),
    ("a\x01=x", "name=path"),
    ("m" * 65 + "=x", "name=path"),
    ("ünï=x", "name=path"),
    ("a=x;dtype=float32", "the options max_users"),
    ("a=x;max_users=2;max_users=3", "each once"),
    ("a=x;max_users=many", "an integer for max_users"),
    ("a=x;max_users=-1", "an integer for max_users"),
    (" , ", "at least one"),
    ("tune=x", "LORA_MODULES"),
])
def test_a_bad_list_is_a_config_error_naming_models(models, words):
    with pytest.raises(ConfigError, match="MODELS") as caught:
        configs(models, LORA_MODULES="tune=/m/lora")
    assert words in str(caught.value)


@pytest.mark.parametrize("option,variable", [("max_users=0", "MAX_USERS"),
                                             ("max_seq_len=8", "MAX_SEQ_LEN"),
                                             ("cpu_threads=5000", "CPU_THREADS")])
def test_an_option_out_of_range_names_the_entry_and_the_setting(option, variable):
    with pytest.raises(ConfigError) as caught:
        configs(f"ok=x,bad=y;{option}")
    assert "MODELS entry 'bad'" in str(caught.value) and variable in str(caught.value)


@pytest.mark.parametrize("env", [{"MODEL_PATH": "/m/a.gguf"}, {"MODEL_ID": "other"}])
def test_model_path_and_model_id_are_refused_beside_models(env):
    with pytest.raises(ConfigError, match="MODELS"):
        configs("a=x", **env)


def test_the_server_refuses_to_start_with_a_bad_list():
    import os
    import subprocess

    from helpers import GUNICORN
    from processes import REPO

    done = subprocess.run([GUNICORN, "--config", "gunicorn.conf.py"], cwd=REPO, timeout=120,
                          env={**os.environ, "MODELS": "a=x,a=y", "MOCK_MODEL": "1"},
                          capture_output=True, text=True)
    assert done.returncode == 2 and "MODELS" in done.stderr
