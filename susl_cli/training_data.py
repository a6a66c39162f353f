"""The training data as model-ready tensors, and the per-epoch batches drawn from it.

Under DDP (susl_cli/distributed.py) every process draws the same global batches and
binarises them with the same draws; `shard_batch` then keeps its own rows.

Two ways to hold the rows, chosen before anything big is read (`plan_data`, shown in the
train summary): in memory (tensors on the training device), or streamed: the unlabelled rows
stay in the mask file and each step reads its batch (`StreamedRows`; under DDP each process
reads only its own rows of the global batch); the labelled rows, few, are held in memory.

Protocol: each step takes one unlabelled batch and one labelled batch (the small labelled set
is cycled); one epoch is one pass over the unlabelled points. Image batches are re-binarised
every step (x ~ Bernoulli(grey level)). Only observed labels are read here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from susl_cli.distributed import SINGLE, World
from susl_cli.label_evidence import LabelEvidence, estimate_label_evidence
from susl_cli.models import Batch
from susl_cli.models.shard import RowSpan, Shard, rows_of
from susl_cli.preprocess import InputTransform
from susl_cli.resources import device_memory, format_bytes
from susl_cli.run_meta import component_of_class
from susl_cli.runs import Run
from susl_cli.share_guard import unlabelled_targets
from susl_cli.storage.rows import MaskRows, train_layout

# Holding the data in memory takes about this many copies of the raw array: the array read
# from the file, the transformed one and its labelled / unlabelled split (on a GPU the last
# two sit in device memory).
IN_MEMORY_COPIES = 3
# Stream when holding the data would take more than this share of the free memory: the rest
# is for the model, its activations and the operating system's file cache.
DATA_MEMORY_SHARE = 0.5
# Block shuffle of streamed rows: blocks of one HDF5 chunk of rows are visited in random order
# and rows are shuffled within windows of about this many bytes of rows, at least
# MIN_WINDOW_BLOCKS blocks (StreamedRows.order); HDF5's chunk cache holds a window.
WINDOW_BYTES = 64 << 20
MIN_WINDOW_BLOCKS = 4


def window_blocks(block_rows: int, row_bytes: int, window_bytes: int = WINDOW_BYTES) -> int:
    """Blocks per shuffle window."""
    return max(MIN_WINDOW_BLOCKS, window_bytes // max(block_rows * row_bytes, 1))


@dataclass(frozen=True)
class DataPlan:
    """How a run holds its training rows, and the numbers that decided it."""

    streamed: bool
    source: str  # the mask file's name
    need_bytes: int  # what holding the rows in memory would take (estimate)
    free_bytes: int | None  # free memory where that would bind (None: the OS does not say)
    block_rows: int  # rows per shuffled block when streamed (one HDF5 chunk of rows)
    cache_bytes: int  # HDF5 chunk cache when streamed: a window of blocks
    forced: str | None = None  # "--stream" or "--no-stream" when the user chose

    def describe(self) -> str:
        free = "free memory unknown" if self.free_bytes is None else \
            f"{format_bytes(self.free_bytes)} free"
        forced = f"{self.forced}; " if self.forced else ""
        if self.streamed:
            return (f"streamed from {self.source} in blocks of {self.block_rows:,} rows "
                    f"({forced}in memory it needs ~{format_bytes(self.need_bytes)}, {free})")
        return f"in memory ({forced}needs ~{format_bytes(self.need_bytes)}, {free})"


def plan_data(mask_path: Path, device: torch.device, stream: bool | None) -> DataPlan:
    """Stream or hold in memory: the user's `stream` when given, else streamed when the rows
    would take more than DATA_MEMORY_SHARE of the free memory (read from the file's metadata;
    on a GPU the device's free memory counts too)."""
    n_rows, row_shape, chunk_rows = train_layout(mask_path)
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * 4  # float32
    raw = n_rows * row_bytes
    limits = [(IN_MEMORY_COPIES * raw, device_memory("cpu"))]
    if device.type == "cuda":
        limits.append(((IN_MEMORY_COPIES - 1) * raw, device_memory(device)))
    too_big = [(need, free) for need, free in limits
               if free is not None and need > DATA_MEMORY_SHARE * free]
    need, free = (too_big or limits)[0]
    forced = None if stream is None else ("--stream" if stream else "--no-stream")
    cache = (window_blocks(chunk_rows, row_bytes) + 1) * chunk_rows * row_bytes
    return DataPlan(bool(too_big) if stream is None else stream, Path(mask_path).name, need,
                    free, chunk_rows, cache, forced)


class StreamedRows:
    """The unlabelled training rows of a streamed run: left in the mask file, read per batch.

    Positions 0..N_u-1 index the unlabelled rows (`file_rows`, ascending rows of the file).
    Rows come back through the run's input transform, on the training device, as in memory.
    """

    def __init__(self, rows: MaskRows, file_rows: np.ndarray, transform: InputTransform,
                 device: torch.device, world: World = SINGLE,
                 window_bytes: int = WINDOW_BYTES) -> None:
        self.rows, self.file_rows = rows, file_rows
        self.transform, self.device, self.world = transform, device, world
        self.block_rows = rows.chunk_rows
        row_bytes = int(np.prod(rows.shape[1:], dtype=np.int64)) * 4  # float32
        self.window_blocks = window_blocks(self.block_rows, row_bytes, window_bytes)

    def __len__(self) -> int:
        return len(self.file_rows)

    def order(self, generator: torch.Generator) -> torch.Tensor:
        """One epoch's order of the positions: a block shuffle, drawn from `generator`.

        A full shuffle would read each row from a random place in the file: with compressed
        HDF5 chunks that decompresses a whole chunk (~1 MB of rows) per row read. Instead the
        blocks (the rows of one chunk) are visited in random order and rows are shuffled
        within windows of `window_blocks` blocks (~WINDOW_BYTES), so each chunk is
        decompressed once per epoch (the chunk cache holds a window). The price: a batch mixes
        rows of one window only, so rows stored near each other (a file sorted by class) share
        batches more often than under a full shuffle. Drawn from the epoch's seeded generator:
        the same order run to run, and on resume.
        """
        blocks = self.file_rows // self.block_rows
        starts = np.flatnonzero(np.r_[True, np.diff(blocks) > 0])  # first position per block
        ends = np.r_[starts[1:], len(self.file_rows)]
        visit = _randperm(len(starts), generator)
        pieces = []
        for w in range(0, len(visit), self.window_blocks):
            window = np.concatenate([np.arange(starts[b], ends[b])
                                     for b in visit[w:w + self.window_blocks]])
            pieces.append(window[_randperm(len(window), generator)])
        return torch.from_numpy(np.concatenate(pieces) if pieces else np.zeros(0, np.int64))

    def batch(self, positions: torch.Tensor) -> torch.Tensor:
        """The global batch at `positions`, (B, D). Under DDP only this process's rows (the
        ones `shard_batch` keeps) are read; the others' stay zero and are never used."""
        start, stop = rows_of(len(positions), self.world.rank, self.world.size)
        mine = self.read(positions[start:stop].cpu().numpy())
        if not self.world.distributed:
            return mine
        x = torch.zeros((len(positions), self.transform.output_dim), device=self.device)
        x[start:stop] = mine
        return x

    def chunks(self, size: int) -> Iterator[torch.Tensor]:
        """This process's share of the rows (all of them in one process), `size` at a time:
        for the end-of-epoch diagnostics, summed over the processes by `summed`."""
        start, stop = rows_of(len(self), self.world.rank, self.world.size)
        for first in range(start, stop, size):
            yield self.read(np.arange(first, min(first + size, stop)))

    def summed(self, tally: torch.Tensor) -> torch.Tensor:
        """Per-process counts from `chunks` added up over the processes."""
        if self.world.distributed:
            dist.all_reduce(tally)
        return tally

    def read(self, positions: np.ndarray) -> torch.Tensor:
        """The unlabelled rows at `positions`, transformed, on the training device."""
        raw = self.rows.take(self.file_rows[positions])
        return torch.from_numpy(self.transform.apply(raw)).to(self.device)


def _randperm(n: int, generator: torch.Generator) -> np.ndarray:
    return torch.randperm(n, generator=generator, device=generator.device).cpu().numpy()


@dataclass
class TrainingData:
    """Model-ready tensors on the training device (labels as component indices)."""

    x_labelled: torch.Tensor  # (N_l, D)
    y_labelled: torch.Tensor  # (N_l,) component index
    x_unlabelled: torch.Tensor | StreamedRows  # (N_u, D), or left in the mask file
    binarise: bool
    share_targets: torch.Tensor | None = None  # (n_labelled,) p_u(c), for the merge guard
    # (N_u,) the probability that each unlabelled row is new (of no labelled class), from the
    # labelled rows (susl_cli/label_evidence.py), when the objective weighs it; else None
    evidence_targets: torch.Tensor | None = None
    evidence: LabelEvidence | None = None

    def unlabelled_batch(self, idx: torch.Tensor) -> torch.Tensor:
        """The unlabelled rows at `idx` (a batch of `batch_indices`), (B, D)."""
        if isinstance(self.x_unlabelled, StreamedRows):
            return self.x_unlabelled.batch(idx)
        return self.x_unlabelled[idx]

    def evidence_batch(self, idx: torch.Tensor | None) -> torch.Tensor | None:
        """The label-evidence targets (P(new)) of the unlabelled rows at `idx`, (B,); None
        when the run does not use them."""
        if self.evidence_targets is None or idx is None:
            return None
        return self.evidence_targets[idx]

    def close(self) -> None:
        """Close the mask file a streamed run reads from (nothing to do in memory)."""
        if isinstance(self.x_unlabelled, StreamedRows):
            self.x_unlabelled.rows.close()


def prepare_data(run: Run, x_train: np.ndarray | MaskRows, y_observed: np.ndarray,
                 device: torch.device, world: World = SINGLE) -> TrainingData:
    """Apply the run's transform and split by the observed labels (-1 = unlabelled).

    `x_train` left on disk (MaskRows): the labelled rows are read into memory, the unlabelled
    ones are streamed (`StreamedRows`; `world`: this process's place under DDP).
    """
    labelled = np.flatnonzero(y_observed >= 0)
    unlabelled = np.flatnonzero(y_observed < 0)
    if isinstance(x_train, MaskRows):
        x_l = torch.from_numpy(run.transform.apply(x_train.take(labelled))).to(device)
        x_u: torch.Tensor | StreamedRows = StreamedRows(x_train, unlabelled, run.transform,
                                                        device, world)
    else:
        x = torch.from_numpy(run.transform.apply(x_train)).to(device)
        x_l = x[torch.from_numpy(labelled).to(device)]
        x_u = x[torch.from_numpy(unlabelled).to(device)]
    class_to_component = component_of_class(run.meta.labelled_classes)
    y = np.asarray([class_to_component[int(c)] for c in y_observed[labelled]], dtype=np.int64)
    mc = run.model_config
    targets = None
    if 0 < mc.n_labelled < mc.n_components and len(unlabelled):
        counts = np.bincount(y, minlength=mc.n_labelled)
        targets = torch.tensor(unlabelled_targets(mc.prior, counts, len(unlabelled)),
                               dtype=x_l.dtype, device=device)
    evidence = targets_u = None
    if run.model.objective.label_evidence and 0 < mc.n_labelled < mc.n_components \
            and len(unlabelled):
        evidence = evidence_for(x_l, y, x_u, mc.n_labelled, run.train_config.seed)
        targets_u = torch.from_numpy(1 - evidence.known).to(device=device, dtype=x_l.dtype)
    return TrainingData(x_l, torch.from_numpy(y).to(device), x_u,
                        mc.likelihood == "bernoulli", targets, targets_u, evidence)


def evidence_for(x_l: torch.Tensor, y: np.ndarray, x_u: torch.Tensor | StreamedRows,
                 n_labelled: int, seed: int) -> LabelEvidence:
    """label_evidence.estimate_label_evidence on the model-ready rows; a streamed run's
    unlabelled rows are read from the mask file as the estimate asks for them."""
    rows = _ReadRows(x_u) if isinstance(x_u, StreamedRows) else x_u.cpu().numpy()
    return estimate_label_evidence(x_l.cpu().numpy(), y, rows, n_labelled, seed)


class _ReadRows:
    """Positions of a streamed run's unlabelled rows -> transformed rows, as NumPy."""

    def __init__(self, rows: StreamedRows) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, positions: np.ndarray) -> np.ndarray:
        return self.rows.read(np.asarray(positions)).cpu().numpy()


