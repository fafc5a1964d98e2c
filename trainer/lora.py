"""LoRA adapters (through ``peft``): the small trained delta the repository ships instead of a model.

Training wraps the encoder's backbone so that only the low-rank matrices train; the adapter directory
``peft`` writes (``adapter_config.json`` + ``adapter_model.safetensors``) is a few MB, and ``merge``
folds it back into plain weights, so export, ONNX and serving never see LoRA at all.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from trainer.config import LoraConfig
from trainer.modeling import SentenceEncoder

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Every linear layer of a BERT block: attention query/key/value, and the three "dense" projections
# (attention output, feed-forward in and out).
BERT_LINEAR_MODULES = ("query", "key", "value", "dense")


def apply_lora(encoder: SentenceEncoder, settings: LoraConfig) -> SentenceEncoder:
    """Wrap ``encoder.backbone`` in a peft model: everything but the LoRA matrices is frozen."""
    from peft import LoraConfig as PeftLoraConfig, get_peft_model

    config = PeftLoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(settings.target_modules or BERT_LINEAR_MODULES), bias="none")
    encoder.backbone = get_peft_model(encoder.backbone, config)
    return encoder


def is_lora(encoder: SentenceEncoder) -> bool:
    from peft import PeftModel

    return isinstance(encoder.backbone, PeftModel)


def save_adapter(encoder: SentenceEncoder, directory: str | Path, settings: LoraConfig, record: dict | None = None) -> Path:
    """Write the adapter (peft's own format) and, beside it, ``training.json`` (how it was made).

    With ``save_dtype: float16`` the in-memory adapter is rounded to what was written, so a model merged
    now equals one merged later from the file (``load_adapter``, what ``make model`` does)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = None
    if settings.save_dtype == "float16":
        from peft import get_peft_model_state_dict

        for name, parameter in encoder.backbone.named_parameters():
            if "lora_" in name:
                parameter.data = parameter.data.to(torch.float16).float()
        state = {k: v.detach().to(torch.float16) for k, v in get_peft_model_state_dict(encoder.backbone).items()}
    encoder.backbone.save_pretrained(str(out), state_dict=state)
    (out / "README.md").unlink(missing_ok=True)  # peft's empty model-card template
    config_file = out / ADAPTER_CONFIG  # name the base model, not this machine's path to its checkpoint
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = encoder.base_model
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if record is not None:
        (out / "training.json").write_text(json.dumps({"base_model": encoder.base_model, **record}, indent=2,
                                                      ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def merge(encoder: SentenceEncoder) -> SentenceEncoder:
    """Fold the LoRA matrices into the base weights and drop the wrapper (W + B·A·alpha/r)."""
    if is_lora(encoder):
        encoder.backbone = encoder.backbone.merge_and_unload()
    return encoder


def load_adapter(encoder: SentenceEncoder, directory: str | Path) -> SentenceEncoder:
    """Apply a saved adapter to ``encoder`` (the base it was trained on) and merge it."""
    from peft import PeftModel

    path = Path(directory)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path}: not a LoRA adapter directory ({name} is missing)")
    encoder.backbone = PeftModel.from_pretrained(encoder.backbone, str(path), torch_dtype=torch.float32)
    for parameter in encoder.backbone.parameters():  # float16 on disk: merge in float32
        parameter.data = parameter.data.float()
    return merge(encoder)
