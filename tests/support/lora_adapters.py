"""Random LoRA adapters over the default model, made and saved by PEFT, and PEFT's own greedy
answers with them: the reference the server's adapters are held to (float32).

Two adapters: "tune1" on all seven projections (r=8, alpha 16), "tune2" on q, v and down alone
with rsLoRA (r=4, alpha 8). Their A and B matrices are random and non-zero, so each changes the
answers; PEFT's own initialisation (B = 0) would change nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BASE_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
ADAPTERS = {
    "tune1": dict(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                      "gate_proj", "up_proj", "down_proj"]),
    "tune2": dict(r=4, lora_alpha=8, use_rslora=True,
                  target_modules=["q_proj", "v_proj", "down_proj"]),
}
PROMPTS = ["The capital of France is", "def fibonacci(n):",
           "Once upon a time, in a small village by the sea, there lived an old fisherman who"]
NEW_TOKENS = 20


@dataclass
class AdapterSet:
    """Saved adapters and PEFT's answers: answers[(prompt, name or None)] = greedy text."""

    folders: dict[str, Path]
    answers: dict[tuple[str, str | None], str]
    tokenizer: object

    @property
    def lora_modules(self) -> str:
        """The LORA_MODULES value that serves them."""
        return ",".join(f"{name}={folder}" for name, folder in self.folders.items())


def model_folder() -> Path:
    """The default model's folder (converted from the bundled GGUF file once per machine)."""
    from inference_api.config import Config
    from inference_api.model.files import prepare_model_folder

    config = Config()
    return prepare_model_folder(config.model_path, config.model_cache_dir)


def make_adapters(target: Path, std: float = 0.04) -> AdapterSet:
    """Both adapters saved under target/<name>, and PEFT's greedy answers to PROMPTS with each
    adapter and with none."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = model_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    model = None
    for name, settings in ADAPTERS.items():
        config = LoraConfig(task_type="CAUSAL_LM", **settings)
        if model is None:
            model = get_peft_model(base, config, adapter_name=name)
        else:
            model.add_adapter(name, config)
    generator = torch.Generator().manual_seed(27)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if ".lora_A." in param_name or ".lora_B." in param_name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    folders = {}
    for name in ADAPTERS:
        model.peft_config[name].base_model_name_or_path = BASE_NAME
        # No embedding check: it would look the base name up online.
        model.save_pretrained(target / "saved", selected_adapters=[name],
                              safe_serialization=True, save_embedding_layers=False)
        folders[name] = target / "saved" / name
    answers = {}
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt")
        for name in [None, *ADAPTERS]:
            if name is None:
                with model.disable_adapter():
                    out = _greedy(model, ids)
            else:
                model.set_adapter(name)
                out = _greedy(model, ids)
            answers[(prompt, name)] = tokenizer.decode(out, skip_special_tokens=True)
    return AdapterSet(folders, answers, tokenizer)


def _greedy(model, ids) -> list[int]:
    """NEW_TOKENS greedy tokens, each the argmax of the model's logits with its KV cache (what
    generate() does, without its per-token overhead, which is most of its time on a CPU)."""
    import torch

    tokens = []
    with torch.inference_mode():
        out = model(**ids, use_cache=True)
        for _ in range(NEW_TOKENS):
            tokens.append(int(out.logits[0, -1].argmax()))
            out = model(input_ids=torch.tensor([[tokens[-1]]]), use_cache=True,
                        past_key_values=out.past_key_values)
    return tokens
