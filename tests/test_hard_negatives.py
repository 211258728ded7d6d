"""mine_hard_negatives: the blocked miner equals a brute-force ranking, the corpus is read from
its embedding table (never embedded again), and the result trains with fine_tune."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import NOUNS, sql_list

from jammi_sql.data import mining
from jammi_sql.data.mining import MiningSettings, ceilings, mine


def brute_force(anchors, corpus, ceiling, excluded, s: MiningSettings) -> list[list[int]]:
    """Each anchor's negatives from the whole (anchors x corpus) score matrix."""
    a = anchors / np.linalg.norm(anchors, axis=1, keepdims=True)
    c = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    scores = a @ c.T
    out = []
    for i, row in enumerate(scores):
        ok = [
            j
            for j in np.argsort(-row, kind="stable")
            if (i, j) not in excluded
            and row[j] <= ceiling[i]
            and (s.min_score is None or row[j] >= s.min_score)
        ]
        out.append(ok[s.range_min : s.range_max][: s.num_negatives])
    return out


@pytest.mark.parametrize(
    "settings",
    [
        MiningSettings(num_negatives=3, range_max=10),
        MiningSettings(num_negatives=2, range_min=2, range_max=6, relative_margin=0.1),
        MiningSettings(num_negatives=4, range_max=50, absolute_margin=0.2, min_score=-0.3),
        MiningSettings(num_negatives=2, max_score=-0.5),  # most anchors get none
    ],
)
def test_mining_in_blocks_equals_a_brute_force_ranking(monkeypatch, settings):
    monkeypatch.setattr(mining, "ANCHOR_BLOCK", 7)
    rng = np.random.default_rng(0)
    anchors, corpus = rng.normal(size=(20, 8)), rng.normal(size=(45, 8))
    pair_anchor = np.concatenate([np.arange(20), [0, 3, 3]])  # anchors 0 and 3: two positives
    positive_rows = rng.choice(45, size=len(pair_anchor), replace=False)
    positive_scores = np.einsum(
        "ij,ij->i",
        anchors[pair_anchor] / np.linalg.norm(anchors[pair_anchor], axis=1, keepdims=True),
        corpus[positive_rows] / np.linalg.norm(corpus[positive_rows], axis=1, keepdims=True),
    )
    ceiling = ceilings(positive_scores, pair_anchor, 20, settings)
    blocks = [corpus[i : i + 11] for i in range(0, 45, 11)]  # 5 blocks, the last one short
    got = mine(anchors, ceiling, (pair_anchor, positive_rows), blocks, settings)
    expected = brute_force(
        anchors, corpus, ceiling, set(zip(pair_anchor, positive_rows, strict=True)), settings
    )
    found = [got.corpus[got.anchor == i][np.argsort(got.rank[got.anchor == i])] for i in range(20)]
    assert [list(f) for f in found] == expected
    assert sum(map(len, expected)) > 0 or settings.max_score is not None


def test_a_margin_keeps_every_negative_below_the_hardest_positive():
    s = MiningSettings(absolute_margin=0.1, relative_margin=0.2)
    ceiling = ceilings(np.array([0.8, 0.5, -0.5]), np.array([0, 0, 1]), 2, s)
    assert ceiling == pytest.approx([0.5 - 0.1, -0.5 - 0.1])  # the hardest positive of each


def test_random_sampling_draws_within_the_rank_range():
    rng = np.random.default_rng(1)
    anchors, corpus = rng.normal(size=(5, 4)), rng.normal(size=(30, 4))
    none = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))
    top = mine(anchors, np.full(5, np.inf), none, [corpus], MiningSettings(range_max=8))
    s = MiningSettings(num_negatives=3, range_min=2, range_max=8, sampling="random", seed=3)
    drawn = mine(anchors, np.full(5, np.inf), none, [corpus], s)
    window = mine(anchors, np.full(5, np.inf), none, [corpus], MiningSettings(8, 2, 8))
    assert len(drawn.anchor) == 15 and len(top.anchor) == 5
    for i in range(5):
        assert set(drawn.corpus[drawn.anchor == i]) <= set(window.corpus[window.anchor == i])
    again = mine(anchors, np.full(5, np.inf), none, [corpus], s)
    assert np.array_equal(drawn.corpus, again.corpus)  # same seed, same draw


