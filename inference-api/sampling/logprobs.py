"""Token log probabilities: the chosen token's and the likeliest alternatives at a position."""
from __future__ import annotations

import torch

from inference_api.process_messages import TokenLogprob

# A log probability of minus infinity (a token a structured output rules out) is sent as this,
# as vLLM does: JSON has no infinity.
LOGPROB_FLOOR = -9999.0


def token_logprobs(x: torch.Tensor, tokens: torch.Tensor, top: int) -> list[TokenLogprob]:
    """Each row's token log probability and its `top` likeliest tokens ([n, vocab], [n])."""
    logp = torch.log_softmax(x, -1)  # [n, vocab]
    chosen = logp.gather(1, tokens[:, None])[:, 0].clamp_(min=LOGPROB_FLOOR).tolist()
    if top:
        values, ids = logp.topk(top, -1)  # [n, top]
        tops = [tuple(zip(i, v)) for i, v in zip(ids.tolist(),
                                                  values.clamp_(min=LOGPROB_FLOOR).tolist())]
    else:
        tops = [()] * len(chosen)
    return [TokenLogprob(t, lp, alt) for t, lp, alt in zip(tokens.tolist(), chosen, tops)]
