"""LoRA adapter folders: what is read, and each adapter that cannot be served refused with its
reason (before any model loads); LORA_MODULES' own format."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from common.settings import ConfigError
from inference_api.config import Config
from inference_api.model.adapter_files import AdapterRefused, BaseShapes, read_adapter

# A base of 2 layers, hidden 64, 4 heads and 2 kv heads of 16, intermediate 96.
BASE = BaseShapes.of_config(SimpleNamespace(num_hidden_layers=2, hidden_size=64,
                                            num_attention_heads=4, num_key_value_heads=2,
                                            intermediate_size=96))
NAMES = ["SmolLM2-135M-Instruct", "model-folder"]
PREFIX = "base_model.model.model.layers"
SHAPES = {"q_proj": (64, 64), "k_proj": (32, 64), "v_proj": (32, 64), "o_proj": (64, 64),
          "gate_proj": (96, 64), "up_proj": (96, 64), "down_proj": (64, 96)}  # (out, in)


def write(folder, config: dict | None = None, modules=("q_proj", "v_proj"), rank: int = 4,
          tensors: dict | None = None):
    """An adapter folder as PEFT saves it: adapter_config.json and adapter_model.safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"peft_type": "LORA", "r": rank, "lora_alpha": 8, "target_modules": list(modules),
                "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct", "bias": "none",
                "modules_to_save": None, "use_dora": False, "use_rslora": False}
    (folder / "adapter_config.json").write_text(json.dumps({**settings, **(config or {})}))
    if tensors is None:
        tensors = {}
        for layer in range(2):
            for module in modules:
                out, inp = SHAPES[module]
                part = "self_attn" if module[0] in "qkvo" else "mlp"
                key = f"{PREFIX}.{layer}.{part}.{module}"
                tensors[f"{key}.lora_A.weight"] = torch.randn(rank, inp)
                tensors[f"{key}.lora_B.weight"] = torch.randn(out, rank)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


def refusal(folder) -> str:
    with pytest.raises(AdapterRefused) as caught:
        read_adapter("tune", str(folder), BASE, NAMES)
    assert str(caught.value).startswith(f"LoRA adapter 'tune' ({folder}) cannot be served: ")
    return str(caught.value)


def test_an_adapter_that_fits_is_read_with_its_scaling(tmp_path):
    adapter = read_adapter("tune", str(write(tmp_path / "a")), BASE, NAMES)
    assert adapter.rank == 4 and adapter.scaling == 2.0
    assert adapter.targets == ["q_proj", "v_proj"] and len(adapter.weights) == 4
    a, b = adapter.weights[(1, "v_proj")]
    assert a.shape == (4, 64) and b.shape == (32, 4)
    rs = read_adapter("tune", str(write(tmp_path / "rs", {"use_rslora": True})), BASE, NAMES)
    assert rs.scaling == pytest.approx(8 / math.sqrt(4))
    # A base named by a local path whose last part is a name of the served model is the same.
    local = write(tmp_path / "local", {"base_model_name_or_path": "/models/model-folder/"})
    assert read_adapter("tune", str(local), BASE, NAMES).rank == 4


@pytest.mark.parametrize("config, reason", [
    ({"use_dora": True}, "DoRA (use_dora) is not supported"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save ['lm_head'] is not supported"),
    ({"bias": "all"}, "trained biases (bias='all') is not supported"),
    ({"rank_pattern": {"q_proj": 8}}, "per-module ranks (rank_pattern) is not supported"),
    ({"peft_type": "IA3"}, "peft_type 'IA3'; only LORA adapters are served"),
    ({"target_modules": ["q_proj", "lm_head", "embed_tokens"]},
     "target modules lm_head, embed_tokens cannot be applied"),
    ({"base_model_name_or_path": "Qwen/Qwen2.5-0.5B"},
     "it was trained on 'Qwen/Qwen2.5-0.5B', and this server serves SmolLM2-135M-Instruct / "
     "model-folder (set MODEL_ID"),
])
def test_settings_we_cannot_apply_are_refused_by_name(tmp_path, config, reason):
    assert reason in refusal(write(tmp_path / "a", config))


def test_weights_that_do_not_fit_are_refused_by_name(tmp_path):
    key = f"{PREFIX}.0.self_attn.q_proj"
    wide = {f"{key}.lora_A.weight": torch.randn(4, 128), f"{key}.lora_B.weight": torch.randn(64, 4)}
    assert "layer 0 q_proj: lora_A (4, 128) and lora_B (64, 4) do not fit the model's q_proj " \
           "(64 x 64): an adapter of another model" in refusal(write(tmp_path / "w", tensors=wide))
    ranked = {f"{key}.lora_A.weight": torch.randn(8, 64), f"{key}.lora_B.weight": torch.randn(64, 8)}
    assert "are not of rank r=4" in refusal(write(tmp_path / "r", tensors=ranked))
    deep = {f"{PREFIX}.7.self_attn.q_proj.lora_A.weight": torch.randn(4, 64),
            f"{PREFIX}.7.self_attn.q_proj.lora_B.weight": torch.randn(64, 4)}
    assert "is for layer 7; the model has 2" in refusal(write(tmp_path / "d", tensors=deep))
    head = {"base_model.model.lm_head.lora_A.weight": torch.randn(4, 64),
            "base_model.model.lm_head.lora_B.weight": torch.randn(100, 4)}
    assert "weight base_model.model.lm_head.lora_A.weight is not a LoRA weight of a module we " \
           "apply" in refusal(write(tmp_path / "h", {"target_modules": "lm_head"}, tensors=head))
    half = {f"{key}.lora_A.weight": torch.randn(4, 64)}
    assert "layer 0 q_proj has lora_B missing" in refusal(write(tmp_path / "b", tensors=half))


def test_missing_or_unreadable_files_are_refused(tmp_path):
    assert "cannot read adapter_config.json" in refusal(tmp_path / "nothing-here")
    folder = write(tmp_path / "bin")
    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")
    assert "no adapter_model.safetensors (adapter_model.bin is not read" in refusal(folder)
    broken = write(tmp_path / "broken")
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
    assert "cannot read adapter_model.safetensors" in refusal(broken)


def test_lora_modules_setting():
    config = Config.from_env({"LORA_MODULES": " tune1=/a/b , tune2=rel/c,"})
    assert config.lora_adapters == {"tune1": "/a/b", "tune2": "rel/c"}
    assert Config().lora_adapters == {}
    for bad in ["tune1", "tune1=/a,tune1=/b", "SmolLM2-135M-Instruct=/a", "a/b=/c", "=/c"]:
        with pytest.raises(ConfigError, match="^LORA_MODULES="):
            Config.from_env({"LORA_MODULES": bad})
