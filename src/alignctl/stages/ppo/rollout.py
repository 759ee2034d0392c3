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

from alignctl.console import note


def encode_prompts(records: list[dict], tokenizer, max_prompt_length: int | None) -> list[list[int]]:
    """Token ids of each prompt: message lists through the chat template, strings as they are."""
    out, cut = [], 0
    for rec in records:
        prompt = rec["prompt"]
        if isinstance(prompt, list):
            text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tokenizer(prompt)["input_ids"]
        if max_prompt_length and len(ids) > max_prompt_length:
            # keep the end: a chat prompt ends with the assistant header the answer follows
            ids, cut = ids[-max_prompt_length:], cut + 1
        out.append(list(ids))
    if cut:
        note(f"{cut} prompt(s) longer than max_prompt_length={max_prompt_length} tokens: kept their last tokens")
    return out


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
    stop_id: int
    pad_id: int

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


def generate(policy, ids, mask, s: dict, stop_id: int, pad_id: int, chunk: int):
    """Sampled responses, `[B, T]` right-padded with `pad_id`, T <= response_length."""
    import torch
    from transformers import GenerationConfig

    config = GenerationConfig(
        max_new_tokens=int(s["response_length"]),
        min_new_tokens=0,
        do_sample=True,
        # the chapter's generation config adds 1e-7 so temperature 0 still divides safely
        temperature=float(s["temperature"]) + 1e-7,
        top_k=int(s["top_k"]),
        top_p=float(s["top_p"]),
        eos_token_id=stop_id,
        pad_token_id=pad_id,
        use_cache=True,
    )
    outs = []
    for i in range(0, ids.size(0), chunk):
        sl = slice(i, i + chunk)
        out = policy.generate(input_ids=ids[sl], attention_mask=mask[sl], generation_config=config)
        outs.append(out[:, ids.size(1) :])
    width = max(o.size(1) for o in outs)
    return torch.cat([torch.nn.functional.pad(o, (0, width - o.size(1)), value=pad_id) for o in outs])


def response_logprobs(model, qr, attn, pos, width: int, temperature: float, chunk: int):
    """Log-probs of the response tokens under `model` (a causal LM), `[B, T]`, chunked."""
    import torch

    from alignctl.rlmath import logprobs_from_logits

    out = []
    for i in range(0, qr.size(0), chunk):
        sl = slice(i, i + chunk)
        logits = model(
            input_ids=qr[sl], attention_mask=attn[sl], position_ids=pos[sl], logits_to_keep=width + 1, use_cache=False
        ).logits[:, :-1]
        out.append(logprobs_from_logits(logits, qr[sl, -width:], temperature))
    return torch.cat(out)


def hidden_states(body, qr, attn, pos, chunk: int):
    import torch

    out = []
    for i in range(0, qr.size(0), chunk):
        sl = slice(i, i + chunk)
        hidden = body(input_ids=qr[sl], attention_mask=attn[sl], position_ids=pos[sl], use_cache=False)
        out.append(hidden.last_hidden_state)
    return torch.cat(out)


def source_scores(source, records: list[dict], texts: list[str]) -> list[float]:
    """Score with a pointwise reward source (a rule): prompts, completions, the prompts' other columns."""
    prompts = [r["prompt"] for r in records]
    completions = [
        [{"role": "assistant", "content": t}] if isinstance(p, list) else t for p, t in zip(prompts, texts, strict=True)
    ]
    keys = sorted({k for r in records for k in r if k != "prompt"})
    columns = {k: [r.get(k) for r in records] for k in keys}
    return source.score(prompts, completions, columns)


def collect(
    roles, prompt_ids: list[list[int]], records: list[dict], s: dict, tok: Tokens, *, source=None, device="cpu"
) -> Experience:
    """Roll out one batch and compute everything PPO's epochs need (chapter steps 1-2)."""
    import torch

    from alignctl import rlmath

    chunk = max(1, int(s["local_rollout_forward_batch_size"]))
    temperature = float(s["temperature"])
    stop_id, pad_id = tok.stop_id, tok.pad_id
    ids, pmask = left_pad(prompt_ids, pad_id)
    ids, pmask = ids.to(device), pmask.to(device)
    responses = generate(roles.policy, ids, pmask, s, stop_id, pad_id, chunk)
    has_eos = rlmath.first_true_indices(responses == stop_id) < responses.size(1)
    responses, mask = rlmath.truncate_after_eos(responses, stop_id, pad_id)
    width = responses.size(1)
    qr = torch.cat([ids, responses], dim=1)
    attn = torch.cat([pmask, mask], dim=1)
    pos = position_ids(attn)

    logprobs = response_logprobs(roles.policy, qr, attn, pos, width, temperature, chunk)
    with roles.reference() as ref:
        ref_logprobs = response_logprobs(ref, qr, attn, pos, width, temperature, chunk)
    hidden = hidden_states(roles.critic, qr, attn, pos, chunk)
    values = roles.value_head(hidden[:, -width - 1 : -1]).squeeze(-1)
    texts = tok.decode(responses, mask)
    if roles.has_reward_model:
        with roles.reward_model() as body:
            rhidden = hidden_states(body, qr, attn, pos, chunk)
        # the score is read at the last real token of prompt + response (the EOS when there is one)
        last = qr.size(1) - 1 - rlmath.first_true_indices(attn.flip(-1).bool())
        rows = torch.arange(qr.size(0))
        scores = roles.reward_head(rhidden[rows, last]).squeeze(-1).float()
    else:
        scores = torch.tensor(source_scores(source, records, texts), dtype=torch.float32, device=device)
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
    return Experience(
        query_responses=qr,
        attention_mask=attn,
        position_ids=pos,
        responses=responses,
        mask=mask,
        logprobs=logprobs,
        ref_logprobs=ref_logprobs,
        values=values,
        scores=scores,
        has_eos=has_eos,
        kl=kl,
        rewards=rewards,
        advantages=advantages,
        returns=returns,
        texts=texts,
    )
