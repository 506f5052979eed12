#!/usr/bin/env python3
"""What a setting costs in quality against the exact path: perplexity and greedy agreement.

The baseline is the configuration of the environment (QUANTIZATION=none unless it says
otherwise); each --compare is the same environment with some settings changed, as the server
would read them (`QUANTIZATION=int8`, or several at once: `QUANTIZATION=int8,OTHER=value`).
Each configuration runs through the engine as the server runs it (chunked prefill, every row
stepped together, a fixed prompt budget per step so that both run the same steps):

- perplexity over a fixed text set (scripts/data/quality_text.txt: prose, facts and code, about
  3,200 tokens in 13 passages, each scored from its start), and how often the most likely next
  token at each of its positions is the baseline's;
- greedy answers, 64 tokens each (end of sequence ignored), of 64 prompts in one batch: the 16
  questions and 10 paragraphs of scripts/data/benchmark_prompts.json (the paragraphs alone and
  4 times all ten, over 1,000 tokens), and the prompts of scripts/data/quality_prompts.json;
  how many are token for token the baseline's, and where the others first differ.

    .venv/bin/python scripts/quality_check.py --compare QUANTIZATION=int8
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from inference_api.config import Config  # noqa: E402
from inference_api.engine.core import Engine  # noqa: E402
from inference_api.engine.step_budget import FixedBudget  # noqa: E402
from inference_api.engine.text_state import TextMaker  # noqa: E402
from inference_api.model.files import (load_tokenizer, prepare_model_folder,  # noqa: E402
                                       read_model_info)
from inference_api.model.runner import ModelRunner  # noqa: E402
from inference_api.process_messages import Submit  # noqa: E402
from inference_api.sampling_params import SamplingParams  # noqa: E402
from inference_api.serving.templates import render_chat  # noqa: E402
from prompt_set import DATA  # noqa: E402

HERE = Path(__file__).resolve().parent
TEXT = HERE / "data" / "quality_text.txt"
PROMPTS = HERE / "data" / "quality_prompts.json"


def passages() -> list[str]:
    """The text set's passages (separated by lines holding only ---)."""
    return [p.strip() for p in TEXT.read_text().split("\n---\n") if p.strip()]


def prompt_texts(info: dict) -> tuple[list[str], list[str]]:
    """The 64 prompts as text: chat prompts in the model's chat template, and raw ones."""
    bench, own = json.loads(DATA.read_text()), json.loads(PROMPTS.read_text())
    paragraphs = bench["paragraphs"]
    chats = list(bench["questions"])
    chats += [f"{p}\n\nWhat is the main idea of this text?" for p in paragraphs]
    chats += [" ".join(paragraphs[(start + k) % len(paragraphs)] for k in range(len(paragraphs)))
              + "\n\nWrite a short summary of the text above." for start in range(0, 8, 2)]
    chats += own["chat"]
    templated = [render_chat(info["chat_template"], [{"role": "user", "content": c}],
                             info.get("bos_token"), info.get("eos_token")) for c in chats]
    return templated, own["raw"]


def parse_settings(spec: str) -> dict[str, str]:
    """'NAME=value,NAME=value' as environment variables."""
    settings = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.isupper():
            raise SystemExit(f"--compare {spec!r}: expected NAME=value[,NAME=value]")
        settings[name] = value
    return settings


def run_engine(runner: ModelRunner, submits: list[Submit], budget: int) -> dict[str, list]:
    """Every submit through a fresh engine on the runner, to the end; outputs by session."""
    engine = Engine(runner, TextMaker.for_tokenizer(runner.tokenizer, runner.eos_ids),
                    runner.model.max_rows, FixedBudget(budget), runner.max_seq_len,
                    prefix_caching=False)
    results: dict[str, list] = {}
    for submit in submits:
        for out in engine.add(submit):
            results.setdefault(out.session_id, []).append(out)
    while engine.has_work():
        for out in engine.step():
            results.setdefault(out.session_id, []).append(out)
    errors = [o.error for outs in results.values() for o in outs if o.error]
    if errors:
        raise SystemExit(f"the engine failed: {errors[0]}")
    return results


