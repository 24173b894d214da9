"""The saved inspect cache: what the daemon writes and a cold ds01ctl starts from."""

from __future__ import annotations

import os
import pickle
from datetime import UTC, datetime
from pathlib import Path

from controller.observe.docker_adapter import CACHE_FORMAT, DockerObserver, parse_inspect
from controller.store import load_inspect_cache, save_inspect_cache

CID = "c" * 64
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def gpu_container() -> object:
    entry = {
        "Id": CID,
        "Names": ["/nb"],
        "Image": "img",
        "Labels": {"ds01.user": "alice"},
        "State": "running",
    }
    raw = {
        "Id": CID,
        "Created": "2026-11-25T11:00:00Z",
        "State": {"Status": "running", "Pid": 4242, "StartedAt": "2026-11-25T11:00:01Z"},
        "HostConfig": {
            "DeviceRequests": [{"Driver": "", "Count": 0, "DeviceIDs": ["GPU-1"], "Capabilities": [["gpu"]]}]
        },
        "Config": {"Env": []},
    }
    parsed = parse_inspect(raw, entry)
    assert parsed is not None
    return parsed


def observer_with(*containers: object) -> DockerObserver:
    obs = DockerObserver(lambda: None)
    for c in containers:
        obs.import_cache(pickle.dumps((CACHE_FORMAT, [(c, NOW)])))
    return obs


def test_cache_survives_export_and_import(tmp_path: Path) -> None:
    container = gpu_container()
    source = observer_with(container)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    save_inspect_cache(state, source.export_cache())
    assert (state / "inspect-cache.bin").stat().st_mode & 0o077 == 0
    data = load_inspect_cache(state)
    assert data is not None
    target = DockerObserver(lambda: None)
    assert target.import_cache(data) == 1
    assert pickle.loads(target.export_cache())[1] == [(container, NOW)]


def test_a_foreign_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    obs = DockerObserver(lambda: None)
    assert obs.import_cache(pickle.dumps((CACHE_FORMAT, [Evil()]))) == 0
    assert obs.import_cache(b"not a pickle") == 0
    assert obs.import_cache(pickle.dumps(("other-format/9", []))) == 0
    assert not marker.exists()
    assert pickle.loads(obs.export_cache())[1] == []


def test_cache_in_an_untrusted_directory_is_ignored(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    save_inspect_cache(state, observer_with(gpu_container()).export_cache())
    state.chmod(0o777)  # anyone could have replaced the file
    assert load_inspect_cache(state) is None
    assert load_inspect_cache(tmp_path / "missing") is None
