"""Nearest-neighbour tags: FAISS against brute force, and the real tagger on the embedded MiniLM."""
import numpy as np
import pytest

from synth.taggers import get_tagger, neighbors
from synth.taggers.neighbors import NPROBE, TINY_EMBEDDER, build_index, nearest_neighbors

THRESHOLD = 0.05


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def planted(n=300, d=32, seed=0):
    """Random unit vectors (pairwise squared distance ~2) with clusters planted well inside and
    well outside the threshold, so float32 rounding cannot flip a comparison."""
    rng = np.random.default_rng(seed)
    emb = unit(rng.standard_normal((n, d)))
    emb[1] = emb[0]  # exact duplicates: distance 0 to each other
    emb[2] = emb[0]
    emb[50] = unit(emb[0] + 0.02 * rng.standard_normal(d))  # near-repeat, ~0.01 from row 0
    emb[100] = unit(emb[99] + 0.02 * rng.standard_normal(d))  # a near pair
    emb[200] = unit(emb[199] + 0.1 * rng.standard_normal(d))  # similar but beyond the threshold
    # ids unrelated to row order, so a row index mistaken for an id shows up
    ids = [int(i) for i in rng.permutation(n) * 7 + 1000]
    return emb, ids


def brute_force(emb, ids, threshold=THRESHOLD):
    e = emb.astype(np.float64)
    sq = (e * e).sum(1)
    dist = sq[:, None] + sq[None, :] - 2 * e @ e.T
    np.fill_diagonal(dist, np.inf)
    ids = np.asarray(ids)
    out = []
    for i in range(len(emb)):
        near = np.flatnonzero(dist[i] < threshold)
        out.append({"min_neighbor_distance": max(dist[i].min(), 0.0), "repeat_count": len(near),
                    "min_similar_conversation_id": int(ids[near].min(initial=ids[i]))})
    return out


def assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g["min_neighbor_distance"] == pytest.approx(w["min_neighbor_distance"], abs=1e-5)
        assert g["repeat_count"] == w["repeat_count"]
        assert g["min_similar_conversation_id"] == w["min_similar_conversation_id"]


def test_faiss_matches_brute_force():
    emb, ids = planted()
    want = brute_force(emb, ids)
    # the planted clusters really are there, so the comparison is not trivially all-zero
    assert [want[i]["repeat_count"] for i in (0, 1, 2, 50, 99, 100, 199)] == [3, 3, 3, 3, 1, 1, 0]
    assert want[199]["min_neighbor_distance"] < 1.0
    # a small search batch so several batches run
    assert_same(nearest_neighbors(emb, ids, k=500, repeat_threshold=THRESHOLD, search_batch_size=64), want)


def test_small_k_still_finds_the_minimum():
    emb, ids = planted(seed=1)
    # every planted cluster has at most 4 members, so k=5 sees all of each
    assert_same(nearest_neighbors(emb, ids, k=5, repeat_threshold=THRESHOLD, search_batch_size=128),
                brute_force(emb, ids))


def test_more_duplicates_than_k():
    # 8 identical rows, k=4: an item may not be among its own hits; its neighbours are still at 0
    rng = np.random.default_rng(2)
    emb = unit(rng.standard_normal((20, 16)))
    emb[:8] = emb[0]
    ids = list(range(100, 120))
    tags = nearest_neighbors(emb, ids, k=4, repeat_threshold=THRESHOLD)
    for t in tags[:8]:
        assert t["min_neighbor_distance"] == pytest.approx(0.0, abs=1e-6)
        assert t["repeat_count"] >= 2  # at least 3 of the 4 hits are other copies
    assert all(t["repeat_count"] == 0 and t["min_neighbor_distance"] > 0.5 for t in tags[8:])


def test_single_item_has_no_neighbour():
    emb = unit(np.ones((1, 8)))
    assert nearest_neighbors(emb, [42]) == [
        {"min_neighbor_distance": None, "repeat_count": 0, "min_similar_conversation_id": 42}]


@pytest.fixture(scope="module")
def tagger():
    return get_tagger("min_neighbor_distance", embedding_model=TINY_EMBEDDER, device="cpu")


