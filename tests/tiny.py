"""Tiny random models built locally in seconds: the default tests never touch a hub or SmolLM2.

A byte-level BPE tokenizer trained on the fly (with a ChatML chat template like SmolLM2's) and a
2-layer Llama, as a causal LM and as a one-output sequence classifier (a reward model).
"""

from __future__ import annotations

import json
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<pad>", "<|im_start|>", "<|im_end|>"]
CORPUS_WORDS = (
    "the a an is of to and in what which capital city country answer question yes no good bad "
    "short long hello world paris france rome italy berlin germany madrid spain tokyo japan "
    "red blue green hot cold big small up down left right one two three four five six seven "
    "eight nine ten plus minus equals please briefly answer user assistant system sky grass "
    "cat dog bird fish sun moon day night fast slow happy sad true false ok sure thanks"
).split()


def build_tokenizer(out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = [" ".join(CORPUS_WORDS[i : i + 8]) for i in range(0, len(CORPUS_WORDS), 3)] * 20
    corpus += [w.capitalize() + "?" for w in CORPUS_WORDS]
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<|im_end|>", bos_token=None, unk_token=None
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def build_causal_lm(out: Path, seed: int = 0, *, head_dim: int = 8) -> Path:
    """A 2-layer Llama; vLLM's CPU attention needs `head_dim` >= 32 (8 is refused)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=4 * head_dim,
        intermediate_size=8 * head_dim,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, do_sample=True
    )
    model.save_pretrained(out)
    return out


def build_reward_model(out: Path, seed: int = 1) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        num_labels=1,
    )
    LlamaForSequenceClassification(cfg).save_pretrained(out)
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def toy_preferences(n: int = 32) -> list[dict]:
    """A separable preference set: the chosen answer is always 'yes good', the rejected 'no bad'."""
    subjects = ["paris", "rome", "berlin", "madrid", "tokyo", "the sky", "the grass", "the sun"]
    out = []
    for i in range(n):
        s = subjects[i % len(subjects)]
        q = f"Is {s} {['red', 'blue', 'green', 'big'][i % 4]}?"
        out.append({"prompt": q, "chosen": " yes good", "rejected": " no bad"})
    return out
