"""DS01's type, owner and flag rules (controller.observe.classify), examples and properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller import labels as L
from controller.observe.classify import (
    UNKNOWN_OWNER,
    classify,
    home_user,
    is_plausible_user_name,
    uid_from_name,
)
from controller.snapshot import OwnerRule, TypeRule
from crd_like_specs.vocabulary import ContainerType

CT, TR, OR = ContainerType, TypeRule, OwnerRule
DEV_FOLDER, WORK_DIR, CTYPE, IFACE = (
    L.DEVCONTAINER_LOCAL_FOLDER,
    L.COMPOSE_WORKING_DIR,
    L.DS01_CONTAINER_TYPE,
    L.DS01_INTERFACE,
)
USERS = {1000: "alice", 1001: "bob", 0: "root", 2000: "h.baker@example.org"}


def lookup(uid: int) -> str | None:
    return USERS.get(uid)


def no_lookup(uid: int) -> str | None:
    return None


# --- type ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "labels", "expected", "rule"),
    [
        ("x", {CTYPE: "compose", IFACE: "api"}, CT.COMPOSE, TR.LABEL_CONTAINER_TYPE),
        ("x", {CTYPE: " DevContainer "}, CT.DEVCONTAINER, TR.LABEL_CONTAINER_TYPE),
        ("a._.1000", {IFACE: "orchestration"}, CT.ORCHESTRATION, TR.LABEL_INTERFACE),
        ("x", {IFACE: "vscode"}, CT.DEVCONTAINER, TR.LABEL_INTERFACE),
        ("x", {IFACE: "api"}, CT.API, TR.LABEL_INTERFACE),
        ("proj._.1000", {"devcontainer.local_folder": "/home/a/x"}, CT.ATOMIC, TR.AIME_NAME),
        ("x", {"devcontainer.x": "", "com.docker.compose.x": ""}, CT.DEVCONTAINER, TR.DEVCONTAINER_LABEL),
        ("vsc-proj-abc", {"com.docker.compose.project": "p"}, CT.DEVCONTAINER, TR.VSC_NAME),
        ("web_1", {"com.docker.compose.service": "web"}, CT.COMPOSE, TR.COMPOSE_LABEL),
        ("plain", {}, CT.DOCKER, TR.DEFAULT),
        # A value that is no known type does not decide: the next rule does.
        ("x", {CTYPE: "banana", IFACE: "atomic"}, CT.ATOMIC, TR.LABEL_INTERFACE),
        ("x", {CTYPE: "", IFACE: "  "}, CT.DOCKER, TR.DEFAULT),
        ("x", {CTYPE: "unknown"}, CT.UNKNOWN, TR.LABEL_CONTAINER_TYPE),
    ],
)  # fmt: skip
def test_type_chain(name: str, labels: dict[str, str], expected: ContainerType, rule: TypeRule) -> None:
    verdict = classify(name, labels, None, lookup)
    assert (verdict.container_type, verdict.type_rule) == (expected, rule)


# --- owner -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "labels", "uid", "owner", "rule"),
    [
        ("a._.1001", {L.DS01_USER: "alice", L.AIME_USER: "bob"}, 1001, "alice", OR.LABEL_DS01_USER),
        ("x", {L.AIME_USER: "bob", DEV_FOLDER: "/home/alice/p"}, None, "bob", OR.LABEL_AIME_USER),
        ("x", {DEV_FOLDER: "/home/carol/", WORK_DIR: "/home/d"}, None, "carol", OR.DEVCONTAINER_LOCAL_FOLDER),
        ("x", {DEV_FOLDER: "/home/carol"}, None, "carol", OR.DEVCONTAINER_LOCAL_FOLDER),
        ("x", {WORK_DIR: "/home/dave/p"}, 1000, "dave", OR.COMPOSE_WORKING_DIR),
        ("proj._.1001", {}, 1000, "bob", OR.NAME_UID),
        ("proj._.2000", {}, None, "h.baker@example.org", OR.NAME_UID),
        # The name's uid has no password entry: the main process decides.
        ("proj._.4242", {}, 1000, "alice", OR.PROCESS_UID),
        ("plain", {}, 0, "root", OR.PROCESS_UID),
        ("plain", {}, None, UNKNOWN_OWNER, OR.UNKNOWN),
        ("plain", {}, 4242, UNKNOWN_OWNER, OR.UNKNOWN),
        # Implausible values never become owners; the chain moves on.
        ("x", {L.DS01_USER: "al ice", L.AIME_USER: "bob"}, None, "bob", OR.LABEL_AIME_USER),
        ("x", {L.DS01_USER: "../../etc", DEV_FOLDER: "/home/../etc"}, None, UNKNOWN_OWNER, OR.UNKNOWN),
        ("x", {L.DS01_USER: "a\x1b[31mb"}, 1001, "bob", OR.PROCESS_UID),
        ("x", {L.DS01_USER: "  alice\n"}, None, "alice", OR.LABEL_DS01_USER),
        ("x", {DEV_FOLDER: "/mnt/home/bob/x"}, None, UNKNOWN_OWNER, OR.UNKNOWN),
        ("x", {L.DS01_USER: "a" * 1_000_000}, None, UNKNOWN_OWNER, OR.UNKNOWN),
        ("x._.99999999999999999999", {}, None, UNKNOWN_OWNER, OR.UNKNOWN),
    ],
)  # fmt: skip
def test_owner_chain(name: str, labels: dict[str, str], uid: int | None, owner: str, rule: OwnerRule) -> None:
    verdict = classify(name, labels, uid, lookup)
    assert (verdict.owner, verdict.owner_rule) == (owner, rule)


def test_process_uid_is_used_only_when_given() -> None:
    # A stopped container has no main process: the caller passes None, and nothing is guessed.
    assert classify("plain", {}, None, lookup).owner_rule == OwnerRule.UNKNOWN
    assert classify("plain", {}, 1000, lookup).owner == "alice"


def test_password_database_answer_is_checked_too() -> None:
    verdict = classify("proj._.5", {}, None, lambda uid: "evil\nname")
    assert verdict.owner_rule == OwnerRule.UNKNOWN


# --- flags -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "managed", "protected", "monitoring"),
    [
        ({}, False, False, False),
        ({L.DS01_MANAGED: "true"}, True, False, False),
        ({L.DS01_MANAGED: "TRUE"}, True, False, False),
        ({L.AIME_DS01_MANAGED: "True"}, True, False, False),
        ({L.DS01_MANAGED: "false", L.AIME_DS01_MANAGED: "yes"}, False, False, False),
        ({L.DS01_PROTECTED: " true "}, False, True, False),
        ({L.DS01_MONITORING: "tRuE"}, False, False, True),
        ({L.DS01_PROTECTED: "1", L.DS01_MONITORING: "true\x00"}, False, False, False),
    ],
)
def test_flags(labels: dict[str, str], managed: bool, protected: bool, monitoring: bool) -> None:
    verdict = classify("x", labels, None, lookup)
    assert (verdict.managed, verdict.protected, verdict.monitoring) == (managed, protected, monitoring)


# --- path and name parsing ------------------------------------------------------------------


def test_home_user_and_uid_from_name() -> None:
    assert home_user("/home/alice/") == "alice"
    assert home_user("/home/alice") == "alice"
    assert home_user("/home//x") is None
    assert home_user("/home/") is None
    assert home_user("home/alice/x") is None
    assert uid_from_name("a._.b._.1000") == 1000
    assert uid_from_name("a._.1000x") is None
    assert uid_from_name("a._.") is None
    assert uid_from_name("a.1000") is None


# --- properties ------------------------------------------------------------------------------

label_keys = st.sampled_from(
    [
        L.DS01_USER,
        L.AIME_USER,
        L.DS01_CONTAINER_TYPE,
        L.DS01_INTERFACE,
        L.DEVCONTAINER_LOCAL_FOLDER,
        L.COMPOSE_WORKING_DIR,
        L.DS01_MANAGED,
        L.DS01_PROTECTED,
        L.DS01_MONITORING,
        "devcontainer.metadata",
        "com.docker.compose.project",
        "other",
    ]
) | st.text(max_size=30)
label_values = st.text(max_size=200) | st.sampled_from(
    ["true", "vscode", "/home/alice/x", "compose", "alice"]
)
names = st.text(max_size=80) | st.builds(
    lambda a, b: f"{a}._.{b}", st.text(max_size=20), st.text(max_size=12)
)
uids = st.none() | st.integers(min_value=-(2**70), max_value=2**70)


def any_lookup(uid: int) -> str | None:
    return USERS.get(uid)


@settings(max_examples=300)
@given(name=names, labels=st.dictionaries(label_keys, label_values, max_size=8), uid=uids)
def test_never_raises_and_owner_is_safe(name: str, labels: dict[str, str], uid: int | None) -> None:
    verdict = classify(name, labels, uid, any_lookup)
    assert verdict.owner == UNKNOWN_OWNER or is_plausible_user_name(verdict.owner)
    if verdict.owner_rule == OwnerRule.UNKNOWN:
        assert verdict.owner == UNKNOWN_OWNER
    # Deterministic: same inputs, same verdict.
    assert classify(name, dict(labels), uid, any_lookup) == verdict


@given(
    user=st.from_regex(r"[a-z_][a-z0-9_.-]{0,30}", fullmatch=True).filter(lambda u: u not in {".", ".."}),
    name=names,
    labels=st.dictionaries(label_keys, label_values, max_size=6),
    uid=uids,
)
def test_ds01_user_label_always_wins(user: str, name: str, labels: dict[str, str], uid: int | None) -> None:
    verdict = classify(name, {**labels, L.DS01_USER: user}, uid, any_lookup)
    assert (verdict.owner, verdict.owner_rule) == (user, OwnerRule.LABEL_DS01_USER)


@given(
    value=st.sampled_from([t.value for t in ContainerType]),
    name=names,
    labels=st.dictionaries(label_keys, label_values, max_size=6),
)
def test_container_type_label_always_wins(value: str, name: str, labels: dict[str, str]) -> None:
    verdict = classify(name, {**labels, L.DS01_CONTAINER_TYPE: value}, None, no_lookup)
    assert verdict.container_type == ContainerType(value)
    assert verdict.type_rule == TypeRule.LABEL_CONTAINER_TYPE


@given(
    name=names.filter(lambda n: "._." not in n and not n.startswith("vsc-")),
    other=st.dictionaries(st.text(max_size=20).map(lambda k: "x" + k), st.text(max_size=20), max_size=4),
)
def test_without_type_evidence_type_is_docker(name: str, other: dict[str, str]) -> None:
    verdict = classify(name, other, None, no_lookup)
    assert (verdict.container_type, verdict.type_rule) == (ContainerType.DOCKER, TypeRule.DEFAULT)
