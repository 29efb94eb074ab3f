"""
A training data stream that can resume exactly: which images a batch holds, and how each image is
augmented, depend only on (seed, batch number), never on when the run was interrupted or on
``DATALOADER.NUM_WORKERS``.

Shape shorthand: S images in the dataset, B images per process and batch, W processes.
"""

import contextlib
import hashlib
import logging
import random
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data.build import trivial_batch_collator, worker_init_reset_seed
from detectron2.data.common import DatasetFromList
from detectron2.utils import comm
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["ResumableBatchSampler", "SeededMapDataset", "seeded_rng", "build_resumable_loader"]

logger = logging.getLogger(__name__)

Item = Tuple[int, int]  # (RNG seed of this sample, dataset index)


def _derive_seed(*values: int) -> int:
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0])


class ResumableBatchSampler(Sampler):
    """
    Infinite stream of batches for one process, each a list of B ``(sample seed, index)`` items.

    The global image stream is epoch after epoch of a permutation of range(S), epoch e shuffled by
    a generator seeded with (seed, e); position p of that stream goes to process p % W. Like
    detectron2's aspect-ratio grouping, each process fills one bucket for landscape (w > h) and one
    for portrait images and emits a bucket when it holds B items (``group_ids`` None: one bucket).
    The sample seed of position p is derived from (seed, p): it seeds the augmentation of that
    image (see :class:`SeededMapDataset`).

    With ``repeat_factors`` (one non-negative float per image, as detectron2's
    ``RepeatFactorTrainingSampler`` computes them for class imbalance), each epoch holds image i
    floor(r_i) times, plus once more with probability frac(r_i), drawn from (seed, epoch) before
    shuffling: detectron2's stochastic rounding, replayed exactly on resume. With
    ``subset_ratio`` (detectron2's ``RandomSubsetTrainingSampler``), only a random subset of
    int(S x ratio) images, drawn once from the seed, is sampled.

    ``skip(n)`` makes the next iteration start after the first n batches; those are replayed on
    indices only, so no skipped image is read. ``state_dict`` holds what must not change for the
    replay to be exact (seed, S, B, W, the repeat factors' digest); ``load_state_dict`` restores
    the seed.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        *,
        seed: int,
        shuffle: bool = True,
        group_ids: Optional[Sequence[int]] = None,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        repeat_factors: Optional[Sequence[float]] = None,
        subset_ratio: Optional[float] = None,
    ):
        if size <= 0:
            raise ValueError(f"cannot sample from an empty dataset (size {size})")
        if batch_size <= 0:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        self.size, self.batch_size, self.seed, self.shuffle = size, batch_size, int(seed), shuffle
        self.group_ids = None if group_ids is None else list(group_ids)
        self.rank = comm.get_rank() if rank is None else rank
        self.world_size = comm.get_world_size() if world_size is None else world_size
        self.start_batch = 0
        self.repeat_factors = None
        if repeat_factors is not None:
            factors = torch.as_tensor(repeat_factors, dtype=torch.float64)
            if factors.shape != (size,) or not bool((factors >= 0).all()) or factors.sum() <= 0:
                raise ValueError(f"repeat factors must be {size} non-negative numbers, not all 0")
            self.repeat_factors = factors
        if subset_ratio is not None and not (0 < subset_ratio <= 1 and int(size * subset_ratio)):
            raise ValueError(f"subset ratio {subset_ratio} keeps no image of {size}")
        self.subset_ratio = subset_ratio

    def _factors(self) -> Optional[torch.Tensor]:
        """Per-image repeat factors: the given ones, times the subset's 0/1 mask (drawn from
        the seed, so a resumed run restores it with the seed)."""
        if self.subset_ratio is None:
            return self.repeat_factors
        g = torch.Generator()
        # epochs use (seed, e); (seed, 0, 1) is none of them (trailing zeros would be: numpy
        # pads seed sequences with zeros)
        g.manual_seed(_derive_seed(self.seed, 0, 1))
        mask = torch.zeros(self.size, dtype=torch.float64)
        mask[torch.randperm(self.size, generator=g)[: int(self.size * self.subset_ratio)]] = 1.0
        return mask if self.repeat_factors is None else mask * self.repeat_factors

    def skip(self, num_batches: int) -> None:
        """The next ``iter(self)`` starts with batch ``num_batches`` (0-based)."""
        self.start_batch = int(num_batches)

    def _epoch(self, epoch: int, factors: Optional[torch.Tensor]) -> List[int]:
        g = torch.Generator()
        g.manual_seed(_derive_seed(self.seed, epoch))
        if factors is None:
            indices = torch.arange(self.size)
        else:  # stochastic rounding of the factors, then the epoch's order
            whole = torch.floor(factors)
            counts = whole + (
                torch.rand(self.size, generator=g, dtype=torch.float64) < (factors - whole)
            )
            indices = torch.repeat_interleave(torch.arange(self.size), counts.long())
        if not self.shuffle:
            return indices.tolist()
        return indices[torch.randperm(len(indices), generator=g)].tolist()

    def _batches(self) -> Iterator[List[Item]]:
        """Batches of (stream position, index); positions become seeds only for used batches."""
        buckets: Dict[int, List[Item]] = {}
        epoch, offset = 0, 0  # offset: stream position of the epoch's first image
        factors = self._factors()
        while True:
            order = self._epoch(epoch, factors)
            # this process's positions p = offset + j are those with p % W == rank
            start = (self.rank - offset) % self.world_size
            for j in range(start, len(order), self.world_size):
                index = order[j]
                group = 0 if self.group_ids is None else self.group_ids[index]
                bucket = buckets.setdefault(group, [])
                bucket.append((offset + j, index))
                if len(bucket) == self.batch_size:
                    yield bucket[:]
                    del bucket[:]
            epoch, offset = epoch + 1, offset + len(order)

    def __iter__(self) -> Iterator[List[Item]]:
        batches = self._batches()
        for _ in range(self.start_batch):
            next(batches)
        for batch in batches:
            yield [(_derive_seed(self.seed, p), index) for p, index in batch]

    def _factors_digest(self) -> str:
        if self.repeat_factors is None and self.subset_ratio is None:
            return "none"
        data = b"" if self.repeat_factors is None else self.repeat_factors.numpy().tobytes()
        return hashlib.sha256(data + repr(self.subset_ratio).encode()).hexdigest()[:16]

    def state_dict(self) -> Dict[str, Any]:
        return {
            "seed": self.seed,
            "size": self.size,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "repeat_factors": self._factors_digest(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        mine = self.state_dict()
        keys = ("size", "batch_size", "world_size", "repeat_factors")
        state = {"repeat_factors": "none", **state}  # checkpoints from before repeat factors
        changed = [f"{k} {state[k]} -> {mine[k]}" for k in keys if state[k] != mine[k]]
        if changed:
            logger.warning(
                "the data stream differs from the checkpoint's (" + ", ".join(changed) + "): "
                "training resumes, but not with the batches an uninterrupted run would have seen"
            )


@contextlib.contextmanager
def seeded_rng(seed: int):
    """Seed python's, numpy's and torch's (CPU) global RNGs inside the block; restore them after."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class SeededMapDataset(Dataset):
    """
    ``dataset[(sample_seed, index)]`` = ``map_func(records[index])`` with every global RNG seeded
    with ``sample_seed``, so random augmentations repeat exactly for a stream position, whichever
    worker process maps it.
    """

    def __init__(self, records: Sequence[Dict[str, Any]], map_func: Callable):
        self.records = DatasetFromList(list(records), copy=False, serialize=True)
        self.map_func = map_func

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: Item):
        sample_seed, index = item
        record = self.records[index]
        with seeded_rng(sample_seed):
            mapped = self.map_func(record)
        if mapped is None:
            raise ValueError(
                f"the mapper returned None for {record.get('file_name')!r}; the resumable loader "
                "needs every image mapped (drop bad records before training instead)"
            )
        return mapped


