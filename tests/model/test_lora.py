"""LoRA adapters in our forward pass against PEFT's on a tiny random Llama: rows with different
adapters and rows with none in the same steps, prompt chunks and decoding tokens alike."""
from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from inference_api.model.adapter_files import BaseShapes, read_adapter
from inference_api.model.forward import DecoderModel, PrefillInput
from inference_api.model.lora import LoraSet

VOCAB = 128
TINY = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SETTINGS = {"one": dict(r=8, lora_alpha=16, target_modules=ALL),
            # rsLoRA, a few modules, and only the second layer
            "two": dict(r=4, lora_alpha=6, use_rslora=True, target_modules=["k_proj", "up_proj"],
                      layers_to_transform=[1])}
ROW_ADAPTERS = ["one", "two", None, "one", "two", None]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(our model with the adapters, PEFT's model with the same adapters)."""
    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(**TINY)).eval()
    ours = DecoderModel(hf, max_rows=len(ROW_ADAPTERS), max_seq_len=64, kv_bucket=16,
                        attention="torch")  # before PEFT wraps the projections
    peft_model = None
    for name, settings in SETTINGS.items():
        config = LoraConfig(**settings)
        if peft_model is None:
            peft_model = get_peft_model(hf, config, adapter_name=name)
        else:
            peft_model.add_adapter(name, config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if ".lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    folder = tmp_path_factory.mktemp("adapters")
    peft_model.save_pretrained(folder, safe_serialization=True)
    base = BaseShapes.of_config(hf.config)
    adapters = [read_adapter(name, str(folder / name), base, []) for name in SETTINGS]
    ours.lora = LoraSet(adapters, base, ours.max_rows, ours.device)
    return ours, peft_model


def longs(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


def peft_logits(peft_model, adapter: str | None, tokens: list[int]) -> torch.Tensor:
    """PEFT's logits at the last position of the whole sequence, with the adapter or none."""
    with torch.inference_mode():
        ids = torch.tensor([tokens])
        if adapter is None:
            with peft_model.disable_adapter():
                return peft_model(input_ids=ids).logits[0, -1].float()
        peft_model.set_adapter(adapter)
        return peft_model(input_ids=ids).logits[0, -1].float()


def test_mixed_adapter_steps_match_peft(tiny):
    ours, peft_model = tiny
    for row, adapter in enumerate(ROW_ADAPTERS):
        ours.lora.assign(row, adapter)
    generator = torch.Generator().manual_seed(2)
    prompts = {row: torch.randint(0, VOCAB, (5 + 3 * row,), generator=generator).tolist()
               for row in range(len(ROW_ADAPTERS))}
    seqs = {row: [] for row in prompts}
    checked = 0
    # Step 0: rows 0-2 prefill whole; steps 1-3: they decode while rows 3-5 prefill in chunks
    # of 4 (the same adapters in both kinds of token); then every row decodes.
    for step in range(8):
        decode = [r for r in range(3) if step > 0] + [r for r in range(3, 6)
                                                      if len(seqs[r]) >= len(prompts[r])]
        chunks = []
        for row in range(6):
            if row in decode or (row >= 3 and step == 0):
                continue
            start = len(seqs[row])
            part = prompts[row][start:start + (4 if row >= 3 else len(prompts[row]))]
            chunks.append(PrefillInput(row, torch.tensor(part), start))
            seqs[row] = seqs[row] + part
        new = {r: int(torch.randint(0, VOCAB, (1,), generator=generator)) for r in decode}
        for r in decode:
            seqs[r] = seqs[r] + [new[r]]
        logits = ours.step(longs(decode), longs([new[r] for r in decode]),
                           longs([len(seqs[r]) - 1 for r in decode]), chunks)
        for i, row in enumerate(decode + [c.row for c in chunks]):
            want = peft_logits(peft_model, ROW_ADAPTERS[row], seqs[row])
            torch.testing.assert_close(logits[i], want, atol=1e-4, rtol=1e-4)
            if ROW_ADAPTERS[row] is not None:  # the adapter changes the answer: not a no-op
                assert (want - peft_logits(peft_model, None, seqs[row])).abs().max() > 1e-2
            checked += 1
    assert checked >= 35


def test_a_row_forgets_its_adapter_when_it_is_given_to_another_request(tiny):
    ours, peft_model = tiny
    tokens = [5, 17, 33, 2, 9]
    for adapter in ("one", None):  # the same row and prompt, once with the adapter, once without
        ours.lora.assign(0, adapter)
        logits = ours.step(longs([]), longs([]), longs([]), [PrefillInput(0, longs(tokens), 0)])
        torch.testing.assert_close(logits[0], peft_logits(peft_model, adapter, tokens),
                                   atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="not served"):
        ours.lora.assign(0, "three")
