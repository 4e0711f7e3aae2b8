from pipeline.executors.planning import estimate_bytes, plan_shards


def test_shards_own_disjoint_chunk_aligned_row_ranges():
    plan = plan_shards([10, 20, 5, 40, 3, 8], [10, 20, 5, 40, 3, 8], shard_tokens=25, chunk_rows=16)
    assert [(s.example_start, s.example_end) for s in plan.shards] == [(0, 2), (2, 4), (4, 6)]
    end = 0
    for s in plan.shards:
        assert s.row_start % 16 == 0 and s.n_rows_padded % 16 == 0
        assert s.row_start >= end and s.n_rows_padded >= s.n_tokens
        end = s.row_start + s.n_rows_padded
    assert plan.n_rows == end


def test_plan_is_cut_by_input_tokens_and_sized_by_kept_tokens():
    plan = plan_shards([50, 50, 50], [1, 0, 2], shard_tokens=100, chunk_rows=8)
    assert [s.n_tokens for s in plan.shards] == [1, 2]
    assert [s.n_rows_padded for s in plan.shards] == [8, 8]


def test_plan_depends_only_on_the_data_and_config():
    a = plan_shards([7] * 100, [7] * 100, shard_tokens=64, chunk_rows=32)
    b = plan_shards([7] * 100, [7] * 100, shard_tokens=64, chunk_rows=32)
    assert a == b


def test_size_estimate_counts_every_layer_and_the_static_table():
    plan = plan_shards([100], [100], shard_tokens=1000, chunk_rows=64)
    est = estimate_bytes(plan, n_layers=3, d_model=8, itemsize=4, vocab_size=10)
    assert est["per_layer"] == 100 * 8 * 4  # real rows; chunk padding compresses to nothing
    assert est["total"] == 3 * 100 * 8 * 4 + 10 * 8 * 4 + est["tables"]


def test_shards_are_equal_cuts_without_a_small_remainder():
    # 17 x 10 tokens at shard_tokens=100: two shards of ~85, not 100 + a 70-token tail (a small
    # remainder shard pads badly, since batches are length-sorted within a shard).
    plan = plan_shards([10] * 17, [10] * 17, shard_tokens=100, chunk_rows=8)
    work = [10 * (s.example_end - s.example_start) for s in plan.shards]
    assert len(work) == 2 and max(work) - min(work) <= 10 and sum(work) == 170


def test_an_example_longer_than_a_shard_makes_no_empty_shards():
    plan = plan_shards([5, 400, 5], [5, 400, 5], shard_tokens=100, chunk_rows=8)
    assert [(s.example_start, s.example_end) for s in plan.shards] == [(0, 2), (2, 3)]
    assert plan_shards([], [], shard_tokens=100, chunk_rows=8).shards == []