def _group_ids(records: Sequence[Dict[str, Any]]) -> Optional[List[int]]:
    if not all("width" in r and "height" in r for r in records):
        return None
    return [0 if r["width"] > r["height"] else 1 for r in records]


def build_resumable_loader(
    records: Sequence[Dict[str, Any]],
    mapper: Callable,
    *,
    total_batch_size: int,
    seed: int,
    num_workers: int = 0,
    aspect_ratio_grouping: bool = True,
    repeat_factors: Optional[Sequence[float]] = None,
    subset_ratio: Optional[float] = None,
) -> DataLoader:
    """
    Training loader over ``records`` (detectron2 dataset dicts): batches of B = total / W mapped
    records (lists, not collated). Its ``batch_sampler`` is a :class:`ResumableBatchSampler`
    (with ``repeat_factors`` and ``subset_ratio``: see there).
    """
    world = comm.get_world_size()
    if total_batch_size % world:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH={total_batch_size} is not divisible by the {world} processes"
        )
    sampler = ResumableBatchSampler(
        len(records),
        total_batch_size // world,
        seed=seed,
        group_ids=_group_ids(records) if aspect_ratio_grouping else None,
        repeat_factors=repeat_factors,
        subset_ratio=subset_ratio,
    )
    return DataLoader(
        SeededMapDataset(records, mapper),
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=trivial_batch_collator,
        worker_init_fn=worker_init_reset_seed,
    )
