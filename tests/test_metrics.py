"""Metrics in jammi_sql.evaluation.metrics: hand-computed cases, and agreement with sentence-transformers."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import numpy as np
import pytest

from jammi_sql.evaluation.metrics import retrieval_metrics, similarity_metrics, top_k

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the network


def unit(cosine: float) -> list[float]:
    """A 2-d unit vector whose cosine with the query (1, 0) is ``cosine``."""
    return [cosine, math.sqrt(1.0 - cosine * cosine)]


def retrieve(doc_scores: dict[str, float], relevant: set[str], **kwargs):
    """One query (1, 0), id 'q', against docs placed at the given cosines."""
    corpus = np.array([unit(c) for c in doc_scores.values()])
    query = np.array([[1.0, 0.0]])
    return retrieval_metrics(query, corpus, ["q"], list(doc_scores), {"q": relevant}, **kwargs)


def few_hot(rng: np.random.Generator, n: int, d: int = 16) -> np.ndarray:
    """Unit vectors with four entries of 0.5: every dot product is exact, and ties are common."""
    out = np.zeros((n, d), dtype=np.float32)
    for row in out:
        row[rng.choice(d, 4, replace=False)] = 0.5
    return out


class LookupModel:
    """Just enough of a SentenceTransformer for its evaluators: text -> fixed vector."""

    similarity_fn_name = "cosine"

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table
        self.model_card_data = SimpleNamespace(set_evaluation_metrics=lambda *a, **k: None)

    def similarity(self, a, b):
        from sentence_transformers.util import cos_sim

        return cos_sim(a, b)

    def encode(self, texts, convert_to_tensor: bool = False, **kwargs):
        import torch

        vectors = np.stack([self.table[text] for text in texts])
        return torch.from_numpy(vectors) if convert_to_tensor else vectors

    encode_query = encode_document = encode


# Similarity


def test_similarity_spearman_averages_tied_ranks():
    gold = np.array([0.0, 1.0, 1.0, 2.0])
    a = np.array([unit(c) for c in (0.1, 0.2, 0.3, 0.4)])
    b = np.tile([1.0, 0.0], (4, 1))
    result = similarity_metrics(a, b, gold)
    # ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4)
    assert result["spearman"] == pytest.approx(4.5 / math.sqrt(4.5 * 5.0))
    assert result["n"] == 4


def test_similarity_does_not_assume_normalized_inputs():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 40, 8))
    gold = rng.uniform(0, 5, 40)
    scaled = similarity_metrics(a * rng.uniform(0.1, 10, (40, 1)), b * 3.0, gold)
    assert scaled["spearman"] == pytest.approx(similarity_metrics(a, b, gold)["spearman"])
    assert scaled["pearson"] == pytest.approx(similarity_metrics(a, b, gold)["pearson"])


def test_similarity_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        similarity_metrics(np.ones((3, 4)), np.ones((2, 4)), np.ones(3))


def test_similarity_agrees_with_sentence_transformers():
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    rng = np.random.default_rng(1)
    n, d = 200, 24
    a = rng.normal(size=(n, d)).astype(np.float32)
    b = (a + rng.normal(scale=1.5, size=(n, d))).astype(np.float32)
    gold = np.round(rng.uniform(0, 5, n) * 2) / 2  # half steps: many tied gold scores
    texts_a = [f"a{i}" for i in range(n)]
    texts_b = [f"b{i}" for i in range(n)]
    model = LookupModel(dict(zip(texts_a + texts_b, np.vstack([a, b]), strict=True)))
    theirs = EmbeddingSimilarityEvaluator(texts_a, texts_b, gold.tolist(), main_similarity="cosine")
    expected = theirs(model)
    ours = similarity_metrics(a, b, gold)
    assert ours["spearman"] == pytest.approx(expected["spearman_cosine"], abs=1e-4)
    assert ours["pearson"] == pytest.approx(expected["pearson_cosine"], abs=1e-4)


# Retrieval, by hand


def test_retrieval_breaks_score_ties_by_ascending_doc_id():
    result = retrieve({"b": 0.9, "a": 0.9, "c": 0.5}, {"b"}, chunk_size=1)
    assert result.per_query == [("q", pytest.approx(1 / math.log2(3)), 2)]
    assert result.metrics["mrr_at_10"] == 0.5
    assert result.metrics["recall_at_1"] == 0.0
    assert result.metrics["recall_at_10"] == 1.0


def test_retrieval_with_no_relevant_doc_in_the_top_ten():
    docs = {f"d{i:02d}": 0.9 - i * 0.05 for i in range(12)}
    result = retrieve(docs, {"d11"})
    m = result.metrics
    assert (m["ndcg_at_10"], m["mrr_at_10"], m["recall_at_10"]) == (0.0, 0.0, 0.0)
    assert m["recall_at_100"] == 1.0
    assert m["map_at_100"] == pytest.approx(1 / 12)
    assert result.per_query[0][2] == 12


def test_retrieval_with_a_relevant_doc_missing_from_the_corpus_scores_zero():
    result = retrieve({"a": 0.9, "b": 0.5}, {"zzz"})
    assert result.per_query == [("q", 0.0, None)]
    assert all(
        result.metrics[key] == 0.0 for key in result.metrics if key not in ("n_queries", "k")
    )


def test_retrieval_with_several_relevant_docs():
    docs = {"r1": 0.9, "x1": 0.8, "r2": 0.7, "x2": 0.6, "r3": 0.5, "x3": 0.4}
    m = retrieve(docs, {"r1", "r2", "r3"}).metrics
    dcg = 1 + 1 / math.log2(4) + 1 / math.log2(6)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg_at_10"] == pytest.approx(dcg / ideal)
    assert m["map_at_100"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 3)
    assert m["recall_at_1"] == pytest.approx(1 / 3)
    assert m["recall_at_10"] == 1.0
    assert m["mrr_at_10"] == 1.0


def test_retrieval_counts_relevant_docs_beyond_the_cutoffs_in_the_denominators():
    # 120 relevant docs, all ranked first: NDCG@10 and MAP@100 (over min(120, 100)) are perfect.
    docs = {f"d{i:03d}": 0.9 - i * 0.005 for i in range(120)}
    m = retrieve(docs, set(docs)).metrics
    assert m["ndcg_at_10"] == pytest.approx(1.0)
    assert m["map_at_100"] == pytest.approx(1.0)
    assert m["recall_at_10"] == pytest.approx(10 / 120)
    assert m["recall_at_100"] == pytest.approx(100 / 120)


def test_retrieval_with_k_larger_than_the_corpus():
    result = retrieve({"a": 0.2, "b": 0.1}, {"b"})
    assert result.metrics["recall_at_100"] == 1.0
    assert result.per_query[0][2] == 2
    scores, indices = top_k(np.ones((3, 2)), np.eye(2), k=100)
    assert scores.shape == indices.shape == (3, 2)
    assert top_k(np.ones((3, 2)), np.eye(2), k=0)[1].shape == (3, 0)
    assert top_k(np.ones((3, 2)), np.empty((0, 2)), k=10)[1].shape == (3, 0)


def test_retrieval_never_offers_a_query_its_own_doc():
    query = np.array([[1.0, 0.0]])
    corpus = np.array([unit(1.0), unit(0.5)])
    args = (query, corpus, ["q1"], ["q1", "d2"], {"q1": {"d2"}})
    assert retrieval_metrics(*args).per_query[0][2] == 1
    assert retrieval_metrics(*args, ignore_identical_ids=False).per_query[0][2] == 2


def test_retrieval_leaves_out_queries_without_qrels():
    queries = np.array([[1.0, 0.0]] * 3)
    corpus = np.array([unit(0.9), unit(0.1)])
    relevant = {"q1": {"a"}, "q3": set()}
    result = retrieval_metrics(queries, corpus, ["q1", "q2", "q3"], ["a", "b"], relevant)
    assert result.metrics["n_queries"] == 1
    assert result.skipped_queries == 2
    assert [row[0] for row in result.per_query] == ["q1"]
    assert result.metrics["ndcg_at_10"] == 1.0


def test_retrieval_with_no_evaluable_queries_gives_nan():
    result = retrieval_metrics(np.ones((1, 2)), np.ones((1, 2)), ["q"], ["d"], {})
    assert result.metrics["n_queries"] == 0
    assert math.isnan(result.metrics["ndcg_at_10"])


# Chunked top-k


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
def test_chunked_top_k_equals_a_full_sort_even_with_ties(chunk_size):
    rng = np.random.default_rng(2)
    queries, corpus = few_hot(rng, 9), few_hot(rng, 50)
    scores, indices = top_k(queries, corpus, k=10, chunk_size=chunk_size, query_chunk_size=4)
    full = queries @ corpus.T
    expected = np.lexsort((np.broadcast_to(np.arange(50), full.shape), -full), axis=1)[:, :10]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_array_equal(scores, np.take_along_axis(full, expected, 1))


def test_chunked_top_k_equals_argsort_on_random_data():
    rng = np.random.default_rng(3)
    queries, corpus = rng.normal(size=(20, 32)), rng.normal(size=(500, 32))
    scores, indices = top_k(queries, corpus, k=25, chunk_size=37)
    unit_q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    full = unit_q @ (corpus / np.linalg.norm(corpus, axis=1, keepdims=True)).T
    np.testing.assert_array_equal(indices, np.argsort(-full, axis=1)[:, :25])
    np.testing.assert_allclose(scores, np.sort(full, axis=1)[:, ::-1][:, :25], rtol=1e-12)


def test_top_k_puts_excluded_docs_last():
    corpus = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    scores, indices = top_k(np.array([[1.0, 0.0]]), corpus, 3, 2, exclude=np.array([0]))
    assert indices.tolist() == [[1, 2, 0]]
    assert scores[0, 2] == -np.inf


# Retrieval, against sentence-transformers


def compare_with_information_retrieval_evaluator(
    queries: np.ndarray, corpus: np.ndarray, chunk_size: int
) -> None:
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

    rng = np.random.default_rng(len(corpus))
    # Ids in shuffled order, so ascending-id tie-breaking is not row order.
    doc_ids = [f"d{i:04d}" for i in rng.permutation(len(corpus))]
    query_ids = [f"q{i}" for i in range(len(queries))]
    relevant = {
        qid: set(rng.choice(doc_ids, rng.integers(1, 6), replace=False)) for qid in query_ids[:-3]
    }
    relevant[query_ids[0]].add("not-in-corpus")
    relevant[query_ids[-1]] = set()
    model = LookupModel(
        {f"text {i}": v for i, v in enumerate(np.vstack([queries, corpus]))},
    )
    evaluator = InformationRetrievalEvaluator(
        queries={qid: f"text {i}" for i, qid in enumerate(query_ids)},
        corpus={did: f"text {len(queries) + i}" for i, did in enumerate(doc_ids)},
        relevant_docs=relevant,
        corpus_chunk_size=chunk_size + 13,
        precision_recall_at_k=[1, 10, 100],
        write_csv=False,
    )
    expected = evaluator(model)
    result = retrieval_metrics(queries, corpus, query_ids, doc_ids, relevant, chunk_size=chunk_size)
    ours = result.metrics
    for mine, theirs in [
        ("ndcg_at_10", "cosine_ndcg@10"),
        ("mrr_at_10", "cosine_mrr@10"),
        ("recall_at_1", "cosine_recall@1"),
        ("recall_at_10", "cosine_recall@10"),
        ("recall_at_100", "cosine_recall@100"),
        ("map_at_100", "cosine_map@100"),
    ]:
        assert ours[mine] == pytest.approx(expected[theirs], abs=1e-4), mine
    assert ours["n_queries"] == len(evaluator.queries_ids)
    assert result.skipped_queries == 3


def test_retrieval_agrees_with_sentence_transformers_on_random_embeddings():
    rng = np.random.default_rng(4)
    queries = rng.normal(size=(40, 16)).astype(np.float32)
    corpus = rng.normal(size=(700, 16)).astype(np.float32)
    compare_with_information_retrieval_evaluator(queries, corpus, chunk_size=101)


def test_retrieval_agrees_with_sentence_transformers_when_scores_tie():
    rng = np.random.default_rng(5)
    compare_with_information_retrieval_evaluator(few_hot(rng, 30), few_hot(rng, 300), 50)
