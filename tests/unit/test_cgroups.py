"""Container ids from /proc/<pid>/cgroup text (controller.observe.cgroups), examples and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.observe.cgroups import (
    attribute,
    container_ids_in_path,
    controller_path,
    parse_cgroup,
    unified_path,
)

A = "a" * 64
B = "0123456789abcdef" * 4
SLICE = "/ds01.slice/ds01-student-alice.slice"
POD = "/kubepods.slice/kubepods-pod1.slice"

V1_CGROUPFS = "\n".join(
    [
        f"12:pids:/docker/{A}",
        f"11:cpu,cpuacct:/docker/{A}",
        f"1:name=systemd:/docker/{A}",
        "0::/",
    ]
)


@pytest.mark.parametrize(
    ("text", "expected_id", "expected_path"),
    [
        (V1_CGROUPFS, A, f"/docker/{A}"),
        (f"0::/system.slice/docker-{A}.scope\n", A, f"/system.slice/docker-{A}.scope"),
        (f"0::{SLICE}/docker-{A}.scope\n", A, f"{SLICE}/docker-{A}.scope"),
        (f"4:memory:/ds01.slice/{A}\n0::/\n", A, f"/ds01.slice/{A}"),
        (f"0::{POD}/cri-containerd-{A}.scope\n", A, f"{POD}/cri-containerd-{A}.scope"),
        # A process moved in one v1 hierarchy only (the pids line names a container, others do not).
        (f"9:name=systemd:/\n8:pids:/docker/{A}\n7:blkio:/\n0::/\n", A, f"/docker/{A}"),
        ("0::/user.slice/user-1000.slice/session-3.scope\n", None, ""),
        ("12:pids:/\n0::/init.scope\n", None, ""),
        # Not 64 hex digits, upper case, or an id inside a longer component: not a container.
        (f"0::/docker/{A[:63]}\n", None, ""),
        (f"0::/docker/{A.upper()}\n", None, ""),
        (f"0::/docker/x{A}\n", None, ""),
        # ... but a component carrying a workload id is no bare host cgroup (it is foreign, below).
        (f"0::/system.slice/docker-{A}.service\n", None, f"/system.slice/docker-{A}.service"),
        ("garbage\n\n::\n1:2\n", None, ""),
    ],
)  # fmt: skip
def test_attribution(text: str, expected_id: str | None, expected_path: str) -> None:
    result = attribute(text)
    assert (result.container_id, result.cgroup) == (expected_id, expected_path)


def test_unified_line_is_tried_first() -> None:
    text = f"8:pids:/docker/{B}\n0::/system.slice/docker-{A}.scope\n"
    assert attribute(text).container_id == A


def test_nested_ids_prefer_an_existing_container_else_the_outermost() -> None:
    text = f"0::/docker/{A}/docker/{B}\n"
    assert container_ids_in_path(f"/docker/{A}/docker/{B}") == (A, B)
    assert attribute(text).container_id == A
    assert attribute(text, existing={B}).container_id == B
    assert attribute(text, existing={A, B}).container_id == A


def test_nested_ids_prefer_a_live_container_over_an_existing_one() -> None:
    # --cgroup-parent=/docker/<A> with A created or exited: the running B owns the process.
    text = f"0::/docker/{A}/{B}\n"
    assert attribute(text, existing={A, B}, live={B}).container_id == B
    assert attribute(text, existing={A, B}, live={A}).container_id == A


def test_parse_and_controller_lookups() -> None:
    lines = parse_cgroup(V1_CGROUPFS)
    assert [line.hierarchy_id for line in lines] == [12, 11, 1, 0]
    assert lines[1].controllers == ("cpu", "cpuacct")
    found = controller_path(lines, "cpuacct")
    assert found is not None and found[1] == f"/docker/{A}"
    assert controller_path(lines, "memory") is None
    assert unified_path(lines) == "/"
    assert lines[3].is_unified and not lines[2].is_unified


# --- properties --------------------------------------------------------------------------------

hex64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
safe_component = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-._@", min_size=1, max_size=20).filter(
    lambda c: c not in {".", ".."}
)
wrappers = st.sampled_from(["{}", "docker-{}.scope", "cri-containerd-{}.scope"])


@given(
    cid=hex64,
    prefix=st.lists(safe_component, max_size=4),
    wrapper=wrappers,
    hierarchy=st.sampled_from(["0:", "3:pids", "1:name=systemd", "5:cpu,cpuacct"]),
)
def test_any_container_path_is_recovered(cid: str, prefix: list[str], wrapper: str, hierarchy: str) -> None:
    path = "/" + "/".join([*prefix, wrapper.format(cid)])
    result = attribute(f"{hierarchy}:{path}\n")
    assert result.container_id == cid
    assert result.cgroup == path


@given(text=st.text(alphabet=st.characters(exclude_characters="0123456789abcdef"), max_size=300))
def test_text_without_hex_names_no_container(text: str) -> None:
    assert attribute(text).container_id is None


@given(text=st.text(max_size=500))
def test_never_raises(text: str) -> None:
    result = attribute(text, existing={A})
    assert result.container_id is None or len(result.container_id) == 64
    assert (result.container_id is None) == (result.cgroup == "")
