"""What a run records about itself besides its configs and weights, and the rule that ties its
first components to the labelled classes.

`RunMeta` is stored in the checkpoint's `meta` JSON attribute under the same keys as always
(`to_dict` / `from_dict`), so checkpoints written before it load unchanged: a key an older
susl did not write gets its default, a key this susl does not know is kept and written back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Checkpoint keys beside the run's own metadata (written by runs.save_run, not part of it).
CHECKPOINT_KEYS = ("model_config", "objective_config", "train_config", "epoch",
                   "n_history_epochs")


@dataclass
class RunMeta:
    """The identity of a run's data and what training and discovery decided along the way."""

    mask_file: str                              # absolute path of the mask trained on
    mask_sha256: str                            # its bytes: a replaced mask is refused
    class_names: list[str]                      # every class of the dataset, by class id
    labelled_classes: list[int]                 # in component order (`component_classes`)
    seed: int                                   # the training seed
    model: str | None = None                    # the model's registry name
    dataset: str | None = None                  # built-in name or the user file's name
    regime: str | None = None                   # US, SS or SUS
    label_source: str = "masked"                # masked (drawn by susl) or as-given
    n_classes: int = 0                          # 0: len(class_names)
    hidden_classes: list[int] = field(default_factory=list)
    input_kind: str | None = None               # "image" or "vector"
    susl_version: str | None = None             # the susl that started the run
    completed: bool | None = None               # all planned epochs finished (None: the
                                                # run was never saved yet)
    discovery: dict[str, Any] | None = None     # discover.Discovery.to_json(), once stored
    share_multipliers: list[float] | None = None  # the merge guard's state, once started
    share_average: list[float] | None = None    # ... and its moving average of the share
    auto_choice: list[str] | None = None        # settings chosen by data size, and why
    world_size: int | None = None               # processes of the last training session
                                                # (torchrun; None: not recorded, one)
    data_path: str | None = None                # how the last training session held the
                                                # rows: in memory or streamed, and why
    label_evidence: str | None = None           # what the labelled rows said about the
                                                # unlabelled ones (label_evidence.py), if used
    unknown: dict[str, Any] = field(default_factory=dict)  # keys of a newer susl, kept

    def __post_init__(self) -> None:
        if not self.n_classes:
            self.n_classes = len(self.class_names)

    @property
    def n_labelled(self) -> int:
        return len(self.labelled_classes)

    def labelled_names(self) -> list[str]:
        """Names of the labelled classes, in component order."""
        return [str(self.class_names[c]) for c in self.labelled_classes]

    def component_classes(self, n_components: int) -> np.ndarray:
        """(K,) the class id of each component: the labelled ones, then -1 (see below)."""
        return component_classes(self.labelled_classes, n_components)

    def to_dict(self) -> dict[str, Any]:
        """The JSON the checkpoint stores: the keys susl has always written (optional ones
        only once set), plus the unknown keys read from the file."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "unknown"}
        for name in ("discovery", "share_multipliers", "share_average", "auto_choice",
                     "world_size", "data_path", "label_evidence"):
            if data[name] is None:
                del data[name]
        return {**self.unknown, **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunMeta:
        """Read the checkpoint's metadata; KeyError, TypeError or ValueError when a key every
        susl checkpoint has is missing or of the wrong type (the caller names the file)."""
        known = {f.name for f in dataclasses.fields(cls)} - {"unknown"}
        unknown = {k: v for k, v in data.items() if k not in known and k not in CHECKPOINT_KEYS}
        multipliers = data.get("share_multipliers")
        average = data.get("share_average")
        discovery = data.get("discovery")
        return cls(
            mask_file=_text(data["mask_file"]), mask_sha256=_text(data["mask_sha256"]),
            class_names=[str(n) for n in data["class_names"]],
            labelled_classes=[int(c) for c in data["labelled_classes"]],
            seed=int(data["seed"]),
            model=_optional_text(data.get("model")), dataset=_optional_text(data.get("dataset")),
            regime=_optional_text(data.get("regime")),
            label_source=str(data.get("label_source") or "masked"),
            n_classes=int(data.get("n_classes") or 0),
            hidden_classes=[int(c) for c in data.get("hidden_classes") or []],
            input_kind=_optional_text(data.get("input_kind")),
            susl_version=_optional_text(data.get("susl_version")),
            completed=bool(data.get("completed", False)),
            discovery=dict(discovery) if isinstance(discovery, Mapping) else None,
            share_multipliers=(None if multipliers is None
                               else [float(m) for m in multipliers]),
            share_average=None if average is None else [float(a) for a in average],
            auto_choice=None if data.get("auto_choice") is None else list(data["auto_choice"]),
            world_size=None if data.get("world_size") is None else int(data["world_size"]),
            data_path=_optional_text(data.get("data_path")),
            label_evidence=_optional_text(data.get("label_evidence")),
            unknown=unknown,
        )


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


def component_classes(labelled_classes: Sequence[int], n_components: int) -> np.ndarray:
    """(K,) the class each component stands for: component j < L is the j-th labelled class
    (the L = len(labelled_classes) labelled classes, in order), the others stand for no
    known class (-1). The one statement of this rule: training ties labelled points to their
    components by it, and every reader of a run maps components back by it."""
    labelled = [int(c) for c in labelled_classes]
    if len(labelled) > n_components:
        raise ValueError(f"{len(labelled)} labelled classes but only {n_components} components")
    classes = np.full(n_components, -1, dtype=np.int64)
    classes[:len(labelled)] = labelled
    return classes


def component_of_class(labelled_classes: Sequence[int]) -> dict[int, int]:
    """class id -> its component, for the labelled classes (the inverse of the rule above)."""
    classes = component_classes(labelled_classes, len(labelled_classes))
    return {int(c): j for j, c in enumerate(classes)}
