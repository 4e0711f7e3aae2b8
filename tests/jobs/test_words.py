import numpy as np
import pyarrow as pa

from jobs.words import mean_pool_matrix, pool_example_words, target_pooling, word_pooling


def _tokens():
    # example 0: CLS, w0 (2 subwords), w1, SEP ; example 1: w0, w1 (target, 2 subwords)
    return pa.table({
        "example_id": pa.array([0, 0, 0, 0, 0, 1, 1, 1], pa.int64()),
        "word_id": pa.array([-1, 0, 0, 1, -1, 0, 1, 1], pa.int32()),
        "token_id": pa.array([1, 10, 11, 12, 2, 13, 14, 15], pa.int64()),
        "is_target": pa.array([False, False, False, True, False, False, True, True]),
    })


X = np.arange(8, dtype=np.float32)[:, None] * np.array([[1.0, 10.0]], dtype=np.float32)


def test_mean_pool_matrix_averages_rows_of_each_group():
    m = mean_pool_matrix(np.array([0, 0, 1]), 2)
    np.testing.assert_allclose(m @ np.array([[2.0], [4.0], [7.0]]), [[3.0], [7.0]])


def test_word_pooling_means_subwords_and_skips_tokens_outside_words():
    p = word_pooling(_tokens())
    assert list(zip(p.example_id.tolist(), p.key.tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert p.rows.tolist() == [1, 2, 3, 5, 6, 7]
    out = p.apply(X[p.rows])
    np.testing.assert_allclose(out[:, 0], [1.5, 3.0, 5.0, 6.5])
    assert p.lookup([0, 1, 1], [1, 1, 5]).tolist() == [1, 3, -1]


def test_word_pooling_restricted_to_examples():
    p = word_pooling(_tokens(), example_ids=[1])
    assert p.example_id.tolist() == [1, 1]


def test_target_pooling_gives_one_mean_vector_per_example():
    p = target_pooling(_tokens())
    np.testing.assert_allclose(p.apply(X[p.rows])[:, 0], [3.0, 6.5])


def test_example_vector_is_mean_of_its_word_vectors():
    out = pool_example_words(np.array([0, 0, 1]), np.array([[1.0], [3.0], [5.0]]), np.array([1, 0, 7]))
    np.testing.assert_allclose(out[:, 0], [5.0, 2.0, 0.0])
