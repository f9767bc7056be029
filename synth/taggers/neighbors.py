"""Nearest-neighbour tags: how close each instruction is to the rest of the dataset.

The paper's similarity tags, as the reference `exp/gen_dis.py` computes them: embed every
instruction with all-mpnet-base-v2, put the unit vectors in an exact FAISS L2 index, search the
k nearest of each, and record
    min_neighbor_distance        squared L2 distance to the nearest *other* instruction
                                 (for unit vectors = 2 - 2 cos; 0 for an exact duplicate)
    repeat_count                 how many others lie within `repeat_threshold` (0.05 ~ cos > 0.975)
    min_similar_conversation_id  the lowest `id` among the item and those near-repeats: the first
                                 of each cluster, so dedup keeps rows whose field equals their id.
The reference writes None there for an item with no near-repeats; we write the item's own id,
so "field == id" keeps singletons without a special case.

Exact search is all pairs: fine at 100K, ~2.7 h for 1M on 2 CPU cores. `index: auto` keeps the exact index up to
EXACT_UP_TO rows and switches to an inverted-file index (FAISS IndexIVFFlat: k-means cells, `nprobe` of them
searched per query) above it; `ivf` and `exact` force either. An approximate search can miss a neighbour, so it
is measured: recall@10 against exact search on a sample of queries, logged and kept in the tagger's stats.
A missed neighbour makes min_neighbor_distance larger and repeat_count smaller, never the reverse. On a machine
with FAISS GPUs (faiss-gpu) the index is moved to them.
"""
from __future__ import annotations

import logging

import numpy as np
from tqdm.auto import tqdm

from synth.engines.hf import torch_device
from synth.models import resolve
from synth.taggers import Tagger, register_tagger

TINY_EMBEDDER = "embedded:all-minilm-l6-v2"
log = logging.getLogger(__name__)


INDEXES = ("auto", "exact", "ivf")
EXACT_UP_TO = 200_000  # rows: above this, `auto` searches approximately (exact 1M: ~2.7 h here)


