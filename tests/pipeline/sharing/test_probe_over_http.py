"""A probe reads a store served over plain HTTP and gets the same numbers as from disk."""

from jobs.wic import run_wic


def test_wic_probe_over_http_matches_the_local_store(http_url, wic_built_store, tmp_path):
    remote = run_wic(store=f"{http_url}/wic.zarr", out=tmp_path / "remote", fit="train", eval="dev", echo=False)
    local = run_wic(store=str(wic_built_store), out=tmp_path / "local", fit="train", eval="dev", echo=False)
    assert remote == local
    assert {r["layer"] for r in remote} == {"static", 0, 1, 2, 3}
    assert (tmp_path / "remote" / "wic.png").stat().st_size > 0