def test_tagger_on_real_instructions(tagger):
    texts = [
        (10, "How do I reverse a list in Python?"),
        (11, "What's the way to reverse a Python list?"),
        (12, "Write a short poem about the ocean at night."),
        (13, "Explain the main causes of the French Revolution."),
        (5, "How do I reverse a list in Python?"),  # exact duplicate with a lower id
        (14, None),  # an instruction generation that failed
    ]
    records = [{"id": i, "instruction": t, "response": "", "messages": []} for i, t in texts]
    tags = tagger.tag(records)
    assert len(tags) == len(records) and all(set(t) == set(tagger.fields) for t in tags)
    dist = [t["min_neighbor_distance"] for t in tags]

    # the duplicate pair: distance ~0, one cluster, kept through the lower id
    assert dist[0] == pytest.approx(0.0, abs=1e-5) and dist[4] == pytest.approx(0.0, abs=1e-5)
    assert tags[0]["min_similar_conversation_id"] == tags[4]["min_similar_conversation_id"] == 5
    assert tags[0]["repeat_count"] == tags[4]["repeat_count"] == 1
    # the paraphrase is closer to its twin than the unrelated instructions are to anything
    assert dist[1] < min(dist[2], dist[3])
    assert tags[2] == {"min_neighbor_distance": dist[2], "repeat_count": 0, "min_similar_conversation_id": 12}
    assert tags[5] == dict.fromkeys(tagger.fields) and tagger.stats["no_instruction"] == 1

    assert tagger.info() == {"embedding_model": TINY_EMBEDDER, "k": 500, "repeat_threshold": 0.05,
                             "index": "exact (IndexFlatL2)",  # a small set: auto searches exactly
                             "stand_in": "all-MiniLM-L6-v2 (384-d) replaces all-mpnet-base-v2"}


