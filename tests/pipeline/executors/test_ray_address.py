"""An unreachable Ray address is refused in seconds, with one line, before Ray starts: Ray's own
client retries for ~40 s first (a ray:// address), its driver ~14 minutes (a host:port one)."""

from __future__ import annotations

import socket
import time

import pytest

from pipeline.errors import LayerprobeError
from pipeline.executors import ray_executor
from pipeline.executors.ray_executor import check_ray_reachable, connect_ray


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed on leaving: nothing listens there now


@pytest.fixture()
def no_ray_init(monkeypatch):
    """Ray as if not started, and any attempt to start it a test failure."""
    import ray

    def init(*args, **kwargs):
        raise AssertionError(f"ray.init was called: {args} {kwargs}")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)


def test_a_closed_ray_client_port_is_refused_quickly_with_one_line():
    port = _closed_port()
    address = f"ray://127.0.0.1:{port}"
    t0 = time.monotonic()
    with pytest.raises(LayerprobeError) as info:
        check_ray_reachable(address)
    assert time.monotonic() - t0 < 10
    msg = str(info.value)
    assert "\n" not in msg and address in msg and "ray start --head" in msg
    assert "refused" in msg.lower()  # the OS's reason


def test_connect_ray_refuses_a_closed_ray_client_port_without_starting_ray(no_ray_init):
    address = f"ray://127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(LayerprobeError, match="cannot reach the Ray client server"):
        connect_ray(address)
    assert time.monotonic() - t0 < 10


def test_a_listening_ray_client_port_passes_the_check():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        check_ray_reachable(f"ray://127.0.0.1:{port}")
        check_ray_reachable(f"ray://localhost:{port}/")


@pytest.fixture()
def connects(monkeypatch) -> list:
    """The (host, port), timeout of every TCP connect the check makes; each one succeeds."""
    seen = []

    class Conn:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def create_connection(addr, timeout):
        seen.append((addr, timeout))
        return Conn()

    monkeypatch.setattr(ray_executor.socket, "create_connection", create_connection)
    return seen


def test_the_default_ray_client_port_is_10001(connects):
    check_ray_reachable("ray://head.example")
    assert connects == [(("head.example", 10001), ray_executor.RAY_CONNECT_TIMEOUT_S)]
    assert 3 <= ray_executor.RAY_CONNECT_TIMEOUT_S <= 5


@pytest.mark.parametrize("address", [None, "", "auto", "local"])
def test_addresses_ray_resolves_itself_are_left_to_ray(address, monkeypatch):
    def create_connection(*args, **kwargs):
        raise AssertionError(f"{address!r} was checked")

    monkeypatch.setattr(ray_executor.socket, "create_connection", create_connection)
    check_ray_reachable(address)


@pytest.mark.parametrize("address", ["ray://host:notaport", "ray://:10001"])
def test_a_malformed_ray_client_address_is_one_line(address):
    with pytest.raises(LayerprobeError, match="malformed Ray address") as info:
        check_ray_reachable(address)
    assert "\n" not in str(info.value)


def test_a_closed_head_port_is_refused_in_seconds_not_after_rays_fourteen_minutes(no_ray_init):
    port = _closed_port()
    t0 = time.monotonic()
    with pytest.raises(LayerprobeError, match=rf"cannot reach the Ray head \(GCS\) at 127.0.0.1:{port}") as info:
        connect_ray(f"127.0.0.1:{port}")
    assert time.monotonic() - t0 < 10 and "--port" in str(info.value) and "\n" not in str(info.value)


def test_a_head_address_without_a_port_is_checked_on_rays_default_6379(connects):
    check_ray_reachable("head.example")
    check_ray_reachable("10.0.0.5:6380")
    assert [addr for addr, _ in connects] == [("head.example", 6379), ("10.0.0.5", 6380)]
