"""The serving benchmark's prompts: what a prefix cache can and cannot reuse in each workload."""
from inference_api.engine.prefix_cache import shared_prefix
from serving_prompts import SHARED_TOKENS, WORKLOADS, workload_prompts


def words(text: str) -> list[str]:
    return text.split()


def test_mixed_and_long_prompts_share_no_start_within_a_round_or_across_rounds():
    for name in ("mixed", "long"):
        rounds = [workload_prompts(name, tag=f"r{i}-") for i in range(2)]
        assert len(rounds[0]) == WORKLOADS[name][0]
        everything = rounds[0] + rounds[1]
        assert len({p.split()[0] for p in everything}) == len(everything)  # a unique first word


def test_shared_prompts_start_with_the_same_instructions_and_then_differ():
    prompts = workload_prompts("shared", tag="r0-")
    starts = {shared_prefix(words(prompts[0]), words(p)) for p in prompts[1:]}
    assert len(starts) == 1  # every prompt shares exactly the instructions with the first
    common = starts.pop()
    assert abs(common - SHARED_TOKENS / 1.2) <= 2  # about SHARED_TOKENS tokens of words
    assert workload_prompts("shared", tag="r0-") == prompts  # the same in every run
