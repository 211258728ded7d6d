"""Questions written for documents by a local text-generation model (doc2query).

A model folder the user registered (``register_model``) that can generate text: a
sequence-to-sequence model (a doc2query T5 reads the passage and writes a question) or a causal
language model (it continues a prompt that holds the passage). The engine knows nothing of
sources or the catalog: texts in, questions out, progress through ``on_batch``.

Quality is the model's: a random or general-purpose model writes poor questions, and training
on them teaches nothing. The doc2query paper: Nogueira et al., "Document Expansion by Query
Prediction" (2019), arXiv:1904.08375.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError

from ..errors import ArtifactError, InvalidArgumentError
from ..inference.encoder import pick_device

# Architectures that generate text: encoder-decoders and decoder-only language models.
GENERATING = ("ForConditionalGeneration", "ForCausalLM", "LMHeadModel", "Seq2SeqLM")
CAUSAL_PROMPT = "Passage: {text}\nA question this passage answers:"
MAX_INPUT_TOKENS = 512
BATCH = 16  # documents per generate() call
# Sampling as doc2query-T5 does when several questions per document are asked for.
TOP_K, TOP_P = 10, 0.95
_LOADED: dict[str, Generator] = {}  # folder -> its generator (see load_generator)
_LOCK = threading.Lock()


def generation_kind(folder: Path) -> str | None:
    """'seq2seq', 'causal', or None when the folder's model cannot generate text."""
    config = json.loads((folder / "config.json").read_text())
    architectures = config.get("architectures") or []
    if not any(a.endswith(GENERATING) for a in architectures):
        return None
    return "seq2seq" if config.get("is_encoder_decoder") else "causal"


def load_generator(folder: Path) -> Generator:
    """The generator of a model folder, loaded once per process and shared by every call."""
    key = str(Path(folder).resolve())
    with _LOCK:
        generator = _LOADED.get(key)
        if generator is None:
            generator = _LOADED[key] = Generator(Path(folder))
        return generator


class Generator:
    """A text-generation model and its tokenizer, ready to write questions."""

    def __init__(self, folder: Path, device: torch.device | None = None):
        from ..hf import transformers

        AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, hf_logging = transformers(
            "AutoModelForCausalLM", "AutoModelForSeq2SeqLM", "AutoTokenizer", "utils.logging"
        )

        kind = generation_kind(folder)
        if kind is None:
            raise InvalidArgumentError(
                f"the model in {folder} cannot generate text (its config names no "
                "...ForConditionalGeneration, ...ForCausalLM or ...LMHeadModel architecture); "
                "register a text-generation model folder, e.g. a doc2query T5"
            )
        self.kind, self.device = kind, device or pick_device()
        hf_logging.disable_progress_bar()  # no "Loading weights" bars in query output
        loader = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
            self.model = loader.from_pretrained(str(folder)).to(self.device).eval()
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ArtifactError(
                f"cannot load the text-generation model in {folder} ({reason[:200]}); the folder "
                "needs config.json, its weights (model.safetensors or pytorch_model.bin) and its "
                "tokenizer files, as save_pretrained writes them: register a complete folder"
            ) from e
        if self.tokenizer.pad_token is None:  # GPT-style tokenizers have none
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left" if kind == "causal" else "right"
        limit = getattr(self.tokenizer, "model_max_length", MAX_INPUT_TOKENS) or MAX_INPUT_TOKENS
        self.max_input = min(limit, MAX_INPUT_TOKENS)

    @torch.inference_mode()
    def questions(
        self,
        texts: list[str],
        per_text: int = 1,
        max_new_tokens: int = 32,
        prompt: str | None = None,
        seed: int = 42,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[list[str]]:
        """For each text, up to ``per_text`` distinct non-empty questions.

        One question per text is greedy (the model's likeliest); several are sampled (top-k 10,
        top-p 0.95), seeded so that a second run writes the same ones.
        """
        if prompt is None:
            prompt = "{text}" if self.kind == "seq2seq" else CAUSAL_PROMPT
        sampling = {"do_sample": True, "top_k": TOP_K, "top_p": TOP_P} if per_text > 1 else {}
        torch.manual_seed(seed)
        out: list[list[str]] = []
        for start in range(0, len(texts), BATCH):
            chunk = texts[start : start + BATCH]
            inputs = self.tokenizer(
                [prompt.replace("{text}", t) for t in chunk],
                truncation=True,
                max_length=self.max_input,
                padding=True,
                return_tensors="pt",
            ).to(self.device)
            generated = self.model.generate(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                max_new_tokens=max_new_tokens,
                num_return_sequences=per_text,
                **sampling,
                pad_token_id=self.tokenizer.pad_token_id,
            )
            if self.kind == "causal":  # the prompt comes back first: keep what was written
                generated = generated[:, inputs["input_ids"].shape[1] :]
            decoded = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
            for i in range(len(chunk)):
                mine = [_first_line(q) for q in decoded[i * per_text : (i + 1) * per_text]]
                out.append(list(dict.fromkeys(q for q in mine if q)))
            if on_batch is not None:
                on_batch(len(chunk))
        return out


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""
