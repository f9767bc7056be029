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

Exact search is all pairs: fine at 100K, ~2.7 h for 1M on 2 CPU cores. `index: auto` searches exactly (FAISS
IndexFlatL2, the reference's index) up to EXACT_UP_TO rows, and at any size where faiss-gpu finds GPUs (the index
is copied to each); above it on CPU it uses an inverted file searched as a join (CellJoin): k-means cells, each row
compared with every row of its NPROBE nearest cells. `ivf` and `exact` force either.

The join does not keep a list of k hits per row: it counts every other row under `repeat_threshold` among those it
compares, and caps the count at k - 1, where the reference's k nearest saturate. Below the cap that is the same
number, and the same min_similar_conversation_id; above it, the id is the lowest of all the near-repeats found
(the reference's, the lowest of whichever k - 1 its search returned).

An approximate search can miss a neighbour, so it is measured against exact search on 1000 rows: recall@10 and the
share of rows whose three tags come out exactly, logged and kept in the tagger's info (the tag manifest). A missed
neighbour makes min_neighbor_distance larger and repeat_count smaller, never the reverse.
"""
from __future__ import annotations

import logging

import numpy as np
from tqdm.auto import tqdm

from core.engines.hf import torch_device
from core.models import resolve
from synth.taggers import Tagger, register_tagger

TINY_EMBEDDER = "embedded:all-minilm-l6-v2"
log = logging.getLogger(__name__)


INDEXES = ("auto", "exact", "ivf")
EXACT_UP_TO = 200_000  # rows: above this, `auto` searches approximately on CPU (exact 1M: ~2.7 h here)
# Cells each row is compared with, of ~4 sqrt(N): on the hardest synthetic set tried (300K rows around 10K diffuse
# topics) 16 of 2190 cells gave recall@10 0.98 and 32 gave 0.99; the same 2234 candidates a row in 547 larger
# cells (4 probed) gave 0.73, so cells stay small and many.
NPROBE = 16
ENCODE_CHUNK = 8192  # texts per encode call: 25 MB of 768-d vectors beside the array
BLOCK = 1 << 22  # distances per block of the cell join: 16 MB of float32 however large a cell grows


def _gpus() -> int:
    import faiss

    return getattr(faiss, "get_num_gpus", lambda: 0)()


def _sqnorms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def _nearest_centroid(x: np.ndarray, centroids: np.ndarray, p: int = 1, chunk: int = 4096) -> np.ndarray:
    """The p nearest centroids (by cosine) of each row of x, the nearest first."""
    # numpy's GEMM rather than faiss.knn: the same 100K x 2000 x 384 product took 2.1 s of CPU in numpy's
    # OpenBLAS 0.3.30 and 6.2 s in the 0.3.15 bundled with faiss-cpu 1.15, here.
    out = np.empty((len(x), p), np.int32)
    for i in range(0, len(x), chunk):
        s = x[i:i + chunk] @ centroids.T
        if p == 1:
            out[i:i + chunk, 0] = s.argmax(axis=1)
            continue
        top = np.argpartition(s, -p, axis=1)[:, -p:]
        r, j = np.arange(len(top)), np.take_along_axis(s, top, 1).argmax(axis=1)
        top[r, j], top[:, 0] = top[:, 0].copy(), top[r, j]  # only the nearest needs its place: the first
        out[i:i + chunk] = top
    return out


def _kmeans(x: np.ndarray, k: int, niter: int, rng: np.random.Generator) -> np.ndarray:
    """Spherical k-means (unit centroids, nearest by cosine) from k distinct sample points; a cell left empty
    restarts at a random point. Plain k-means made hubs here: the centroids of diffuse cells came out short, so
    near every other centroid in L2, and probing the nearest cells read 5x the rows of an average cell."""
    centroids = x[rng.choice(len(x), k, replace=False)].copy()
    for _ in range(niter):
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        cell = _nearest_centroid(x, centroids)[:, 0]
        counts = np.bincount(cell, minlength=k)
        full = counts > 0
        starts = np.r_[0, np.cumsum(counts)[:-1]][full]
        centroids[full] = np.add.reduceat(x[np.argsort(cell, kind="stable")], starts) / counts[full, None]
        centroids[~full] = x[rng.choice(len(x), int((~full).sum()), replace=False)]
    return centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)


def _blocks(q: np.ndarray, cand: np.ndarray, own: np.ndarray):
    """(query rows, candidate rows, each query row's place among these candidates) in blocks of ~BLOCK pairs."""
    qb = min(len(q), 1024)
    cb = max(256, BLOCK // qb)
    for i in range(0, len(q), qb):
        for j in range(0, len(cand), cb):
            yield q[i:i + qb], cand[j:j + cb], own[i:i + qb] - j


class CellJoin:
    """The approximate index: an inverted file (k-means cells) searched cell by cell.

    Each row goes to the cell of its nearest centroid and is compared with every row of its `nprobe` nearest
    cells, as FAISS's IndexIVFFlat would compare it, but the work is turned around: for each cell, all rows
    that probe it are compared with the cell's rows in one matrix product. Every comparison is exact, so a row
    can only miss neighbours outside its probed cells. Measured at 300K x 384 (clustered), FAISS's IndexIVFFlat on
    the same cells and nprobe took 380-410 us of CPU a row, searching k=2 or range_search at 0.05 (it computes
    one distance at a time, a query at a time); the join, 106-126 us.

    Training: 64 sample rows a cell, 4 rounds. On the hardest synthetic set tried (300K rows around 10K diffuse
    topics), recall@10 was 0.987 so, 0.982 with 40 rows x 10 rounds and 0.939 with 20 x 10: the sample matters
    more than the rounds, and 64 x 4 costs less CPU than 40 x 10.
    """

    def __init__(self, emb: np.ndarray, nlist: int, nprobe: int, seed: int = 0, niter: int = 4,
                 train_per_cell: int = 64):
        self.n = n = len(emb)
        self.nlist, self.nprobe = nlist, min(nprobe, nlist)
        rng = np.random.default_rng(seed)
        sample = emb[np.sort(rng.choice(n, min(n, train_per_cell * nlist), replace=False))]
        self.centroids = _kmeans(sample, nlist, niter, rng)
        probes = _nearest_centroid(emb, self.centroids, self.nprobe)  # n x nprobe, the own cell first
        self.members = _group(probes[:, 0], nlist)  # (rows by cell, each cell's start)
        self.probers = _group(probes.ravel(), nlist, self.nprobe)  # rows by the cells they probe
        sizes = np.diff(self.members[1])
        self.candidates_per_row = float(np.diff(self.probers[1]) @ sizes / n)

    def blocks(self, rows: np.ndarray | None = None, progress: bool = False):
        """The pairs to compare, for every row or only for `rows`, as _blocks gives them."""
        want = None
        if rows is not None:
            want = np.zeros(self.n, bool)
            want[rows] = True
        (members, mb), (probers, pb) = self.members, self.probers
        for c in tqdm(range(self.nlist), desc="neighbours", unit="cell", disable=not progress):
            q = probers[pb[c]:pb[c + 1]]
            if want is not None:
                q = q[want[q]]
            if not len(q):
                continue
            cand = members[mb[c]:mb[c + 1]]  # ascending, as q is
            own = np.minimum(np.searchsorted(cand, q), len(cand) - 1)
            yield from _blocks(q, cand, np.where(cand[own] == q, own, -1))


def _group(cells: np.ndarray, nlist: int, per_row: int = 1):
    """The rows (index // per_row) sorted by cell, ascending within a cell, and where each cell starts."""
    order = np.argsort(cells, kind="stable")
    return (order // per_row).astype(np.int32), np.searchsorted(cells[order], np.arange(nlist + 1))


def _exhaustive(n: int, rows: np.ndarray):
    """Blocks comparing `rows` with every row: exact search, for measuring the approximate one."""
    return _blocks(rows, np.arange(n), rows)


def _scan(emb: np.ndarray, ids: np.ndarray, blocks, rows: np.ndarray, threshold: float, topk: int = 0):
    """For each of `rows`: squared L2 to the nearest other row, how many others lie under `threshold`, the lowest
    id among the row and those, and (topk > 0) its topk nearest others, all over the pairs in `blocks`."""
    n = len(emb)
    slot = np.full(n, -1)
    slot[rows] = np.arange(len(rows))
    half = 0.5 * _sqnorms(emb)
    min_dist = np.full(len(rows), np.inf, np.float32)
    count = np.zeros(len(rows), np.int64)
    first = ids[rows].copy()
    top_d = np.full((len(rows), topk), np.inf, np.float32)
    top_i = np.full((len(rows), topk), -1)
    for q, cand, own in blocks:
        # |q - x|^2 = 2 (|q|^2/2 - (q.x - |x|^2/2)): s holds q.x - |x|^2/2, one pass after the product
        s = emb[q] @ emb[cand].T
        s -= half[cand]
        mine = (own >= 0) & (own < len(cand))
        s[mine.nonzero()[0], own[mine]] = -np.inf  # the row itself, by place: a duplicate is another row
        at = slot[q]  # each query row once per block
        min_dist[at] = np.minimum(min_dist[at], 2 * (half[q] - s.max(axis=1)))
        near = s > (half[q] - threshold / 2)[:, None]
        hits = near.sum(axis=1)
        some = hits > 0
        if some.any():  # rare, except inside a cluster of repeats
            count[at] += hits
            first[at[some]] = np.minimum(first[at[some]],
                                         np.where(near[some], ids[cand][None, :], first[at[some]][:, None]).min(1))
        if topk:  # merged only for rows with a pair nearer than their k-th so far: few, after the first blocks
            r = np.flatnonzero((s > (half[q] - top_d[at, -1] / 2)[:, None]).any(axis=1))
            if len(r):
                kk = min(topk, s.shape[1])
                part = np.argpartition(-s[r], kk - 1, axis=1)[:, :kk]
                d = np.concatenate([top_d[at[r]], 2 * (half[q[r]][:, None] - np.take_along_axis(s[r], part, 1))], 1)
                i = np.concatenate([top_i[at[r]], cand[part]], axis=1)
                best = np.argsort(d, axis=1, kind="stable")[:, :topk]
                top_d[at[r]], top_i[at[r]] = np.take_along_axis(d, best, 1), np.take_along_axis(i, best, 1)
    return np.maximum(min_dist, 0.0), count, first, np.maximum(top_d, 0.0), top_i


def build_index(emb: np.ndarray, kind: str = "auto", nprobe: int | None = None, seed: int = 0):
    """Exact (FAISS IndexFlatL2, the reference's; on every GPU with faiss-gpu) or a CellJoin. Returns
    (index, description)."""
    import faiss

    if kind not in INDEXES:
        raise ValueError(f"knn_index must be one of {', '.join(INDEXES)}, got {kind!r}")
    n, dim = emb.shape
    if kind == "exact" or (kind == "auto" and (n <= EXACT_UP_TO or _gpus() > 0)):
        index, desc = faiss.IndexFlatL2(dim), {"index": "exact (IndexFlatL2)"}
        index.add(emb)
        if _gpus() > 0:  # faiss-gpu: search on every GPU
            index = faiss.index_cpu_to_all_gpus(index)
            desc["gpus"] = _gpus()
        return index, desc
    nlist = max(1, min(n // 39, int(4 * np.sqrt(n))))
    nprobe = min(nlist, nprobe or NPROBE)
    index = CellJoin(emb, nlist, nprobe, seed)
    return index, {"index": f"IVF cell join (nlist {nlist}, nprobe {nprobe})", "nlist": nlist, "nprobe": nprobe,
                   "candidates_per_row": round(index.candidates_per_row)}


def measure_recall(emb: np.ndarray, ids, index: CellJoin, threshold: float = 0.05, cap: int | None = None,
                   sample: int = 1000, k: int = 10, seed: int = 0) -> dict:
    """Against exact search on a random sample of rows: recall@k (the share of the true k nearest others found;
    a hit as near as the true k-th counts, so ties among duplicates do not), and the share of rows whose
    min_neighbor_distance, repeat_count and min_similar_conversation_id come out exactly."""
    n = len(emb)
    ids = np.asarray(ids)
    rows = np.sort(np.random.default_rng(seed).permutation(n)[: min(n, sample)])
    got = _scan(emb, ids, index.blocks(rows), rows, threshold, k)
    want = _scan(emb, ids, _exhaustive(n, rows), rows, threshold, k)
    if cap is not None:
        got[1][:], want[1][:] = np.minimum(got[1], cap), np.minimum(want[1], cap)
    found = (got[3] <= want[3][:, -1:] + 1e-5) & (got[4] >= 0)
    real = want[4] >= 0  # fewer than k others in a tiny set
    return {f"recall_at_{k}": round(float(found[real].mean()) if real.any() else 1.0, 4),
            "min_neighbor_distance_exact": round(float(np.mean(np.isclose(got[0], want[0], rtol=0, atol=1e-5))), 4),
            "repeat_count_exact": round(float(np.mean(got[1] == want[1])), 4),
            "min_similar_id_exact": round(float(np.mean(got[2] == want[2])), 4)}


def _records(min_dist, count, first) -> list[dict]:
    return [{"min_neighbor_distance": float(d) if np.isfinite(d) else None, "repeat_count": int(r),
             "min_similar_conversation_id": f.item()} for d, r, f in zip(min_dist, count, first)]


def nearest_neighbors(emb: np.ndarray, ids: list[int], k: int = 500, repeat_threshold: float = 0.05,
                      search_batch_size: int = 1024, rows: np.ndarray | None = None, index: str = "auto",
                      nprobe: int | None = None, info: dict | None = None, built=None) -> list[dict]:
    """The three tags for each row of `emb` (or only for `rows`, which the benchmark samples).

    Exact index: only the k nearest are looked at, as in the reference: repeat_count saturates at k - 1, and a
    row with more than k exact duplicates may not even see itself, which is why the item is
    excluded by its index rather than by dropping the first hit. The cell join counts every near-repeat it
    compares and caps the count at k - 1 (see the module docstring). `index`: auto, exact or ivf; `info`, if given,
    receives the index used and, for an approximate one, its measured recall; `built`: an (index, info) pair from
    build_index with its recall already measured (the benchmark times them apart).
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
    if isinstance(index, CellJoin):
        if "recall_at_10" not in desc:
            desc.update(measure_recall(emb, ids, index, repeat_threshold, k - 1))
            log.warning("neighbours: %s over %d rows, against exact search on %d of them: recall@10 %.3f; "
                        "min_neighbor_distance exact on %.1f%%, repeat_count on %.1f%%", desc["index"], n,
                        min(n, 1000), desc["recall_at_10"], 100 * desc["min_neighbor_distance_exact"],
                        100 * desc["repeat_count_exact"])
        if info is not None:
            info.update(desc)
        min_dist, count, first, _, _ = _scan(emb, ids, index.blocks(rows, progress=len(rows) > 100_000), rows,
                                             repeat_threshold)
        return _records(min_dist, np.minimum(count, k - 1), first)
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
        near_ids = np.where(near, ids[np.maximum(nbr, 0)], ids[q][:, None])
        out += _records(np.where(other, dist, np.inf).min(axis=1), near.sum(axis=1),
                        np.minimum(near_ids.min(axis=1), ids[q]))
    return out


@register_tagger("min_neighbor_distance")
class NeighborTagger(Tagger):
    fields = ("min_neighbor_distance", "repeat_count", "min_similar_conversation_id")
    batch_size = None  # every instruction is compared with every other
    columns = ("instruction",)  # all rows at once: of a 1M-row set, only the texts it reads

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
        emb = self.embed([records[i]["instruction"] for i in keep])
        tags = nearest_neighbors(emb, [records[i]["id"] for i in keep], self.k, self.repeat_threshold,
                                 self.search_batch_size, index=self.index, nprobe=self.nprobe, info=self.search_info)
        for i, t in zip(keep, tags):
            out[i] = t
        return out

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit vectors, float32, one row per text, written chunk by chunk into one array: sentence-transformers'
        encode keeps a tensor per text and stacks them, twice the array at its peak (18 GB for 3M x 768)."""
        out = None  # sized by the first chunk: the dimension getter has changed names across sentence-transformers
        with tqdm(total=len(texts), desc="embedding", unit="text", disable=len(texts) < 10 * ENCODE_CHUNK) as bar:
            for s in range(0, len(texts), ENCODE_CHUNK):
                e = self.model.encode(texts[s:s + ENCODE_CHUNK], batch_size=self.encode_batch_size,
                                      normalize_embeddings=True, convert_to_numpy=True)
                if out is None:
                    out = np.empty((len(texts), e.shape[1]), np.float32)
                out[s:s + len(e)] = e
                bar.update(len(e))
        return out

    def info(self) -> dict:
        info = {"embedding_model": self.embedding_model, "k": self.k, "repeat_threshold": self.repeat_threshold,
                **self.search_info}
        if self.embedding_model == TINY_EMBEDDER:
            info["stand_in"] = "all-MiniLM-L6-v2 (384-d) replaces all-mpnet-base-v2"
        return info
