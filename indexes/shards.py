"""One FAISS index per language ("shard"), inner product over L2-normalised vectors (= cosine).

Index types:
- ``flat``: exact (``IDMap2,Flat``), removes in place.
- ``hnsw``: graph (``IDMap2,HNSW32,Flat``). HNSW cannot remove vectors, so removed keys are kept as
  *stale* and filtered out of results; the shard is rebuilt once they pass a fifth of its size.
- ``ivf``: inverted lists (``IVF<nlist>,Flat``) once a shard holds ``IVF_MIN_SIZE`` vectors (k-means
  needs data to train on); smaller shards stay exact. Retrained when the shard outgrows its lists.

A shard file is a cache of the store: the collection checks its keys against the store on open.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import faiss
import numpy as np

from encoder.files import atomic_path

SHARD_TYPES = ("flat", "hnsw", "ivf")
# "auto": flat shards while the collection is small, ivf shards once it is large (shard_type_for)
INDEX_TYPES = ("auto",) + SHARD_TYPES
# A search visits every language's shard, so flat's cost is the collection's total, not one shard's: flat
# is exact and fast enough up to ~300k passages in all, ivf above (docs/indexes.md, "Which index type by size").
AUTO_IVF_FROM = 300_000
AUTO_FLAT_BELOW = 200_000  # back to flat only well below: deletes around the threshold do not rebuild twice
STRUCTURES = {"flat": {"flat"}, "hnsw": {"hnsw"}, "ivf": {"flat", "ivf"}}  # what a shard of each type may be
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
HNSW_STALE_SHARE = 0.2  # rebuild an HNSW shard when this share of its graph is deleted documents
IVF_MIN_SIZE = 10_000
IVF_NPROBE_SHARE = 1 / 8  # lists probed per query, as a share of nlist (at least IVF_MIN_NPROBE)
IVF_MIN_NPROBE = 8


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run FAISS calls of the current thread without OpenMP (a per-thread setting). One query gains nothing
    from a thread team, and waking one on busy cores costs up to ~100 ms (measured p99 on 2 loaded cores)."""
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def check_index_type(index_type: str) -> str:
    if index_type not in INDEX_TYPES:
        raise ValueError(f"index_type must be one of {', '.join(INDEX_TYPES)}, got {index_type!r}")
    return index_type


def shard_type_for(index_type: str, total: int, current: str | None = None) -> str:
    """The shard type a collection of ``index_type`` uses at ``total`` passages (``current``: the type its
    shards have now)."""
    if index_type != "auto":
        return index_type
    if total >= AUTO_IVF_FROM or (current == "ivf" and total >= AUTO_FLAT_BELOW):
        return "ivf"
    return "flat"


def _ivf_lists(n: int) -> int:
    return int(min(65536, max(16, round(math.sqrt(n)))))