def measure(runner: ModelRunner, texts: list[list[int]], prompts: list[list[int]],
            tokens: int, budget: int) -> dict:
    """The text set's token log probabilities and most likely tokens, and the greedy answers."""
    scored = run_engine(runner, [
        Submit(f"t{i}", ids, SamplingParams(max_tokens=0, prompt_logprobs=1))
        for i, ids in enumerate(texts)], budget)
    logprobs, top = [], []
    for i in range(len(texts)):
        found = [lp for out in scored[f"t{i}"] for lp in (out.prompt_logprobs or [])]
        found = [lp for lp in found if lp is not None]  # the first token has nothing before it
        logprobs += [lp.logprob for lp in found]
        top += [lp.top[0][0] for lp in found]
    params = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True, logprobs=0)
    answered = run_engine(runner, [Submit(f"p{i}", ids, params)
                                   for i, ids in enumerate(prompts)], budget)
    greedy = [[lp.token_id for out in answered[f"p{i}"] for lp in (out.logprobs or [])]
              for i in range(len(prompts))]
    return {"logprobs": logprobs, "top": top, "greedy": greedy}


def build(settings: dict[str, str], rows: int, max_seq_len: int) -> ModelRunner:
    """The runner of the environment with `settings` over it."""
    config = Config.from_env({**os.environ, **settings}, max_users=rows, max_seq_len=max_seq_len)
    return ModelRunner(config)


def compare(base: dict, other: dict) -> dict:
    """The figures of one configuration against the baseline's."""
    agree = sum(a == b for a, b in zip(base["top"], other["top"])) / len(base["top"])
    firsts = []
    for a, b in zip(base["greedy"], other["greedy"]):
        first = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), None)
        if first is None and len(a) != len(b):
            first = min(len(a), len(b))
        firsts.append(first)
    differing = [f for f in firsts if f is not None]
    n = len(firsts)
    return {"top1_agreement": agree, "identical": n - len(differing), "prompts": n,
            "first_difference_mean": sum(differing) / len(differing) if differing else None,
            "agreed_prefix_mean": sum(len(a) if f is None else f
                                      for f, a in zip(firsts, base["greedy"])) / n}


def perplexity(result: dict) -> float:
    return math.exp(-sum(result["logprobs"]) / len(result["logprobs"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", action="append", default=[],
                        help="settings to compare with the environment's, NAME=value[,NAME=value]")
    parser.add_argument("--tokens", type=int, default=64, help="greedy tokens per prompt")
    parser.add_argument("--budget", type=int, default=256, help="prompt tokens per step")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    configurations = [("baseline (the environment's settings)", {})]
    configurations += [(spec, parse_settings(spec)) for spec in args.compare]

    base = Config.from_env()
    folder = prepare_model_folder(base.model_path, base.model_cache_dir)
    tokenizer = load_tokenizer(folder)
    texts = [tokenizer.encode(p).ids for p in passages()]
    chats, raw = prompt_texts(read_model_info(folder))
    # As the server encodes them: the template holds the special tokens; raw prompts get the
    # tokenizer's own.
    prompts = [tokenizer.encode(p, add_special_tokens=False).ids for p in chats]
    prompts += [tokenizer.encode(p).ids for p in raw]
    longest = max(len(p) for p in prompts + texts) + args.tokens
    results, report = {}, []
    for label, settings in configurations:
        started = time.perf_counter()
        runner = build(settings, len(prompts), -(-longest // 64) * 64)
        results[label] = measure(runner, texts, prompts, args.tokens, args.budget)
        info = runner.info
        del runner
        gc.collect()
        row = {"setting": label, "perplexity": perplexity(results[label]),
               "seconds": time.perf_counter() - started, "dtype": info["dtype"]}
        if settings:
            row.update(compare(results[configurations[0][0]], results[label]))
        report.append(row)
        print(f"{label}: done in {row['seconds']:.0f} s", file=sys.stderr)

    print(f"text set: {len(texts)} passages, {len(results[configurations[0][0]]['logprobs'])} "
          f"scored tokens; {len(prompts)} prompts x {args.tokens} greedy tokens; "
          f"dtype {report[0]['dtype']}")
    for row in report:
        line = f"{row['setting']}: perplexity {row['perplexity']:.3f}"
        if "identical" in row:
            first = row["first_difference_mean"]
            line += (f"; top-1 next token as baseline {row['top1_agreement']:.1%}; greedy "
                     f"identical {row['identical']}/{row['prompts']}; first difference at token "
                     + ("-" if first is None else f"{first:.1f}") + " on average (0-based, of "
                     f"the differing); agreed prefix {row['agreed_prefix_mean']:.1f} tokens "
                     "on average (of all)")
        print(line)
    if args.json:
        print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
