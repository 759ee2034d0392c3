"""PPO's experience: sample responses, score them, and turn the scores into advantages.

Steps 1-2 of the chapter's PPO flow ("PPO 训练细节及超参数"): the policy samples a batch of
answers; the reward model scores them and the value model estimates each token's value; with the
reference model's log-probs this gives per-token rewards (KL penalty + score at the end) and, by
GAE, the advantages and returns that the PPO epochs train on. Everything here runs without
gradients. The math is `alignctl.rlmath`; this module only feeds it tensors.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any


def batch_indices(update: int, batch_size: int, n: int, seed: int) -> list[int]:
    """Dataset indices of global batch `update` (0-based): a fresh shuffle of all prompts per pass.

    A pure function of its arguments, so a resumed run sees exactly the prompts the interrupted
    one would have, with no iterator state to save.
    """
    orders: dict[int, list[int]] = {}
    out = []
    for k in range(update * batch_size, (update + 1) * batch_size):
        epoch, pos = divmod(k, n)
        if epoch not in orders:
            orders[epoch] = list(range(n))
            random.Random(seed * 100_003 + epoch).shuffle(orders[epoch])
        out.append(orders[epoch][pos])
    return out


@dataclass
class Tokens:
    """What the rollout needs from the tokenizer: the stop (EOS) and pad ids, and decoding."""

    tokenizer: Any
    stop_id: int | None  # None: answers run to response_length (TRL's stop_token None)
    pad_id: int

    @property
    def eos_id(self) -> int | None:
        return self.stop_id if self.stop_id is not None else self.tokenizer.eos_token_id

    def decode(self, responses, mask) -> list[str]:
        return [
            self.tokenizer.decode(row[: int(m.sum())].tolist(), skip_special_tokens=True)
            for row, m in zip(responses, mask, strict=True)
        ]


@dataclass
class Experience:
    """One rollout's buffer on this process. Token tensors are `[B, T]`, T the response width."""

    query_responses: Any  # [B, P + T], prompts left-padded, responses right-padded
    attention_mask: Any
    position_ids: Any
    responses: Any
    mask: Any  # 1 on real response tokens (up to and including the first EOS)
    logprobs: Any
    ref_logprobs: Any
    values: Any
    trunk: Any  # [B, P + T, H]: hidden state below the value model's adapter (None: no shared trunk)
    scores: Any  # [B], after the missing-EOS penalty
    has_eos: Any  # [B] bool
    kl: Any
    rewards: Any
    advantages: Any  # whitened
    returns: Any
    texts: list[str]

    @property
    def size(self) -> int:
        return self.responses.size(0)


def left_pad(seqs: list[list[int]], pad_id: int):
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = 1
    return ids, mask


def position_ids(attention_mask):
    # Generation derives positions from the mask (left padding shifts them); every later forward
    # must use the same ones or the log-probs would describe a different sequence.
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def generate(policy, ids, mask, s: dict, stop_id: int | None, pad_id: int, chunk: int, *, logprobs: bool = True):
    """Sampled responses, `[B, T]` right-padded with `pad_id` (T <= response_length), and their log-probs.

    The log-probs come from the logits the tokens were sampled from (at temperature + 1e-7), so the
    rollout needs no second policy forward; they agree with a full forward to float rounding
    (~1e-6), far inside PPO's clip range. `logprobs=False` skips them (returns None).
    """
    import torch
    from transformers import GenerationConfig

    from alignctl.rlmath import logprobs_from_logits

    config = GenerationConfig(
        max_new_tokens=int(s["response_length"]),
        min_new_tokens=0,
        do_sample=True,
        # the chapter's generation config adds 1e-7 so temperature 0 still divides safely
        temperature=float(s["temperature"]) + 1e-7,
        top_k=int(s["top_k"]),
        top_p=float(s["top_p"]),
        # [] rather than None: generate would fill None in from the model's own generation config
        eos_token_id=stop_id if stop_id is not None else [],
        pad_token_id=pad_id,
        use_cache=True,
        output_logits=logprobs,
        return_dict_in_generate=True,
    )
    outs, lps = [], []
    temperature = float(s["temperature"])
    for i in range(0, ids.size(0), chunk):
        sl = slice(i, i + chunk)
        out = policy.generate(input_ids=ids[sl], attention_mask=mask[sl], generation_config=config)
        tokens = out.sequences[:, ids.size(1) :]
        outs.append(tokens)
        if logprobs:  # one chunk's [rows, T, V] logits at a time, reduced at once to [rows, T]
            lps.append(logprobs_from_logits(torch.stack(out.logits, dim=1), tokens, temperature))
        del out
    width = max(o.size(1) for o in outs)
    tokens = torch.cat([torch.nn.functional.pad(o, (0, width - o.size(1)), value=pad_id) for o in outs])
    if not logprobs:
        return tokens, None
    # padding past a chunk's end gets log-prob 0: it is after every row's EOS, masked out downstream
    return tokens, torch.cat([torch.nn.functional.pad(lp, (0, width - lp.size(1))) for lp in lps])


