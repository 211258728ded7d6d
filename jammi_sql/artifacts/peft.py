"""PEFT's LoRA folder layout (``adapter_config.json`` with ``peft_type`` 'LORA' and
``adapter_model.safetensors``), read into and written from jammi's encoder adapters.

The two differ only in names: PEFT prefixes each weight with ``base_model.model.`` (and
sometimes the adapter's name, ``.default``), and describes the wrapped layers by patterns.
Written folders name every wrapped layer in full (``target_modules``, and ``rank_pattern`` for
those whose rank differs from ``r``), so PEFT matches exactly the layers jammi adapted; read
folders are taken from their weights' names and shapes the same way, so any PEFT pattern
(suffixes, regular expressions, ``layers_to_transform``) is understood without re-matching it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ArtifactError

if TYPE_CHECKING:
    import torch

CONFIG = "adapter_config.json"
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PREFIX = "base_model.model."


def is_peft_folder(folder: Path) -> bool:
    """A folder whose ``adapter_config.json`` is PEFT's (it names a ``peft_type``)."""
    try:
        return "peft_type" in json.loads((Path(folder) / CONFIG).read_text())
    except (OSError, ValueError, TypeError):
        return False


def base_model_name(folder: Path) -> str | None:
    """The base model the adapter was trained on, as PEFT recorded it."""
    return json.loads((Path(folder) / CONFIG).read_text()).get("base_model_name_or_path")


def check(folder: Path) -> dict:
    """The folder's config, if jammi can load it: a plain LoRA with its weights; a
    ``jammi:`` error naming what is missing or unsupported otherwise."""
    folder = Path(folder)
    config = json.loads((folder / CONFIG).read_text())
    unsupported = [
        what
        for what, bad in (
            (
                f"peft_type {config.get('peft_type')!r} (only 'LORA')",
                config.get("peft_type") != "LORA",
            ),
            ("use_dora", bool(config.get("use_dora"))),
            (f"bias {config.get('bias')!r}", config.get("bias", "none") != "none"),
            ("modules_to_save", bool(config.get("modules_to_save"))),
            ("alpha_pattern", bool(config.get("alpha_pattern"))),
            ("fan_in_fan_out", bool(config.get("fan_in_fan_out"))),
        )
        if bad
    ]
    if unsupported:
        raise ArtifactError(
            f"the PEFT adapter in '{folder}' uses {', '.join(unsupported)}, which jammi-sql does "
            "not load; merge it into the base (peft's merge_and_unload) and register the merged "
            "folder instead"
        )
    if not any((folder / name).is_file() for name in WEIGHTS):
        raise ArtifactError(
            f"the PEFT adapter folder '{folder}' has {CONFIG} but no {WEIGHTS[0]}; copy the "
            "adapter's weights file beside its config"
        )
    return config


def _module_name(key: str) -> tuple[str, str]:
    """``base_model.model.<module>.lora_A[.default].weight`` -> (module, 'lora_A')."""
    name = key.removeprefix(PREFIX)
    for part in ("lora_A", "lora_B"):
        for infix in (f".{part}.default.weight", f".{part}.weight"):
            if name.endswith(infix):
                return name[: -len(infix)], part
    raise ArtifactError(
        f"the PEFT adapter holds a weight '{key}' that is not a LoRA matrix of a linear layer; "
        "merge it into the base (peft's merge_and_unload) and register the merged folder instead"
    )


def read(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """A PEFT LoRA folder as jammi's ``encoder_adapters``: their config and weights."""
    folder = Path(folder)
    config = check(folder)
    if (folder / WEIGHTS[0]).is_file():
        from safetensors.torch import load_file

        raw = load_file(str(folder / WEIGHTS[0]))
    else:
        import torch

        raw = torch.load(folder / WEIGHTS[1], map_location="cpu", weights_only=True)
    tensors, ranks = {}, {}
    for key, value in raw.items():
        module, part = _module_name(key)
        tensors[f"{module}.{part}.weight"] = value.float()
        if part == "lora_A":
            ranks[module] = int(value.shape[0])
    r = int(config.get("r", 8))
    meta = {
        "adapter_type": "encoder_adapters",
        "model_type": None,  # PEFT does not record it; the weights' names must fit the base
        "lora_rank": r,
        "lora_alpha": float(config.get("lora_alpha", 8)),
        "use_rslora": bool(config.get("use_rslora", False)),
        "target_modules": sorted(ranks),
        "layers_to_transform": None,
        "rank_pattern": {m: k for m, k in ranks.items() if k != r},
        "backbone_dtype": "f32",
        "base_model_id": config.get("base_model_name_or_path"),
        "base_model_path": None,
        "format": "peft",
    }
    return meta, tensors


def write(folder: Path, cfg: dict, weights: dict[str, torch.Tensor], base_model: str) -> None:
    """Write jammi's encoder adapters (their config and weights, unmerged) as a PEFT LoRA
    folder into ``folder``."""
    from safetensors.torch import save_file

    ranks = {_module_name(k)[0]: int(v.shape[0]) for k, v in weights.items() if ".lora_A." in k}
    r = int(cfg["lora_rank"])
    tensors: dict[str, torch.Tensor] = {
        PREFIX + k: v.contiguous() for k, v in sorted(weights.items())
    }
    save_file(tensors, str(folder / WEIGHTS[0]), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA",
        "task_type": "FEATURE_EXTRACTION",
        "base_model_name_or_path": base_model,
        "r": r,
        "lora_alpha": float(cfg["lora_alpha"]),
        "use_rslora": bool(cfg.get("use_rslora", False)),
        "lora_dropout": 0.0,
        "target_modules": sorted(ranks),
        "rank_pattern": {m: k for m, k in sorted(ranks.items()) if k != r},
        "alpha_pattern": {},
        "layers_to_transform": None,
        "layers_pattern": None,
        "bias": "none",
        "fan_in_fan_out": False,
        "modules_to_save": None,
        "init_lora_weights": True,
        "use_dora": False,
        "inference_mode": True,
    }
    (folder / CONFIG).write_text(json.dumps(config, indent=2))