def batch_indices(data: TrainingData, batch_u: int, batch_l: int,
                   generator: torch.Generator, device: torch.device) -> tuple[list, list]:
    """Unlabelled batches covering every point once; labelled batches cycled alongside.

    With no unlabelled data (fully labelled) an epoch is one pass over the labelled points.
    """
    n_u, n_l = len(data.x_unlabelled), len(data.x_labelled)
    if n_u == 0:
        perm = torch.randperm(n_l, generator=generator, device=device)
        labelled = list(perm.split(batch_l))
        return [None] * len(labelled), labelled
    if isinstance(data.x_unlabelled, StreamedRows):  # block-shuffled (StreamedRows.order)
        unlabelled = list(data.x_unlabelled.order(generator).split(batch_u))
    else:
        unlabelled = list(torch.randperm(n_u, generator=generator, device=device)
                          .split(batch_u))
    if n_l == 0:
        return unlabelled, [None] * len(unlabelled)
    needed = len(unlabelled) * batch_l
    repeats = math.ceil(needed / n_l)
    cycled = torch.cat([torch.randperm(n_l, generator=generator, device=device)
                        for _ in range(repeats)])[:needed]
    return unlabelled, list(cycled.split(batch_l))


def maybe_binarise(x: torch.Tensor, binarise: bool, generator: torch.Generator) -> torch.Tensor:
    return torch.bernoulli(x, generator=generator) if binarise else x


def shard_batch(batch: Batch, rank: int, world_size: int) -> Batch:
    """Process `rank`'s contiguous rows of each part of a global batch, with the Shard that
    says where they sit (a part may hold no rows of this process: its collectives still run)."""
    spans: dict[str, RowSpan | None] = {"labelled": None, "unlabelled": None}
    parts: dict[str, torch.Tensor | None] = {}
    if batch.x_labelled is not None and batch.y_labelled is not None:
        start, stop = rows_of(len(batch.x_labelled), rank, world_size)
        spans["labelled"] = RowSpan(start, len(batch.x_labelled))
        parts.update(x_labelled=batch.x_labelled[start:stop],
                     y_labelled=batch.y_labelled[start:stop])
    if batch.x_unlabelled is not None:
        start, stop = rows_of(len(batch.x_unlabelled), rank, world_size)
        spans["unlabelled"] = RowSpan(start, len(batch.x_unlabelled))
        parts["x_unlabelled"] = batch.x_unlabelled[start:stop]
        if batch.evidence_unlabelled is not None:
            parts["evidence_unlabelled"] = batch.evidence_unlabelled[start:stop]
    return dataclasses.replace(batch, **parts, shard=Shard(**spans))