def _clustered(n: int, dim: int = 64, clusters: int = 200, spread: float = 0.35, seed: int = 0, repeats: int = 0):
    """Unit vectors around topic centres, as sentence embeddings of instructions are (random vectors on the sphere,
    with no structure, are the worst case of any approximate search); `repeats` rows are copied onto others, half
    exactly and half at ~0.01, in groups of up to 6."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    emb = unit(centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim)).astype(np.float32))
    rows = rng.permutation(n)[:repeats]
    for i in range(0, repeats, 6):
        group = rows[i:i + int(rng.integers(1, 7))]
        noise = (i // 6) % 2 * 0.1 / np.sqrt(dim)  # squared distance ~0.01 apart, or exact copies
        emb[group] = unit(emb[rng.integers(0, n)] + noise * rng.standard_normal((len(group), dim)))
    return emb


def assert_tags_equal(got, want):
    assert [g["repeat_count"] for g in got] == [w["repeat_count"] for w in want]
    assert [g["min_similar_conversation_id"] for g in got] == [w["min_similar_conversation_id"] for w in want]
    np.testing.assert_allclose([g["min_neighbor_distance"] for g in got],
                               [w["min_neighbor_distance"] for w in want], atol=1e-5)


def test_ivf_probing_every_cell_is_exact():
    # nprobe >= nlist compares every pair: the cell join must then give the brute-force tags, duplicates included
    emb, ids = planted()
    info = {}
    got = nearest_neighbors(emb, ids, k=500, repeat_threshold=THRESHOLD, index="ivf", nprobe=10**6, info=info)
    assert info["nprobe"] == info["nlist"] > 1 and info["candidates_per_row"] == len(emb)
    assert info["recall_at_10"] == 1.0 and info["repeat_count_exact"] == info["min_similar_id_exact"] == 1.0
    assert_same(got, brute_force(emb, ids))


def test_ivf_repeat_count_is_the_k_nearest_count_below_k():
    # The join counts every other row under the threshold; the exact index counts them among the k nearest. Below
    # k - 1 repeats the two are the same number, and the same lowest id.
    emb = _clustered(3000, repeats=600, seed=3)
    ids = [int(i) for i in np.random.default_rng(3).permutation(3000) + 10]
    exact = nearest_neighbors(emb, ids, k=50, index="exact")
    joined = nearest_neighbors(emb, ids, k=50, index="ivf", nprobe=10**6)
    assert 0 < max(t["repeat_count"] for t in exact) < 49 and sum(t["repeat_count"] > 0 for t in exact) > 300
    assert_tags_equal(joined, exact)


def test_ivf_repeat_count_saturates_at_k_minus_one():
    # 8 identical rows, k=4: as the reference's k nearest saturate, the count stops at k - 1; the lowest id of
    # the cluster is found for every copy (the reference's depends on which copies come back)
    rng = np.random.default_rng(2)
    emb = unit(rng.standard_normal((200, 16)))
    emb[:8] = emb[0]
    ids = list(range(100, 300))
    tags = nearest_neighbors(emb, ids, k=4, repeat_threshold=THRESHOLD, index="ivf", nprobe=10**6)
    assert [t["repeat_count"] for t in tags[:8]] == [3] * 8
    assert [t["min_similar_conversation_id"] for t in tags[:8]] == [100] * 8
    assert all(t["min_neighbor_distance"] == pytest.approx(0.0, abs=1e-6) for t in tags[:8])
    assert all(t["repeat_count"] == 0 for t in tags[8:])


def test_ivf_index_measures_its_recall_and_only_ever_misses_neighbours():
    emb = _clustered(20_000, repeats=2000)
    ids = list(range(len(emb)))
    exact_info, ivf_info = {}, {}
    exact = nearest_neighbors(emb, ids, k=50, index="auto", info=exact_info)  # 20K rows: auto is exact
    approx = nearest_neighbors(emb, ids, k=50, index="ivf", info=ivf_info)
    assert exact_info["index"].startswith("exact") and "recall_at_10" not in exact_info
    # ~4 sqrt(N) cells, but at least 39 rows per cell: 20000 // 39; each row compared with NPROBE cells
    assert ivf_info["index"].startswith("IVF") and ivf_info["nlist"] == min(20_000 // 39, int(4 * np.sqrt(20_000)))
    assert ivf_info["nprobe"] == NPROBE and ivf_info["candidates_per_row"] < len(emb) / 10
    assert ivf_info["recall_at_10"] >= 0.95
    d_exact = np.array([t["min_neighbor_distance"] for t in exact])
    d_approx = np.array([t["min_neighbor_distance"] for t in approx])
    # a missed neighbour can only make the nearest one farther and the repeats fewer
    assert (d_approx >= d_exact - 1e-5).all()
    assert all(a["repeat_count"] <= e["repeat_count"] for a, e in zip(approx, exact))
    assert np.mean(np.isclose(d_approx, d_exact, atol=1e-5)) >= 0.95
    # near-repeats lie in the same or the next cells: their tags come out as exact search gives them
    repeats = [i for i, e in enumerate(exact) if e["repeat_count"]]
    assert len(repeats) > 1000
    assert_tags_equal([approx[i] for i in repeats], [exact[i] for i in repeats])
    # what the sample said matches what the whole run got, within sampling error
    share = np.mean(np.isclose(d_approx, d_exact, atol=1e-5))
    assert abs(ivf_info["min_neighbor_distance_exact"] - share) < 0.03


def test_ivf_tags_of_some_rows_are_theirs_in_the_whole_run():
    emb = _clustered(5000, repeats=500, seed=4)
    ids = list(range(len(emb)))
    built = build_index(emb, "ivf")
    rows = np.sort(np.random.default_rng(0).permutation(5000)[:700])
    whole = nearest_neighbors(emb, ids, k=50, built=(built[0], {**built[1], "recall_at_10": None}))
    some = nearest_neighbors(emb, ids, k=50, rows=rows, built=(built[0], {**built[1], "recall_at_10": None}))
    assert_tags_equal(some, [whole[i] for i in rows])


def test_unknown_index_is_refused():
    with pytest.raises(ValueError, match="knn_index must be one of auto, exact, ivf"):
        nearest_neighbors(_clustered(10), list(range(10)), index="hnsw")


def test_tagger_ivf_embeds_in_chunks_and_tags_as_exact(tagger, monkeypatch):
    # The same instructions through the cell join probing every cell, embedded 7 texts per encode call: the tags of
    # the exact index, and the measured recall kept in the tagger's info
    monkeypatch.setattr(neighbors, "ENCODE_CHUNK", 7)
    topics = ["Python lists", "the French Revolution", "baking bread", "prime numbers", "the ocean at night"]
    asks = ["Explain {}.", "Tell me about {}.", "Write a short poem about {}.", "What should I know about {}?"]
    records = [{"id": 100 + i, "instruction": a.format(t)} for i, (a, t) in
               enumerate((a, t) for t in topics for a in asks)]
    records += [{"id": 1, "instruction": records[5]["instruction"]}]  # a copy with the lowest id
    exact = tagger.tag(records)
    ivf = get_tagger("min_neighbor_distance", embedding_model=TINY_EMBEDDER, device="cpu", index="ivf", nprobe=10**6)
    got = ivf.tag(records)
    assert_tags_equal(got, exact)
    assert got[5]["repeat_count"] == 1 and got[5]["min_similar_conversation_id"] == got[-1]["min_similar_conversation_id"] == 1
    assert ivf.info()["index"].startswith("IVF") and ivf.info()["recall_at_10"] == 1.0
    assert np.allclose(ivf.embed([r["instruction"] for r in records]),
                       tagger.model.encode([r["instruction"] for r in records], normalize_embeddings=True), atol=1e-5)