class Shard:
    def __init__(self, index_type: str, dim: int, index: faiss.Index) -> None:
        if index_type not in SHARD_TYPES:
            raise ValueError(f"a shard's type is one of {', '.join(SHARD_TYPES)}, got {index_type!r}")
        self.index_type = index_type  # what the collection asked for
        self.dim = dim
        self.index = index  # never replaced: a new structure is a new Shard
        # Unwrapped once: faiss.downcast_index walks a chain of isinstance checks, and per-shard calls on
        # every search cost ~7 % of a loaded service's busy time (py-spy, /search at c=32, 12 shards).
        self._outer = outer = faiss.downcast_index(index)
        self._inner_index = faiss.downcast_index(outer.index) if isinstance(outer, faiss.IndexIDMap2) else outer
        self._structure = ("hnsw" if isinstance(self._inner_index, faiss.IndexHNSW)
                           else "ivf" if isinstance(self._inner_index, faiss.IndexIVF) else "flat")
        self._storage = faiss.downcast_index(self._inner_index.storage) if self._structure == "hnsw" else self._inner_index
        self.stale: set[int] = set()  # hnsw only: keys still in the graph but no longer in the store
        self._stale_array = np.zeros(0, dtype=np.int64)
        self.version = 0  # bumped by every add/remove: caches of derived numbers key on it
        self._configure()

    # --- construction ------------------------------------------------------------------------------------

    @classmethod
    def empty(cls, index_type: str, dim: int) -> "Shard":
        return cls(index_type, dim, cls._new_index(index_type, dim, 0))

    @classmethod
    def build(cls, index_type: str, dim: int, keys: np.ndarray, vectors: np.ndarray) -> "Shard":
        index = cls._new_index(index_type, dim, len(keys))
        if not index.is_trained:
            index.train(vectors)
        shard = cls(index_type, dim, index)
        shard.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(keys, dtype=np.int64))
        return shard

    @staticmethod
    def _new_index(index_type: str, dim: int, n: int) -> faiss.Index:
        metric = faiss.METRIC_INNER_PRODUCT
        if index_type == "hnsw":
            index = faiss.index_factory(dim, f"IDMap2,HNSW{HNSW_M},Flat", metric)
            faiss.downcast_index(index.index).hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            return index
        if index_type == "ivf" and n >= IVF_MIN_SIZE:
            return faiss.index_factory(dim, f"IVF{_ivf_lists(n)},Flat", metric)
        return faiss.index_factory(dim, "IDMap2,Flat", metric)

    @classmethod
    def load(cls, path: Path, index_type: str, dim: int) -> "Shard":
        index = faiss.read_index(str(path))
        if index.d != dim:
            raise ValueError(f"shard {path} has dimension {index.d}, expected {dim}")
        shard = cls(index_type, dim, index)
        if shard.structure not in STRUCTURES[index_type]:
            raise ValueError(f"shard {path} is {shard.structure}, the collection is {index_type}")
        return shard

    def save(self, path: Path) -> None:
        """Atomic: write a temporary file, fsync, rename over the old one."""
        with atomic_path(path) as tmp:
            faiss.write_index(self.index, str(tmp))

    def _configure(self) -> None:
        inner = self._inner_index
        if isinstance(inner, faiss.IndexHNSW):
            inner.hnsw.efSearch = HNSW_EF_SEARCH
        elif isinstance(inner, faiss.IndexIVF):
            inner.nprobe = min(inner.nlist, max(IVF_MIN_NPROBE, round(inner.nlist * IVF_NPROBE_SHARE)))
            if inner.direct_map.type != faiss.DirectMap.Hashtable:  # vectors(keys) reconstructs by key
                inner.set_direct_map_type(faiss.DirectMap.Hashtable)

    @property
    def structure(self) -> str:
        """What the shard actually is: flat, hnsw or ivf."""
        return self._structure

    # --- contents ----------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.index.ntotal) - len(self.stale)

    def all_keys(self) -> np.ndarray:
        """Every key in the FAISS index, stale ones included."""
        inner = self._inner_index
        if isinstance(inner, faiss.IndexIVF):
            lists = inner.invlists
            parts = [
                faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                for i in range(inner.nlist)
                if lists.list_size(i)
            ]
            return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return faiss.vector_to_array(self._outer.id_map).astype(np.int64)

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        if len(keys):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(keys, dtype=np.int64))
            self.version += 1

    def remove(self, keys) -> None:
        keys = np.asarray(list(keys), dtype=np.int64)
        if not len(keys):
            return
        self.version += 1
        structure = self.structure
        if structure == "hnsw":
            self.stale.update(int(key) for key in keys)
            self._stale_array = np.fromiter(self.stale, dtype=np.int64, count=len(self.stale))
        elif structure == "ivf":  # the hashtable direct map only takes an array selector
            self.index.remove_ids(faiss.IDSelectorArray(len(keys), faiss.swig_ptr(keys)))
        else:
            self.index.remove_ids(faiss.IDSelectorBatch(keys))

    def vectors(self, keys: np.ndarray) -> np.ndarray:
        """The stored vectors of ``keys`` (each must be in the shard), shape (len(keys), dim)."""
        keys = np.ascontiguousarray(keys, dtype=np.int64)
        if not len(keys):
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.index.reconstruct_batch(keys)

    def storage_keys(self) -> np.ndarray:
        """The key of each row of ``stored_vectors()`` (flat and hnsw: FAISS's id map, in storage order)."""
        inner = self._inner_index
        if isinstance(inner, faiss.IndexIVF):
            return self.all_keys()
        return faiss.vector_to_array(self._outer.id_map).astype(np.int64)

    def stored_vectors(self) -> np.ndarray:
        """Every vector the FAISS index holds (stale ones included), in no particular order. For flat and
        hnsw a view of FAISS's own storage (valid until the next write), no copy."""
        inner = self._inner_index
        if isinstance(inner, faiss.IndexIVF):
            return self.vectors(self.all_keys())
        storage = self._storage
        total = int(storage.ntotal)
        if total == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return faiss.rev_swig_ptr(storage.get_xb(), total * self.dim).reshape(total, self.dim)

    def needs_rebuild(self) -> bool:
        structure, live = self.structure, len(self)
        if structure == "hnsw":
            return len(self.stale) > max(64, HNSW_STALE_SHARE * self.index.ntotal)
        if self.index_type == "ivf":
            if structure == "flat":
                return live >= IVF_MIN_SIZE
            nlist = self._inner_index.nlist
            return live < IVF_MIN_SIZE // 2 or _ivf_lists(live) >= 2 * nlist
        return False

    # --- search ------------------------------------------------------------------------------------------

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` live (scores, keys) for one query of shape (1, dim), best first."""
        live = len(self)
        if live == 0 or k <= 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        structure = self.structure
        if structure == "hnsw" and k >= live:
            scores, keys = self._hnsw_exhaustive(query)  # the graph may not reach every node; scan instead
        elif structure == "ivf" and k >= live:
            inner = self._inner_index  # probe every list: exact, like flat/hnsw for k >= size
            fetch = min(int(self.index.ntotal), k)
            scores, keys = self.index.search(query, fetch, params=faiss.SearchParametersIVF(nprobe=inner.nlist))
        else:
            fetch = min(int(self.index.ntotal), k + len(self.stale))
            scores, keys = self.index.search(query, fetch)
        scores, keys = scores[0], keys[0]
        keep = keys >= 0
        if self.stale:
            keep &= ~np.isin(keys, self._stale_array)
        return scores[keep][:k], keys[keep][:k]

    def _hnsw_exhaustive(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        storage = self._storage
        total = int(storage.ntotal)
        scores, positions = storage.search(query, total)
        id_map = faiss.vector_to_array(self._outer.id_map)
        keys = np.where(positions >= 0, id_map[np.clip(positions, 0, None)], -1)
        return scores, keys
