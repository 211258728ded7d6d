"""The on-disk layout of fine-tuned models: ``save`` writes one, ``load`` reads it back.

Three kinds, told apart by ``adapter_type``:

- ``projection_head``: ``adapter.safetensors`` (the head's ``lora_A``/``lora_B``) and
  ``adapter_config.json``; the base model is loaded from ``base_model_path``.
- ``encoder_adapters``: the same two files, holding only the LoRA weights of the encoder.
- ``full``: a complete Hugging Face folder (safetensors weights, config, tokenizer, and the
  sentence-transformers files copied from the base) plus ``jammi_model.json``, so it loads
  with ``Encoder.from_folder`` and with ``SentenceTransformer`` alike.

Every folder carries ``format_version``; ``load`` refuses a version or type it does not know.
A folder is written under a temporary sibling name and renamed into place, so a crash never
leaves half a model. This is the only module that knows these file names and the layout of
the home folder (``jobs/<job_id>/`` while a job runs, ``models/<model_id>/`` once it succeeds).
It builds no engine objects: ``full`` models are written by a callback the engine passes.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads only when tensors are saved: the job runner imports this
    import torch

from ..errors import AlreadyExistsError, ArtifactError, InvalidArgumentError

FORMAT_VERSION = 1
ADAPTER_FILE = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
FULL_MARKER = "jammi_model.json"
JOB_MARKER = "jammi_job.json"  # which job published a models/<id> folder
CHECKPOINT_FILE = "checkpoint.pt"
ADAPTER_TYPES = ("projection_head", "encoder_adapters", "full")
REQUIRED_KEYS = {
    "projection_head": ("lora_rank", "lora_alpha", "head_layers"),
    "encoder_adapters": (
        "model_type",
        "lora_rank",
        "lora_alpha",
        "use_rslora",
        "target_modules",
        "layers_to_transform",
        "rank_pattern",
        "backbone_dtype",
    ),
    "full": (),
}
# Sentence-transformers files that describe how a folder is used (pooling, normalisation).
ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


@dataclass
class Artifact:
    """A fine-tuned model folder, read back: what ``load`` returns."""

    folder: Path
    adapter_type: str  # 'projection_head' | 'encoder_adapters' | 'full'
    config: dict  # the JSON file's content
    base_model_id: str | None = None
    base_model_path: str | None = None
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # empty for 'full'


# ---- save ----------------------------------------------------------------------------
def save(
    output_dir: str | Path,
    adapter_type: str,
    *,
    config: dict,
    base_model_id: str | None,
    base_model_path: str | Path | None,
    tensors: dict[str, torch.Tensor] | None = None,
    write_model: Callable[[Path], None] | None = None,
    describe: dict | None = None,
) -> Path:
    """Write a model folder atomically; returns ``output_dir``.

    ``config`` holds the adapter keys (see ``REQUIRED_KEYS``); ``tensors`` the adapter
    weights (adapter types). For 'full', ``write_model(folder)`` writes the Hugging Face
    weights, config and tokenizer, and ``describe`` (pooling, normalize, max_seq_length,
    do_lower_case, dimensions) says how to use a base that has no sentence-transformers files.
    """
    from safetensors.torch import save_file

    if adapter_type not in ADAPTER_TYPES:
        raise ValueError(f"unknown adapter_type {adapter_type!r}")
    missing = [k for k in REQUIRED_KEYS[adapter_type] if k not in config]
    if missing:
        raise ValueError(f"{adapter_type} config lacks {missing}")
    meta = {
        "adapter_type": adapter_type,
        **config,
        "base_model_id": base_model_id,
        "base_model_path": str(base_model_path) if base_model_path is not None else None,
        "format_version": FORMAT_VERSION,
    }
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_dir.parent / f".{output_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        if adapter_type == "full":
            if write_model is None:
                raise ValueError("saving a 'full' model needs write_model")
            write_model(tmp)
            _copy_st_files(tmp, base_model_path, describe or {})
            (tmp / FULL_MARKER).write_text(json.dumps(meta, indent=2))
        else:
            import torch

            weights = {
                k: v.detach().to("cpu", torch.float32).contiguous()
                for k, v in (tensors or {}).items()
            }
            if not weights:
                raise ValueError(f"saving a {adapter_type} needs its tensors")
            save_file(weights, str(tmp / ADAPTER_FILE), metadata={"format": "pt"})
            (tmp / ADAPTER_CONFIG).write_text(json.dumps(meta, indent=2))
        _replace_dir(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output_dir


def _copy_st_files(folder: Path, base_folder: str | Path | None, describe: dict) -> None:
    """The base's sentence-transformers files, or a description of the pooling it was used with."""
    base = Path(base_folder) if base_folder is not None else None
    modules_file = base / "modules.json" if base is not None else None
    if modules_file is not None and modules_file.exists():
        for name in ST_FILES:
            if (base / name).exists():
                shutil.copy2(base / name, folder / name)
        for module in json.loads(modules_file.read_text()):
            path = module.get("path", "")
            if path and (base / path).is_dir():
                shutil.copytree(base / path, folder / path, dirs_exist_ok=True)
    else:  # a plain Hugging Face base: describe the pooling it was used with
        _write_st_description(folder, describe)