@pytest.fixture
def qa(db):
    """40 documents embedded with 'tiny'; 20 questions whose answer is one of them."""
    words = sql_list(NOUNS)
    db.con.execute(
        f"CREATE TABLE docs AS SELECT i AS id, 'the ' || [{words}][1 + i % 11] || ' and a ' || "
        f"[{words}][1 + (i * 3) % 11] || ' ' || i AS body FROM range(40) t(i)"
    )
    db.con.execute(
        "CREATE TABLE qa AS SELECT 'which ' || split_part(body, ' ', 2) || ' ' || id AS question, "
        "body AS answer FROM docs WHERE id < 20"
    )
    db.add_source("docs", "docs")
    db.add_source("qa", "qa")
    db.generate_text_embeddings("docs", "tiny", ["body"], "id")
    return db


def test_mining_reads_the_corpus_embeddings_and_embeds_only_the_anchors(qa, monkeypatch):
    from jammi_sql.inference.encoder import Encoder

    embedded: list[str] = []
    encode = Encoder.encode

    def counting(self, texts, **kw):
        embedded.extend(texts)
        return encode(self, texts, **kw)

    monkeypatch.setattr(Encoder, "encode", counting)
    message = qa.sql(
        "SELECT mine_hard_negatives('qa', 'tiny', 'question', 'answer', corpus := 'docs', "
        "num_negatives := 2, output := 'qa_hard')"
    ).fetchall()[0][0]
    questions = [r[0] for r in qa.sql("SELECT question FROM qa").fetchall()]
    assert sorted(embedded) == sorted(questions)  # no document embedded again
    assert "40 rows" in message and "0 of 20 anchors got no negative" in message
    rows = qa.sql(
        "SELECT anchor, positive, negative, positive_score FROM jammi.mined_qa_hard"
    ).fetchall()
    answers = dict(qa.sql("SELECT question, answer FROM qa").fetchall())
    assert len(rows) == 40 and all(neg != answers[a] for a, _, neg, _ in rows)
    assert {r[2] for r in rows} <= {r[0] for r in qa.sql("SELECT body FROM docs").fetchall()}


def test_mining_shows_a_progress_bar_for_the_texts_it_embeds(qa, bars):
    qa.sql("SELECT mine_hard_negatives('qa', 'tiny', 'question', 'answer')").fetchall()
    shown = {t.description: (t.done, t.total) for t in bars}
    assert shown == {"embedding the candidates": (20, 20), "embedding the anchors": (20, 20)}


def test_a_margin_that_leaves_no_candidate_writes_an_empty_source_and_counts_the_anchors(qa):
    message = qa.sql(
        "SELECT mine_hard_negatives('qa', 'tiny', 'question', 'answer', corpus := 'docs', "
        "max_score := -1.0)"
    ).fetchall()[0][0]
    assert "20 of 20 anchors got no negative" in message and "loosen the margins" in message
    assert qa.sql("SELECT count(*) FROM jammi.mined_qa_hard_negatives").fetchall() == [(0,)]


def test_mined_triplets_train_with_fine_tune(qa):
    qa.sql(
        "SELECT mine_hard_negatives('qa', 'tiny', 'question', 'answer', corpus := 'docs', "
        "absolute_margin := 0.0, range_max := 40)"
    ).fetchall()
    n = qa.sql("SELECT count(*) FROM jammi.mined_qa_hard_negatives").fetchall()[0][0]
    assert n > 0
    job = qa.fine_tune(
        "qa_hard_negatives",
        "tiny",
        ["anchor", "positive", "negative"],
        epochs=1,
        embedding_loss="multiple_negatives_ranking",
    )
    assert job.wait().status == "succeeded"
    scores = qa.sql(
        "SELECT positive_score - negative_score FROM jammi.mined_qa_hard_negatives"
    ).fetchall()
    assert min(s for (s,) in scores) >= 0  # absolute_margin 0: never above the positive


def test_a_model_trained_on_mined_data_shows_where_the_data_came_from(qa):
    qa.sql(
        "SELECT mine_hard_negatives('qa', 'tiny', 'question', 'answer', corpus := 'docs', "
        "output := 'qa_mined', range_max := 20)"
    ).fetchall()
    job = qa.fine_tune("qa_mined", "tiny", ["anchor", "positive", "negative"], epochs=1).wait()
    lineage = qa.sql(
        "SELECT trained_on, built_by, from_source, mined_with, corpus, settings->>'$.range_max' "
        "FROM jammi.model_lineage WHERE model_id = ?",
        params=[job.model_id],
    ).fetchall()
    assert lineage == [("qa_mined", "mine_hard_negatives", "qa", "tiny", "docs", "20")]
    qa.remove_source("qa_mined")  # the model still shows where its data came from
    assert qa.sql("SELECT count(*) FROM jammi.model_lineage WHERE corpus = 'docs'").fetchall() == [
        (1,)
    ]
