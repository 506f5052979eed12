"""The real runner: the model's forward over a plan and vectorised sampling of the new tokens."""
from __future__ import annotations

import ctypes
import logging
import os

import torch

from inference_api.config import Config, cache_dir
from inference_api.engine.sequence import NewToken, Sequence
from inference_api.engine.step_plan import PromptChunk, StepPlan
from inference_api.sampling.grammar_rows import GrammarRows
from inference_api.sampling.sampler import RowSampler, token_logprobs

from .adapter_files import BaseShapes, read_adapters
from .files import load_tokenizer, prepare_model_folder, read_config, read_model_info
from .forward import DecoderModel, PrefillInput
from .loading import check_architecture, resolve_device, resolve_dtype
from .lora import LoraSet
from .quantized import check_quantization
from .weight_cache import load_model

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def retain_freed_memory() -> None:
    """Have glibc keep freed memory for reuse instead of handing it back to the system.

    Each step frees and allocates buffers of a few to tens of megabytes (logits, attention
    scores, group buffers). By default glibc maps large ones afresh and trims the heap, so the
    next step touches new pages: thousands of page faults in a step, measured, adding tens of
    milliseconds to the slowest steps. Does nothing where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's largest allowed value
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):
        pass


def cpu_threads() -> int:
    """Threads for torch's CPU work unless CPU_THREADS says: every core this process may run
    on (its affinity, which a cpuset or taskset narrows).

    Replicas sharing a host's cores should split them (CPU_THREADS): torch's threads wait for
    each other by spinning, so two processes with a thread per core each starve each other.
    """
    return max(1, len(os.sched_getaffinity(0)))


class ModelRunner:
    """Owns the model, its KV cache and the row sampler; the tokenizer is loaded for callers."""

    def __init__(self, config: Config):
        retain_freed_memory()
        torch.set_num_threads(config.cpu_threads or cpu_threads())
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        check_quantization(config.quantization, device, dtype)  # before the long load
        folder = prepare_model_folder(config.model_path, config.model_cache_dir)
        model_config = read_config(folder)
        check_architecture(model_config)  # before the long load
        adapters = read_adapters(config, model_config)  # LoRA: refused before it too
        self.info = read_model_info(folder)
        self.tokenizer = load_tokenizer(folder)
        weights = load_model(folder, device, dtype, config.quantization, cache_dir("weights"))
        limit = self.info["max_position_embeddings"] or config.max_seq_len
        self.max_seq_len = min(config.max_seq_len, limit)
        self.model = DecoderModel(weights, config.max_users, self.max_seq_len,
                                  attention=config.decode_attention,
                                  kv_cache_dtype=config.kv_cache_dtype,
                                  quantization=config.quantization,
                                  batch_invariant=config.batch_invariant)
        if adapters:
            self.model.lora = LoraSet(adapters, BaseShapes.of_config(model_config),
                                      config.max_users, self.model.device)
        self.eos_ids = tuple(self.info["eos_token_ids"])
        self.sampler = RowSampler(config.max_users, self.model.vocab_size, self.model.device,
                                  self.eos_ids)
        self.grammars = GrammarRows(self.tokenizer.to_str(), self.eos_ids, self.model.vocab_size,
                                    config.max_users)
        self.info.update(max_seq_len=self.max_seq_len, vocab_size=self.model.vocab_size,
                         device=str(device),
                         dtype=str(dtype).removeprefix("torch."), mock=False,
                         adapters=[a.name for a in adapters])
        self.from_cache = weights.from_cache
        log.info("model %s loaded on %s in %s%s%s", folder, device, self.info["dtype"],
                 ", linear weights in int8" if config.quantization == "int8" else "",
                 " (weights from the weight cache)" if weights.from_cache else "")

    def start(self, seq: Sequence) -> None:
        """Set a newly admitted row's adapter, sampling parameters and grammar."""
        if self.model.lora is not None:
            self.model.lora.assign(seq.row, seq.adapter)
        elif seq.adapter is not None:
            raise ValueError(f"the model {seq.adapter!r} is not served here")
        self.sampler.add(seq.row, seq.params, seq.prompt_ids)
        if seq.params.grammar is not None:
            self.grammars.add(seq.row, seq.params.grammar, seq.params.max_tokens)

    def finish(self, seq: Sequence) -> None:
        """Forget a row's per-request state."""
        self.sampler.remove(seq.row)
        self.grammars.remove(seq.row)

    def run(self, plan: StepPlan) -> list[NewToken]:
        """Copies between rows, then one forward over the plan; a new token for every row that
        has one."""
        for copy in plan.copies:
            self.model.copy_prefix(copy.source, copy.target, copy.length)
        if not (plan.decode or plan.prefill):
            return []
        device = self.model.device
        decode = plan.decode
        rows = torch.tensor([s.row for s in decode], dtype=torch.long)
        tokens = torch.tensor([s.last_token for s in decode], dtype=torch.long)
        positions = torch.tensor([s.position for s in decode], dtype=torch.long)
        chunks = [PrefillInput(c.seq.row, torch.tensor(c.seq.prompt_ids[c.start:c.start + c.length]),
                               c.start, all_logits=c.seq.wants_prompt_logprobs)
                  for c in plan.prefill]
        logits = self.model.step(rows.to(device), tokens.to(device), positions.to(device), chunks)
        # Rows of logits: the decode rows, then one per chunk (all of a chunk's with all_logits).
        # Only decode rows and chunks that end their prompt produce a token.
        wanted = list(range(len(decode)))
        seqs = list(decode)
        offset = len(decode)
        for chunk, given in zip(plan.prefill, chunks):
            width = chunk.length if given.all_logits else 1
            if given.all_logits:
                record_prompt_logprobs(chunk, logits[offset:offset + width])
            if chunk.completes_prompt:
                wanted.append(offset + width - 1)
                seqs.append(chunk.seq)
            offset += width
        if not seqs:
            return []
        index = torch.tensor(wanted, device=logits.device)
        rows = [s.row for s in seqs]
        chosen = logits.index_select(0, index).float()  # [len(seqs), vocab]
        self.grammars.mask(rows, chosen)  # tokens a row's grammar rules out become -inf
        new_tokens, logprobs = self.sampler.sample_with_logprobs(
            torch.tensor(rows, dtype=torch.long, device=logits.device), chosen)
        return [self._new_token(seq, token, logprob)
                for seq, token, logprob in zip(seqs, new_tokens.tolist(), logprobs)]

    def _new_token(self, seq: Sequence, token: int, logprob) -> NewToken:
        """A row's new token; a grammar's row may take a closing instead as max_tokens nears."""
        if seq.params.grammar is None:
            return NewToken(seq, token, logprob)
        remaining = min(seq.params.max_tokens, self.max_seq_len - seq.num_prompt) \
            - len(seq.generated) - 1
        accepted = self.grammars.accept(seq.row, token, remaining)
        return NewToken(seq, token, logprob, accepted.closing, accepted.error)


def record_prompt_logprobs(chunk: PromptChunk, logits: torch.Tensor) -> None:
    """Append the log probabilities of the prompt tokens this chunk's logits predict.

    logits [chunk.length, vocab] are the raw model's at each position of the chunk; position p
    predicts prompt token p + 1 (the last prompt position predicts the first new token).
    """
    seq = chunk.seq
    if seq.prompt_logprobs is None:
        seq.prompt_logprobs = [None]  # the first prompt token has nothing before it
    targets = seq.prompt_ids[chunk.start + 1:chunk.start + chunk.length + 1]
    if targets:
        found = token_logprobs(logits[:len(targets)].float(),
                               torch.tensor(targets, device=logits.device),
                               seq.params.prompt_logprobs)
        seq.prompt_logprobs.extend(found)