def sample_with_engine(engine, prompt_ids: list[list[int]], s: dict, stop_id: int | None, pad_id: int, seeds, device):
    """`generate`'s result from alignctl's rollout engine (vLLM): responses `[B, T]` right-padded
    with `pad_id` and the engine's log-probs of the sampled tokens (after temperature)."""
    import torch

    samples = engine.generate(
        prompt_ids,
        n=1,
        temperature=float(s["temperature"]),
        top_p=float(s["top_p"]),
        top_k=int(s["top_k"]),
        max_tokens=int(s["response_length"]),
        stop_token_ids=[stop_id] if stop_id is not None else [],
        seeds=seeds,
    )
    rows = [group[0] for group in samples]
    width = max(1, max(len(r.token_ids) for r in rows))
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    logprobs = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, r in enumerate(rows):
        tokens[i, : len(r.token_ids)] = torch.tensor(r.token_ids, dtype=torch.long)
        logprobs[i, : len(r.logprobs)] = torch.tensor(r.logprobs, dtype=torch.float32)
    return tokens.to(device), logprobs.to(device)


def response_logprobs(model, qr, attn, pos, width: int, temperature: float, chunk: int, layer: int = 0):
    """Log-probs of the response tokens under `model` (a causal LM), `[B, T]`, chunked; and, when
    `layer` > 0, the hidden state entering that decoder layer (else None)."""
    import torch

    from alignctl.rlmath import logprobs_from_logits

    out, kept = [], []
    for i in range(0, qr.size(0), chunk):
        sl = slice(i, i + chunk)
        res = model(
            input_ids=qr[sl],
            attention_mask=attn[sl],
            position_ids=pos[sl],
            logits_to_keep=width + 1,
            use_cache=False,
            output_hidden_states=layer > 0,
        )
        out.append(logprobs_from_logits(res.logits[:, :-1], qr[sl, -width:], temperature))
        if layer:
            kept.append(res.hidden_states[layer])
        del res
    return torch.cat(out), (torch.cat(kept) if layer else None)


def hidden_states(body, qr, attn, pos, chunk: int, layer: int = 0):
    """The last hidden states of a transformer body, `[B, P + T, H]`, and optionally layer `layer`'s input."""
    import torch

    out, kept = [], []
    for i in range(0, qr.size(0), chunk):
        sl = slice(i, i + chunk)
        res = body(
            input_ids=qr[sl],
            attention_mask=attn[sl],
            position_ids=pos[sl],
            use_cache=False,
            output_hidden_states=layer > 0,
        )
        out.append(res.last_hidden_state)
        if layer:
            kept.append(res.hidden_states[layer])
        del res
    return torch.cat(out), (torch.cat(kept) if layer else None)


def _rows(t, i: int, n: int):
    return None if t is None else t[i : i + n]


def collect(
    roles,
    prompt_ids: list[list[int]],
    records: list[dict],
    s: dict,
    tok: Tokens,
    *,
    source=None,
    device="cpu",
    critic=None,
    engine=None,
    seeds=None,
) -> tuple[Experience, Any]:
    """Roll out one batch and compute everything PPO's epochs need (chapter steps 1-2).

    `critic`, when given, is the trainable value model, called with gradients on the whole batch:
    its values serve as the rollout's (they are what the first PPO step would compute again,
    before any update) and are returned with their graph for that step to backprop through,
    saving one critic forward per update. The trainer passes it when the first mini-batch is the
    whole local batch in one micro-batch.

    `engine` (alignctl's vLLM rollout engine, holding the policy's current weights) samples instead
    of `policy.generate`, one request per prompt seeded by `seeds`. Its log-probs stand in for the
    policy's when it runs in the policy's dtype (they agree to float rounding: docs/performance.md);
    otherwise the policy recomputes them, so PPO's ratio and KL are always the policy's own.
    """
    import torch

    with torch.no_grad():
        return _collect(roles, prompt_ids, records, s, tok, source, device, critic, engine, seeds)