def _write_st_description(folder: Path, d: dict) -> None:
    pooling = d.get("pooling", "mean")
    pooling_key = "pooling_mode_cls_token" if pooling == "cls" else f"pooling_mode_{pooling}_tokens"
    if pooling == "lasttoken":
        pooling_key = "pooling_mode_lasttoken"
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if d.get("normalize"):
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
        (folder / "2_Normalize").mkdir(exist_ok=True)
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": d.get("dimensions"), pooling_key: True}, indent=2)
    )
    (folder / "sentence_bert_config.json").write_text(
        json.dumps(
            {
                "max_seq_length": d.get("max_seq_length", 512),
                "do_lower_case": bool(d.get("do_lower_case")),
            }
        )
    )


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move ``tmp`` to ``target``; an existing ``target`` is swapped out first, then removed."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_target(path: str | Path, overwrite: bool) -> Path:
    """A folder a user asked to write to: absent, empty, or replaced with ``overwrite``; its
    parent must be a folder this process can write into. Returns it, absolute."""
    target = Path(path).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise AlreadyExistsError(f"'{path}' is a file; give the path of a folder to write")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise AlreadyExistsError(
            f"'{path}' exists and is not empty; choose another path or pass overwrite := true "
            "to replace it"
        )
    parent = next((p for p in [target.parent, *target.parent.parents] if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidArgumentError(
            f"cannot write '{path}': '{parent}' is not a folder this process may write into; "
            "choose a path under a writable folder"
        )
    return target


def write_folder(path: str | Path, fill: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Write a user's folder whole or not at all: ``fill(tmp)`` writes a temporary sibling,
    which is then renamed into place (replacing ``path`` only with ``overwrite``)."""
    target = check_target(path, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        fill(tmp)
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# ---- load ----------------------------------------------------------------------------
def load(folder: str | Path) -> Artifact:
    """Read a model folder written by :func:`save`; refuses versions and types it does not know."""
    from safetensors.torch import load_file

    folder = Path(folder)
    from . import peft

    if peft.is_peft_folder(folder):
        meta, tensors = peft.read(folder)
        return Artifact(folder, "encoder_adapters", meta, meta["base_model_id"], None, tensors)
    if (folder / ADAPTER_CONFIG).is_file():
        meta = _read_meta(folder / ADAPTER_CONFIG)
    elif (folder / FULL_MARKER).is_file():
        meta = _read_meta(folder / FULL_MARKER)
    else:
        raise ArtifactError(
            f"'{folder}' is not a fine-tuned model folder (no {ADAPTER_CONFIG} or {FULL_MARKER}); "
            "the model's files are missing: fine-tune it again or remove the model"
        )
    adapter_type = meta.get("adapter_type")
    if adapter_type not in ADAPTER_TYPES:
        raise ArtifactError(
            f"model folder '{folder}' has adapter_type {adapter_type!r}; this version of jammi-sql "
            f"reads {', '.join(ADAPTER_TYPES)}: upgrade jammi-sql or fine-tune again"
        )
    missing = [k for k in REQUIRED_KEYS[adapter_type] if k not in meta]
    if missing:
        raise ArtifactError(
            f"model folder '{folder}' is incomplete: its config lacks {', '.join(missing)}"
        )
    tensors: dict[str, torch.Tensor] = {}
    if adapter_type != "full":
        if not (folder / ADAPTER_FILE).is_file():
            raise ArtifactError(
                f"model folder '{folder}' has no {ADAPTER_FILE}; fine-tune it again"
            )
        tensors = load_file(str(folder / ADAPTER_FILE))
    return Artifact(
        folder=folder,
        adapter_type=adapter_type,
        config=meta,
        base_model_id=meta.get("base_model_id"),
        base_model_path=meta.get("base_model_path"),
        tensors=tensors,
    )


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"cannot read '{path}' ({e}); the model folder is damaged") from None
    version = meta.get("format_version", FORMAT_VERSION)  # the contract's examples omit it
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"model folder '{path.parent}' has format_version {version!r}; this version of "
            f"jammi-sql reads format_version {FORMAT_VERSION}: upgrade jammi-sql or fine-tune again"
        )
    return meta


def check_tensors(expected: set[str], art: Artifact) -> None:
    """The weights in a folder must be exactly those the model it describes expects."""
    if set(art.tensors) != expected:
        raise ArtifactError(
            f"the weights in '{art.folder}' do not fit the model they describe "
            f"({len(set(art.tensors) - expected)} unexpected, {len(expected - set(art.tensors))} "
            "missing); the folder is damaged or was written for another base model"
        )


# ---- the home folder -----------------------------------------------------------------
def job_dir(home: Path, job_id: str) -> Path:
    """Where a running job keeps its checkpoint and its not-yet-published output."""
    return Path(home) / "jobs" / job_id


def checkpoint_file(work_dir: Path) -> Path:
    """The one checkpoint of a job (replaced atomically as training goes on)."""
    return Path(work_dir) / CHECKPOINT_FILE


def job_output_dir(home: Path, job_id: str) -> Path:
    return job_dir(home, job_id) / "output"


def model_dir(home: Path, model_id: str) -> Path:
    return Path(home) / "models" / model_id


def publish(home: Path, job_id: str, model_id: str) -> Path:
    """Move a finished job's output to ``models/<model_id>`` (replacing one there); returns it."""
    target = model_dir(home, model_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    output = job_output_dir(home, job_id)
    (output / JOB_MARKER).write_text(json.dumps({"job_id": job_id, "model_id": model_id}))
    _replace_dir(output, target)
    return target


def published_by(folder: Path) -> str | None:
    """The id of the job that published a model folder (None if unknown)."""
    try:
        return json.loads((Path(folder) / JOB_MARKER).read_text()).get("job_id")
    except (OSError, ValueError, AttributeError):
        return None


def remove_job_files(home: Path, job_id: str, *, keep_checkpoint: bool = False) -> None:
    """A job's work folder, or only its partial output when the checkpoint is kept for a resume."""
    shutil.rmtree(
        job_output_dir(home, job_id) if keep_checkpoint else job_dir(home, job_id),
        ignore_errors=True,
    )


def remove_model_folder(home: Path, folder: Path) -> bool:
    """Delete a fine-tuned model's folder, but only one inside ``<home>/models``; whether it did."""
    models = (Path(home) / "models").resolve()
    folder = Path(folder).resolve()
    if folder == models or not folder.is_relative_to(models) or not folder.is_dir():
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True