def build_index(emb: np.ndarray, kind: str = "auto", nprobe: int | None = None, seed: int = 0):
    """A FAISS index over `emb` (unit vectors, float32): exact (IndexFlatL2, the reference's) or IVF-Flat with
    nlist ~ 4 sqrt(N) cells (FAISS's guideline), k-means trained on 40 points per cell for 10 iterations (training
    is nlist x points x dim: more buys little recall at 1M), `nprobe` (default nlist/64, at least 16) searched per
    query. Returns (index, description)."""
    import faiss

    if kind not in INDEXES:
        raise ValueError(f"knn_index must be one of {', '.join(INDEXES)}, got {kind!r}")
    n, dim = emb.shape
    if kind == "exact" or (kind == "auto" and n <= EXACT_UP_TO):
        index, desc = faiss.IndexFlatL2(dim), {"index": "exact (IndexFlatL2)"}
        index.add(emb)
    else:
        nlist = max(1, min(n // 39, int(4 * np.sqrt(n))))  # FAISS wants >= 39 training points per cell
        nprobe = min(nlist, nprobe or max(16, nlist // 64))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist)
        index.cp.niter = 10
        sample = np.random.default_rng(seed).permutation(n)[: min(n, 40 * nlist)]
        index.train(emb[np.sort(sample)])
        index.add(emb)
        index.nprobe = nprobe
        desc = {"index": f"IVF-Flat (nlist {nlist}, nprobe {nprobe})", "nlist": nlist, "nprobe": nprobe}
    if getattr(faiss, "get_num_gpus", lambda: 0)() > 0:  # faiss-gpu: search on every GPU
        index = faiss.index_cpu_to_all_gpus(index)
        desc["gpus"] = faiss.get_num_gpus()
    return index, desc


def recall_at(emb: np.ndarray, index, k: int = 10, sample: int = 1000, seed: int = 0) -> float:
    """Share of the true k nearest (exact search) that `index` returns, over a random sample of queries."""
    import faiss

    n = len(emb)
    q = emb[np.sort(np.random.default_rng(seed).permutation(n)[: min(n, sample)])]
    k = min(k, n)
    exact = faiss.IndexFlatL2(emb.shape[1])
    exact.add(emb)
    _, truth = exact.search(q, k)
    _, got = index.search(q, k)
    return float(np.mean([len(set(t) & set(g)) / k for t, g in zip(truth, got)]))


def nearest_neighbors(emb: np.ndarray, ids: list[int], k: int = 500, repeat_threshold: float = 0.05,
                      search_batch_size: int = 1024, rows: np.ndarray | None = None, index: str = "auto",
                      nprobe: int | None = None, info: dict | None = None, built=None) -> list[dict]:
    """The three tags for each row of `emb` (or only for `rows`, which the benchmark samples).

    Only the k nearest are looked at, as in the reference: repeat_count saturates at k - 1, and a
    row with more than k exact duplicates may not even see itself, which is why the item is
    excluded by its index rather than by dropping the first hit. `index`: auto, exact or ivf (see the module
    docstring); `info`, if given, receives the index used and, for an approximate one, its recall@10; `built`:
    an (index, info) pair from build_index with its recall already measured (the benchmark times them apart).
    """
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    ids = np.asarray(ids)
    n = len(emb)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} embeddings")
    rows = np.arange(n) if rows is None else np.asarray(rows)
    if n == 0:
        return []
    k = min(k, n)
    index, desc = built or build_index(emb, index, nprobe)
    if "nlist" in desc and "recall_at_10" not in desc:
        desc["recall_at_10"] = round(recall_at(emb, index), 4)
        log.warning("neighbours: %s over %d rows, recall@10 %.3f against exact search (1000 queries)",
                    desc["index"], n, desc["recall_at_10"])
    if info is not None:
        info.update(desc)

    out = []
    starts = range(0, len(rows), search_batch_size)
    for s in tqdm(starts, desc="neighbours", unit="batch", disable=len(starts) < 8):
        q = rows[s:s + search_batch_size]
        dist, nbr = index.search(emb[q], k)
        # BLAS computes |x|^2 + |y|^2 - 2xy, so an exact duplicate can come out as -1e-7.
        dist = np.maximum(dist, 0.0)
        other = (nbr != q[:, None]) & (nbr >= 0)
        near = other & (dist < repeat_threshold)
        min_dist = np.where(other, dist, np.inf).min(axis=1)
        repeat = near.sum(axis=1)
        near_ids = np.where(near, ids[np.maximum(nbr, 0)], ids[q][:, None])
        first_id = np.minimum(near_ids.min(axis=1), ids[q])
        for d, r, f in zip(min_dist, repeat, first_id):
            out.append({"min_neighbor_distance": float(d) if np.isfinite(d) else None,
                        "repeat_count": int(r), "min_similar_conversation_id": f.item()})
    return out


@register_tagger("min_neighbor_distance")
class NeighborTagger(Tagger):
    fields = ("min_neighbor_distance", "repeat_count", "min_similar_conversation_id")
    batch_size = None  # every instruction is compared with every other

    def __init__(self, embedding_model: str = "sentence-transformers/all-mpnet-base-v2",  # the paper's embedder
                 k: int = 500, repeat_threshold: float = 0.05,  # reference gen_dis.py defaults
                 search_batch_size: int = 1024, encode_batch_size: int = 256, device: str = "auto",
                 index: str = "auto", nprobe: int | None = None):
        super().__init__()
        from sentence_transformers import SentenceTransformer

        if index not in INDEXES:
            raise ValueError(f"knn_index must be one of {', '.join(INDEXES)}, got {index!r}")
        self.index, self.nprobe, self.search_info = index, nprobe, {}
        self.embedding_model, self.k, self.repeat_threshold = embedding_model, k, repeat_threshold
        self.search_batch_size, self.encode_batch_size = search_batch_size, encode_batch_size
        try:
            self.model = SentenceTransformer(resolve(embedding_model), device=torch_device(device))
        except OSError as e:
            raise OSError(f"cannot load embedding model {embedding_model!r} ({e}); pass a local path, "
                          f"or use {TINY_EMBEDDER!r} which needs no hub access") from e

    def tag(self, records: list[dict]) -> list[dict]:
        # A record without an instruction cannot be placed; it gets None and stays out of the index.
        keep = [i for i, r in enumerate(records) if isinstance(r.get("instruction"), str)]
        self.count("no_instruction", len(records) - len(keep))
        out: list[dict] = [dict.fromkeys(self.fields) for _ in records]
        if not keep:
            return out
        bs = self.encode_batch_size
        emb = self.model.encode([records[i]["instruction"] for i in keep], batch_size=bs, normalize_embeddings=True,
                                show_progress_bar=len(keep) > 10 * bs)  # unit vectors, float32, one row per text
        tags = nearest_neighbors(emb, [records[i]["id"] for i in keep], self.k, self.repeat_threshold,
                                 self.search_batch_size, index=self.index, nprobe=self.nprobe, info=self.search_info)
        for i, t in zip(keep, tags):
            out[i] = t
        return out

    def info(self) -> dict:
        info = {"embedding_model": self.embedding_model, "k": self.k, "repeat_threshold": self.repeat_threshold,
                **self.search_info}
        if self.embedding_model == TINY_EMBEDDER:
            info["stand_in"] = "all-MiniLM-L6-v2 (384-d) replaces all-mpnet-base-v2"
        return info
