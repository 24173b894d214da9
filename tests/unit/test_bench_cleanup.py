"""The benchmark's cleanup gives up on a wedged engine instead of queueing every removal behind it."""

from __future__ import annotations

import threading
import time
from typing import Any

import docker.errors
import pytest
import requests

from bench.host import CleanupError, remove_labelled


class _Api:
    """``client.api`` of an engine holding ``ids``; ``fail`` says what a removal of an id raises."""

    def __init__(self, ids: list[str], fail: dict[str, Exception], delay_s: float = 0.01) -> None:
        self.ids = list(ids)
        self.fail = fail
        self.delay_s = delay_s
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def containers(self, all: bool, filters: dict[str, str]) -> list[dict[str, Any]]:
        assert all and filters == {"label": "ds01.bench=run"}
        with self.lock:
            return [{"Id": cid} for cid in self.ids]

    def remove_container(self, cid: str, force: bool, v: bool) -> None:
        with self.lock:
            self.calls.append(cid)
        if cid in self.fail:
            raise self.fail[cid]
        time.sleep(self.delay_s)  # a removal takes a while: the failure is seen before the queue drains
        with self.lock:
            self.ids.remove(cid)


class _Client:
    def __init__(self, api: _Api) -> None:
        self.api = api


def test_every_labelled_container_is_removed() -> None:
    api = _Api([f"c{i:03}" for i in range(40)], {})
    assert remove_labelled(_Client(api), "ds01.bench=run", workers=4) == 40  # type: ignore[arg-type]
    assert api.ids == []


def test_a_container_gone_already_counts_as_removed() -> None:
    api = _Api(["a", "b"], {"a": docker.errors.NotFound("no such container")})
    listings = iter([[{"Id": "a"}, {"Id": "b"}], []])  # "a" was removed by someone else meanwhile
    api.containers = lambda all, filters: next(listings)  # type: ignore[method-assign]
    assert remove_labelled(_Client(api), "ds01.bench=run", workers=2) == 2  # type: ignore[arg-type]
    assert sorted(api.calls) == ["a", "b"]


def test_a_wedged_engine_stops_the_cleanup_at_its_first_timeout() -> None:
    ids = [f"c{i:03}" for i in range(200)]
    # Each good removal takes 0.3 s: the cleanup sees the failure long before a worker is free
    # again, however late the machine schedules it.
    api = _Api(ids, {"c000": requests.exceptions.ReadTimeout("read timed out (60 s)")}, delay_s=0.3)
    with pytest.raises(CleanupError) as raised:
        remove_labelled(_Client(api), "ds01.bench=run", workers=4)  # type: ignore[arg-type]
    # Only the requests already in flight were sent, not the other couple of hundred.
    assert len(api.calls) <= 4 + 4
    assert "c000" in str(raised.value) and "ReadTimeout" in str(raised.value)
    assert "python -m bench --cleanup" in str(raised.value)
    assert raised.value.removed == len(api.calls) - 1
