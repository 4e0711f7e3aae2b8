"""Fixtures for the sharing tests: one small real store (tiny BERT, 2 shards, chunk_rows 16), and
real servers on loopback (python -m http.server, moto's S3 server), stopped after use."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@pytest.fixture(scope="session")
def built_store(tiny_bert, tmp_path_factory, corpus) -> Path:
    """A complete store, never modified: tests that damage a store copy it first (`store`)."""
    from pipeline.executors.extract_job import run_extract
    from schemas.job import ExtractSpec

    d = tmp_path_factory.mktemp("sharing_src")
    data = d / "x.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus))
    out = d / "s.zarr"
    run_extract(ExtractSpec(model=str(tiny_bert), data=str(data), out=str(out), shard_tokens=40, chunk_rows=16),
                executor="local", progress=False)
    return out


@pytest.fixture
def store(built_store, tmp_path) -> Path:
    """A private copy of the store, safe to damage."""
    dst = tmp_path / "s.zarr"
    shutil.copytree(built_store, dst)
    return dst


@pytest.fixture(scope="session")
def wic_built_store(tiny_bert, tmp_path_factory) -> Path:
    """A WiC store from the bundled sample (train + dev pairs), for probes over URLs."""
    from pipeline.executors.extract_job import run_extract
    from pipeline.samples import SAMPLES_DIR
    from schemas.job import ExtractSpec

    out = tmp_path_factory.mktemp("sharing_wic") / "wic.zarr"
    run_extract(ExtractSpec(model=str(tiny_bert), data=str(SAMPLES_DIR / "wic"), out=str(out)),
                executor="local", progress=False)
    return out


@pytest.fixture(scope="session")
def http_root(built_store, wic_built_store, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("www")
    shutil.copytree(built_store, root / "s.zarr")
    shutil.copytree(wic_built_store, root / "wic.zarr")
    return root


# A static host without directory listings (S3/GCS over https, nginx without autoindex): a
# directory URL is a 404 even when files inside it exist.
NO_LISTING_SERVER = r"""
import functools, http.server, os, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    def send_head(self):
        if os.path.isdir(self.translate_path(self.path)):
            self.send_error(404)
            return None
        return super().send_head()
    def log_message(self, *args):
        pass
port, root = int(sys.argv[1]), sys.argv[2]
http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Handler, directory=root)).serve_forever()
"""


def _serve(args: list[str], port: int):
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def http_url(http_root):
    port = free_port()
    yield from _serve([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port),
                       "--directory", str(http_root)], port)


@pytest.fixture(scope="session")
def http_url_no_listing(http_root):
    port = free_port()
    yield from _serve([sys.executable, "-c", NO_LISTING_SERVER, str(port), str(http_root)], port)


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on a free loopback port, with fake credentials in the environment."""
    from moto.server import ThreadedMotoServer

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_SESSION_TOKEN": "testing"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_endpoint):
    import uuid

    import s3fs

    name = f"lp-{uuid.uuid4().hex[:10]}"
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}, skip_instance_cache=True)
    fs.mkdir(name)
    return name