def logprob_source(engine, policy) -> str:
    """Where PPO's old log-probs come from: `engine` (same dtype as the policy) or `policy` (recomputed)."""
    return "engine" if engine.dtype == str(policy.dtype).removeprefix("torch.") else "policy"


def _collect(roles, prompt_ids, records, s, tok, source, device, critic, engine, seeds):
    import torch

    from alignctl import rlmath

    chunk = max(1, int(s["local_rollout_forward_batch_size"]))
    temperature = float(s["temperature"])
    stop_id, pad_id = tok.stop_id, tok.pad_id
    ids, pmask = left_pad(prompt_ids, pad_id)
    ids, pmask = ids.to(device), pmask.to(device)
    if engine is None:
        responses, logprobs = generate(roles.policy, ids, pmask, s, stop_id, pad_id, chunk)
    else:
        responses, logprobs = sample_with_engine(engine, prompt_ids, s, stop_id, pad_id, seeds, device)
    eos = tok.eos_id
    has_eos = (responses == eos).any(-1) if eos is not None else torch.zeros_like(responses[:, 0], dtype=torch.bool)
    if stop_id is not None:
        responses, mask = rlmath.truncate_after_eos(responses, stop_id, pad_id)
    else:
        mask = torch.ones_like(responses)
    width = responses.size(1)
    qr = torch.cat([ids, responses], dim=1)
    attn = torch.cat([pmask, mask], dim=1)
    pos = position_ids(attn)
    if engine is not None and logprob_source(engine, roles.policy) == "policy":
        logprobs = response_logprobs(roles.policy, qr, attn, pos, width, temperature, chunk)[0]

    # Frozen passes first: switching a LoRA adapter off and on toggles requires_grad, which must not
    # happen while a graph through those weights (the `critic` below) is alive. The frozen layers
    # under the value model's adapter run once, inside the reward pass (for a rule reward, the
    # reference pass: the same frozen weights); the value model continues from their output.
    rule_trunk = roles.trunk if not roles.has_reward_model else 0
    with roles.reference() as ref:
        ref_logprobs, trunk = response_logprobs(ref, qr, attn, pos, width, temperature, chunk, rule_trunk)
    texts = tok.decode(responses, mask)
    if roles.has_reward_model:
        with roles.reward_model() as body:
            rhidden, trunk = hidden_states(body, qr, attn, pos, chunk, roles.trunk)
        # the score is read at the last real token of prompt + response (the EOS when there is one)
        last = qr.size(1) - 1 - rlmath.first_true_indices(attn.flip(-1).bool())
        rows = torch.arange(qr.size(0), device=qr.device)
        scores = roles.reward_head(rhidden[rows, last]).squeeze(-1).float()
    else:
        from alignctl.rewards import score_records

        scores = torch.tensor(score_records(source, records, texts), dtype=torch.float32, device=device)
    graph = None
    if critic is not None:
        with torch.enable_grad():
            graph = critic(qr, attn, pos, width, trunk=trunk)
        values = graph.detach()
    else:
        from .roles import values as value_forward

        values = torch.cat(
            [
                value_forward(
                    roles, qr[i : i + chunk], attn[i : i + chunk], pos[i : i + chunk], width, _rows(trunk, i, chunk)
                )
                for i in range(0, qr.size(0), chunk)
            ]
        )
    if s.get("missing_eos_penalty"):
        # the chapter's --missing_eos_penalty 1.0: an answer cut off at response_length scores lower
        scores = scores - float(s["missing_eos_penalty"]) * (~has_eos).float()

    rewards, kl = rlmath.shaped_rewards(
        scores, logprobs, ref_logprobs, mask, float(s["kl_coef"]), str(s["kl_estimator"])
    )
    if s.get("whiten_rewards") and int(mask.sum()) >= 2:
        rewards = rlmath.masked_whiten(rewards, mask, shift_mean=False)
    advantages, returns = rlmath.gae(rewards, values, mask, float(s["gamma"]), float(s["lam"]))
    if int(mask.sum()) >= 2:
        advantages = rlmath.masked_whiten(advantages, mask)
    else:
        # whitening one number gives 0 (x - mean); masked_var refuses n < 2, so say it directly
        advantages = torch.zeros_like(advantages)
    exp = Experience(
        query_responses=qr,
        attention_mask=attn,
        position_ids=pos,
        responses=responses,
        mask=mask,
        logprobs=logprobs,
        ref_logprobs=ref_logprobs,
        values=values,
        trunk=trunk,
        scores=scores,
        has_eos=has_eos,
        kl=kl,
        rewards=rewards,
        advantages=advantages,
        returns=returns,
        texts=texts,
    )
    return exp, graph
