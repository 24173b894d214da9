"""Bad inputs: every error names the file, the line, the field, what was expected and the fix.

Each case writes a small config into a temporary directory, validates it with ``validate_paths``
(what ``ds01ctl validate`` runs) and checks the message. DS01 files are validated as a config
directory; CRD-like specs as files.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from desired_state.errors import PolicyLoadError
from desired_state.load import load_policy
from desired_state.validate import main, validate_paths, validation_errors

DATA = Path(__file__).resolve().parents[1] / "data"
EXAMPLES = Path(__file__).resolve().parents[2] / "crd_like_specs" / "examples"

HEAD = "apiVersion: ds01.io/v1alpha1\n"


def ds01(body: str) -> dict[str, str | bytes]:
    return {"resource-limits.yaml": textwrap.dedent(body)}


def spec(body: str) -> dict[str, str | bytes]:
    return {"specs/policy.yaml": textwrap.dedent(body)}


# name, files, validated path, (file, line, field), substrings of the message
CASES: list[tuple[str, dict[str, str | bytes], str, tuple[str, int, str], list[str]]] = [
    (
        "unit string in a unit-suffixed key",
        ds01('defaults:\n  max_cpus: 4\n  idle_timeout_h: "24h"\n'),
        ".",
        ("resource-limits.yaml", 3, "defaults.idle_timeout_h"),
        ["unit is already in the key name", "bare number such as 24"],
    ),
    (
        "a number in quotes in a unit-suffixed key (the fix keeps the number)",
        ds01('defaults:\n  idle_timeout_h: "0.5"\n'),
        ".",
        ("resource-limits.yaml", 2, "defaults.idle_timeout_h"),
        ["'0.5' is a string", "write 0.5 without the quotes"],
    ),
    (
        "DS01's word for no limit in a unit-suffixed key (the fix is null, not a limit)",
        ds01("defaults:\n  max_runtime_h: never\n"),
        ".",
        ("resource-limits.yaml", 2, "defaults.max_runtime_h"),
        ["'never' is a string", "DS01 reads it as no limit", "write null"],
    ),
    (
        # JSON has no infinity: an infinite threshold was accepted, and a stop's evidence in the
        # daemon's last-pass.json and `plan -o json` showed it as null (no threshold).
        "an infinite DS01 threshold",
        ds01("groups:\n  student:\n    policies:\n      cpu_idle_threshold: .inf\n"),
        ".",
        ("resource-limits.yaml", 4, "groups.student.policies.cpu_idle_threshold"),
        ["inf is not a finite number", "write a finite number"],
    ),
    (
        "an infinite spec threshold",
        spec(
            HEAD + "kind: LifecyclePolicy\nmetadata: {name: p}\nspec:\n  settings:\n"
            "    networkIdleThresholdBytesPerSecond: .inf\n"
        ),
        "specs",
        ("policy.yaml", 6, "spec.settings.networkIdleThresholdBytesPerSecond"),
        ["inf is not a finite number", "write a finite number"],
    ),
    (
        "negative DS01 duration",
        ds01("container_types:\n  docker:\n    max_runtime_h: -2\n"),
        ".",
        ("resource-limits.yaml", 3, "container_types.docker.max_runtime_h"),
        ["negative duration -2"],
    ),
    (
        "negative CRD duration",
        spec(HEAD + "kind: LifecyclePolicy\nmetadata: {name: p}\nspec:\n  settings:\n    maxRuntime: -1h\n"),
        "specs",
        ("policy.yaml", 6, "spec.settings.maxRuntime"),
        ["document 1 (LifecyclePolicy/p)", "negative duration"],
    ),
    (
        "plain number in a CRD duration",
        spec(HEAD + "kind: LifecyclePolicy\nmetadata: {name: p}\nspec:\n  settings:\n    idleTimeout: 48\n"),
        "specs",
        ("policy.yaml", 6, "spec.settings.idleTimeout"),
        ["plain number 48 is ambiguous", "'48h'"],
    ),
    (
        "a CRD duration of more than a century (never is null)",
        spec(
            HEAD
            + "kind: LifecyclePolicy\nmetadata: {name: p}\nspec:\n  settings:\n    maxRuntime: 100000000h\n"
        ),
        "specs",
        ("policy.yaml", 6, "spec.settings.maxRuntime"),
        ["longer than 100 years", "write null for never"],
    ),
    (
        "a DS01 duration of more than a century",
        ds01("defaults:\n  container_hold_after_stop_h: 1000000\n"),
        ".",
        ("resource-limits.yaml", 2, "defaults.container_hold_after_stop_h"),
        ["1000000 hours is longer than 100 years", "write null for never"],
    ),
    (
        "nested YAML aliases that expand to billions of values",
        spec(
            HEAD
            + "kind: LifecyclePolicy\nmetadata: {name: p}\nspec:\n  settings: {}\n"
            + "x-a: &a [l, l, l, l, l, l, l, l, l, l]\n"
            + "".join(
                f"x-{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n"
                for p, n in zip("abcdefgh", "bcdefghi", strict=True)
            )
        ),
        "specs",
        ("policy.yaml", 1, ""),
        ["expands to more than 100,000 values", "fewer nested anchors"],
    ),
    (
        "a YAML 1.1 octal number (030 is 24)",
        ds01("policies:\n  grace_period_m: 030\n"),
        ".",
        ("resource-limits.yaml", 2, "policies.grace_period_m"),
        ["030 is read by YAML as 24, not as written", "write 30 (no leading zero), or quote it"],
    ),
    (
        "a YAML 1.1 base-60 number (1:30 is 90)",
        spec(
            HEAD + "kind: LifecyclePolicy\nmetadata: {name: p}\nspec:\n  settings:\n"
            "    idleDetectionWindow: 1:30\n"
        ),
        "specs",
        ("policy.yaml", 6, "spec.settings.idleDetectionWindow"),
        ["1:30 is read by YAML as 90, not as written", "quote it ('1:30')"],
    ),
    (
        "bare number in an old unsuffixed DS01 key",
        ds01("defaults:\n  max_runtime: 48\n"),
        ".",
        ("resource-limits.yaml", 2, "defaults.max_runtime"),
        ["ambiguous", "use max_runtime_h: 48"],
    ),
    (
        "unknown DS01 key with a suggestion",
        ds01("groups:\n  researcher:\n    idle_timout_h: 1\n"),
        ".",
        ("resource-limits.yaml", 3, "groups.researcher.idle_timout_h"),
        ["unknown key 'idle_timout_h'", "rename it to 'idle_timeout_h'"],
    ),
    (
        "unknown DS01 top-level section",
        ds01("defaults: {}\nadvanced:\n  x: 1\n"),
        ".",
        ("resource-limits.yaml", 2, "advanced"),
        ["unknown key 'advanced'", "expected one of:"],
    ),
    (
        "unknown CRD field with a suggestion",
        spec(HEAD + "kind: UserGroup\nmetadata: {name: g}\nspec:\n  setings: {}\n"),
        "specs",
        ("policy.yaml", 5, "spec.setings"),
        ["unknown field 'setings'", "rename it to 'settings'"],
    ),
    (
        "wrong type in DS01, shown with DS01's key",
        ds01("defaults:\n  max_containers_per_user: three\n"),
        ".",
        ("resource-limits.yaml", 2, "defaults.max_containers_per_user"),
        ["'three' is not a whole number"],
    ),
    (
        "wrong type in CRD",
        spec(
            HEAD
            + "kind: LifecyclePolicy\nmetadata: {name: p}\nspec:\n  settings:\n    gpuIdleThresholdPct: '5'\n"
        ),
        "specs",
        ("policy.yaml", 6, "spec.settings.gpuIdleThresholdPct"),
        ["'5' is not a number", "fix: write a number"],
    ),
    (
        "boolean in a DS01 duration",
        ds01("policies:\n  grace_period_m: yes\n"),
        ".",
        ("resource-limits.yaml", 2, "policies.grace_period_m"),
        ["True is not a number"],
    ),
    (
        "null where never is not allowed",
        ds01("policies:\n  sigterm_grace_s: null\n"),
        ".",
        ("resource-limits.yaml", 2, "policies.sigterm_grace_s"),
        ["null is not allowed here"],
    ),
    (
        "a legacy alias together with its current name",
        ds01("defaults:\n  max_gpu_equivalents: 1\n  max_gpu_slots: 2\n"),
        ".",
        ("resource-limits.yaml", 3, "defaults.max_gpu_slots"),
        ["set the same value", "keep only 'max_gpu_equivalents'"],
    ),
    (
        "a group that is a list",
        ds01("groups:\n  student: [a, b]\n"),
        ".",
        ("resource-limits.yaml", 2, "groups.student"),
        ["expected a mapping"],
    ),
    (
        "an exemption without a time zone",
        {
            "resource-limits.yaml": "defaults: {}\n",
            "lifecycle-exemptions.yaml": "exemptions:\n  - username: a\n    exempt_from: [idle_timeout_h]\n"
            "    reason: r\n    expires_on: 2026-03-31T23:59:59\n",
        },
        ".",
        ("lifecycle-exemptions.yaml", 5, "exemptions[0].expires_on"),
        ["has no time zone", "append Z"],
    ),
    (
        "a DS01 exemption expiring at a bare number (a compact date read as seconds since 1970)",
        {
            "resource-limits.yaml": "defaults: {}\n",
            "lifecycle-exemptions.yaml": "exemptions:\n  - username: a\n    exempt_from: [idle_timeout_h]\n"
            "    reason: r\n    expires_on: 20260331\n",
        },
        ".",
        ("lifecycle-exemptions.yaml", 5, "exemptions[0].expires_on"),
        ["20260331 is a number, not a time", "2026-03-31T23:59:59Z"],
    ),
    (
        "a spec exemption expiring at a bare number",
        spec(
            HEAD + "kind: Exemption\nmetadata: {name: e}\nspec:\n  user: a\n  exemptFrom: [idle]\n"
            "  reason: r\n  expiresAt: 20260331\n"
        ),
        "specs",
        ("policy.yaml", 8, "spec.expiresAt"),
        ["20260331 is a number, not a time", "seconds since 1970"],
    ),
    (
        "a DS01 exemption expiring at a quoted number (read as seconds since 1970 all the same)",
        {
            "resource-limits.yaml": "defaults: {}\n",
            "lifecycle-exemptions.yaml": "exemptions:\n  - username: a\n    exempt_from: [idle_timeout_h]\n"
            "    reason: r\n    expires_on: '20260331'\n",
        },
        ".",
        ("lifecycle-exemptions.yaml", 5, "exemptions[0].expires_on"),
        ["'20260331' is a number, not a time", "2026-03-31T23:59:59Z"],
    ),
    (
        "a spec exemption expiring at a quoted number",
        spec(
            HEAD + "kind: Exemption\nmetadata: {name: e}\nspec:\n  user: a\n  exemptFrom: [idle]\n"
            '  reason: r\n  expiresAt: "1774994399"\n'
        ),
        "specs",
        ("policy.yaml", 8, "spec.expiresAt"),
        ["'1774994399' is a number, not a time", "seconds since 1970"],
    ),
    (
        "an exemption expiring after the last time UTC can write (year 10000 there)",
        spec(
            HEAD + "kind: Exemption\nmetadata: {name: e}\nspec:\n  user: a\n  exemptFrom: [idle]\n"
            "  reason: r\n  expiresAt: 9999-12-31T23:59:59-05:00\n"
        ),
        "specs",
        ("policy.yaml", 8, "spec.expiresAt"),
        ["9999-12-31T23:59:59-05:00 is outside", "write null for a permanent exemption"],
    ),
    (
        "an exemption expiring on a day that does not exist, reported where it is written",
        {
            "resource-limits.yaml": "defaults: {}\n",
            "lifecycle-exemptions.yaml": "exemptions:\n  - username: a\n    exempt_from: [idle_timeout_h]\n"
            "    reason: r\n    expires_on: 2030-01-01T00:00:00Z\n  - username: b\n"
            "    exempt_from: [max_runtime_h]\n    reason: r\n    expires_on: 2026-04-31T23:59:59Z\n",
        },
        ".",
        ("lifecycle-exemptions.yaml", 9, "exemptions[1].expires_on"),
        ["2026-04-31T23:59:59Z cannot be read", "day is out of range for month", "correct the date"],
    ),
    (
        "a spec value that is an impossible date, reported where it is written",
        spec(
            HEAD + "kind: Exemption\nmetadata: {name: e}\nspec:\n  user: a\n  exemptFrom: [idle]\n"
            "  reason: r\n  approvedOn: 2026-02-30\n  expiresAt: null\n"
        ),
        "specs",
        ("policy.yaml", 8, "spec.approvedOn"),
        ["2026-02-30 cannot be read", "correct the date"],
    ),
    (
        "an unknown exempt_from value",
        {
            "resource-limits.yaml": "defaults: {}\n",
            "lifecycle-exemptions.yaml": "exemptions:\n  - username: a\n"
            "    exempt_from: [gpu]\n    reason: r\n",
        },
        ".",
        ("lifecycle-exemptions.yaml", 3, "exemptions[0].exempt_from[0]"),
        ["'gpu' is not allowed", "'idle', 'max_runtime', 'cleanup' or 'resources'"],
    ),
    (
        "a missing members file",
        spec(HEAD + "kind: UserGroup\nmetadata: {name: g}\nspec:\n  membersFile: g.members\n"),
        "specs",
        ("policy.yaml", 5, "spec.membersFile"),
        ["membersFile 'g.members' not found", "create the file or correct the path"],
    ),
    (
        "duplicate names",
        spec(
            HEAD
            + "kind: UserGroup\nmetadata: {name: g}\n---\n"
            + HEAD
            + "kind: UserGroup\nmetadata:\n  name: g\n"
        ),
        "specs",
        ("policy.yaml", 8, "metadata.name"),
        ["document 2 (UserGroup/g)", "duplicate UserGroup name 'g'", "policy.yaml:1"],
    ),
    (
        "two LifecyclePolicies",
        spec(
            HEAD
            + "kind: LifecyclePolicy\nmetadata: {name: a}\n---\n"
            + HEAD
            + "kind: LifecyclePolicy\nmetadata: {name: b}\n"
        ),
        "specs",
        ("policy.yaml", 5, ""),
        ["document 2 (LifecyclePolicy/b)", "a second LifecyclePolicy", "only one may be active"],
    ),
    (
        "two overrides for one user",
        spec(
            HEAD
            + "kind: UserOverride\nmetadata: {name: a}\nspec: {user: u}\n---\n"
            + HEAD
            + "kind: UserOverride\nmetadata: {name: b}\nspec:\n  user: u\n"
        ),
        "specs",
        ("policy.yaml", 10, "spec.user"),
        ["a second UserOverride for user 'u'"],
    ),
    (
        "defaultGroup naming no group",
        spec(HEAD + "kind: LifecyclePolicy\nmetadata: {name: p}\nspec:\n  defaultGroup: students\n"),
        "specs",
        ("policy.yaml", 5, "spec.defaultGroup"),
        ["defaultGroup 'students' names no UserGroup"],
    ),
    (
        "a duplicate YAML key",
        spec(HEAD + "kind: UserGroup\nmetadata: {name: g}\nspec:\n  order: 1\n  order: 2\n"),
        "specs",
        ("policy.yaml", 6, "spec.order"),
        ["duplicate key 'order' (first on line 5)"],
    ),
    (
        "a YAML syntax error",
        spec(HEAD + "kind: UserGroup\nmetadata: {name: g\nspec: {}\n"),
        "specs",
        ("policy.yaml", 4, ""),
        ["YAML syntax error"],
    ),
    (
        "a tab in a spec's indentation",
        spec(HEAD + "kind: UserGroup\nmetadata:\n\tname: g\n"),
        "specs",
        ("policy.yaml", 4, ""),
        ["a tab in the indentation; YAML indents with spaces", "fix: replace the tab with spaces"],
    ),
    (
        "a tab after spaces in a nested block",
        spec(HEAD + "kind: UserGroup\nmetadata:\n  name: g\nspec:\n  order: 1\n \t priority: 2\n"),
        "specs",
        ("policy.yaml", 7, ""),
        ["a tab in the indentation; YAML indents with spaces"],
    ),
    (
        "a tab in a DS01 file's indentation",
        ds01("defaults:\n\tmax_cpus: 4\n"),
        ".",
        ("resource-limits.yaml", 2, ""),
        ["a tab in the indentation; YAML indents with spaces"],
    ),
    (
        "an empty spec file",
        spec(""),
        "specs",
        ("policy.yaml", 1, ""),
        ["holds no documents"],
    ),
    (
        "an empty DS01 file",
        ds01("# all commented out\n"),
        ".",
        ("resource-limits.yaml", 1, ""),
        ["the file is empty"],
    ),
    (
        "a non-UTF-8 file",
        {"specs/policy.yaml": b"# caf\xe9 in latin-1\n" + HEAD.encode() + b"kind: UserGroup\n"},
        "specs",
        ("policy.yaml", 1, ""),
        ["not valid UTF-8", "save the file as UTF-8"],
    ),
    (
        "a UTF-16 file (Windows' 'Unicode'): the fix converts from UTF-16, not from latin-1",
        {"resource-limits.yaml": "\ufeffdefaults: {}\n".encode("utf-16-le")},
        ".",
        ("resource-limits.yaml", 1, ""),
        ["UTF-16", "iconv -f utf-16 -t utf-8"],
    ),
    (
        "an unknown kind",
        spec(HEAD + "kind: Usergroup\nmetadata: {name: g}\n"),
        "specs",
        ("policy.yaml", 2, "kind"),
        ["unknown kind 'Usergroup'", "write kind: UserGroup"],
    ),
    (
        "a document that is not a mapping",
        spec("- just\n- a list\n"),
        "specs",
        ("policy.yaml", 1, ""),
        ["a document must be a mapping"],
    ),
    (
        "an unsafe reset command",
        spec(
            HEAD
            + "kind: LifecyclePolicy\nmetadata: {name: p}\nspec:\n"
            + "  gpuReset:\n    command: [nvidia-smi, -r]\n"
        ),
        "specs",
        ("policy.yaml", 6, "spec.gpuReset.command"),
        ["must name the GPU with '{uuid}'"],
    ),
]


def materialise(tmp_path: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


@pytest.mark.parametrize(("name", "files", "target", "where", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_reported_where_it_is(
    tmp_path: Path,
    name: str,
    files: dict[str, str | bytes],
    target: str,
    where: tuple[str, int, str],
    words: list[str],
) -> None:
    materialise(tmp_path, files)
    errors = validation_errors([tmp_path / target])
    assert errors, f"{name}: expected an error"
    file_name, line, field = where
    matching = [e for e in errors if e.file is not None and Path(e.file).name == file_name and e.line == line]
    assert matching, f"{name}: no error at {file_name}:{line}: {[str(e) for e in errors]}"
    error = matching[0]
    assert error.field == field
    message = str(error)
    assert message.startswith(str(tmp_path))
    assert f"{file_name}:{line}: " in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    # and the same problem stops a load, with the same message
    load_args = {"ds01_config_dir": tmp_path} if target == "." else {"specs_dir": tmp_path / target}
    with pytest.raises(PolicyLoadError) as info:
        load_policy(**load_args)
    assert message in {str(e) for e in info.value.errors}


def test_every_problem_is_reported_in_one_round(tmp_path: Path) -> None:
    materialise(
        tmp_path, ds01("defaults:\n  idle_timeout_h: '1h'\n  memry: 1g\npolicies:\n  grace_period_m: -1\n")
    )
    messages = validate_paths([tmp_path])
    assert len(messages) == 3
    assert [m.split(":")[1] for m in messages] == ["2", "3", "5"]  # sorted by line


@pytest.mark.parametrize(
    "files",
    [
        # comment-only sections are empty, not errors (DS01's a8597c2 crash)
        ds01("defaults:\n  # nothing\ngroups:\n  student:\n    # nothing\ngpu_allocation:\n  # nothing\n"),
        # an expired exemption is valid: it stays on record
        {
            "resource-limits.yaml": "defaults: {}\n",
            "lifecycle-exemptions.yaml": "exemptions:\n  - username: a\n    exempt_from: [idle_timeout_h]\n"
            "    reason: r\n    expires_on: 2001-01-01T00:00:00Z\n",
        },
    ],
    ids=["comment-only sections", "expired exemption"],
)
def test_valid_edge_cases_have_no_errors(tmp_path: Path, files: dict[str, str | bytes]) -> None:
    materialise(tmp_path, files)
    assert validate_paths([tmp_path]) == []


def test_shipped_configs_validate() -> None:
    assert validate_paths([EXAMPLES]) == []
    assert validate_paths([DATA / "ds01"]) == []
    assert validate_paths([DATA / "ds01" / "resource-limits.yaml"]) == []


def test_files_named_together_are_one_policy(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text(HEAD + "kind: LifecyclePolicy\nmetadata: {name: a}\n")
    b.write_text(HEAD + "kind: LifecyclePolicy\nmetadata: {name: b}\n")
    assert validate_paths([a]) == [] and validate_paths([b]) == []
    assert any("a second LifecyclePolicy" in m for m in validate_paths([a, b]))


def test_missing_paths_and_empty_directories(tmp_path: Path) -> None:
    assert "no such file or directory" in validate_paths([tmp_path / "nope.yaml"])[0]
    assert "no *.yaml or *.yml files here" in validate_paths([tmp_path])[0]


def test_main_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(EXAMPLES)]) == 0
    assert capsys.readouterr().out == "valid\n"
    shutil.copytree(EXAMPLES, tmp_path / "specs")
    (tmp_path / "specs" / "broken.yaml").write_text(
        HEAD + "kind: UserGroup\nmetadata: {name: g}\nspec: {order: x}\n"
    )
    assert main([str(tmp_path / "specs")]) == 1
    out = capsys.readouterr().out
    assert "broken.yaml:4: document 1 (UserGroup/g): spec.order: 'x' is not a whole number" in out
    assert "1 problem found" in out
    assert main([]) == 2


# --- values the schema's types allow but the engine refuses ----------------------------------------

_CPUS_WHY = (
    "CPUs is below Docker's minimum of 0.01: the kernel refuses a CPU quota under 1 ms per 100 ms period, "
    "so every docker update of a container's limit would fail; expected at least 0.01; "
    "fix: write at least 0.01 (0.5 is half a CPU)"
)


def _one_error_from_validate_and_load(
    tmp_path: Path, files: dict[str, str | bytes], target: str, where: str, message: str
) -> None:
    """``ds01ctl validate`` gives exactly this one error, and loading the policy fails with it."""
    materialise(tmp_path, files)
    errors = validation_errors([tmp_path / target])
    assert [str(e) for e in errors] == [f"{tmp_path}/{where}: {message}"]
    load_args = {"ds01_config_dir": tmp_path} if target == "." else {"specs_dir": tmp_path / target}
    with pytest.raises(PolicyLoadError) as info:
        load_policy(**load_args)
    assert [str(e) for e in info.value.errors] == [str(errors[0])]


@pytest.mark.parametrize(
    ("files", "target", "where", "message"),
    [
        (
            ds01("defaults:\n  max_cpus: 0.001\n"),
            ".",
            "resource-limits.yaml:2",
            f"document 1: defaults.max_cpus: 0.001 {_CPUS_WHY}",
        ),
        (
            # DS01's legacy name in a group: the key as written, on its line.
            ds01("groups:\n  student:\n    members: [a]\n    cpus: 0.005\n"),
            ".",
            "resource-limits.yaml:4",
            f"document 1: groups.student.cpus: 0.005 {_CPUS_WHY}",
        ),
        (
            {"resource-limits.yaml": "defaults: {}\n", "user-overrides.yaml": "alice:\n  max_cpus: 0.009\n"},
            ".",
            "user-overrides.yaml:2",
            f"document 1: alice.max_cpus: 0.009 {_CPUS_WHY}",
        ),
        (
            spec(
                HEAD + "kind: LifecyclePolicy\nmetadata: {name: p}\nspec:\n  resources:\n    maxCpus: 0.001\n"
            ),
            "specs",
            "specs/policy.yaml:6",
            f"document 1 (LifecyclePolicy/p): spec.resources.maxCpus: 0.001 {_CPUS_WHY}",
        ),
        (
            spec(HEAD + "kind: LifecyclePolicy\nmetadata: {name: p}\nspec:\n  resources:\n    maxCpus: 0\n"),
            "specs",
            "specs/policy.yaml:6",
            "document 1 (LifecyclePolicy/p): spec.resources.maxCpus: 0 is out of range; expected at least "
            "0.01; fix: use a value at least 0.01",
        ),
        (
            ds01("defaults:\n  memory: 4m\n"),
            ".",
            "resource-limits.yaml:2",
            "document 1: defaults.memory: memory 4m is below Docker's minimum of 6Mi; the engine refuses "
            "such a limit; expected at least 6Mi; fix: write at least 6m",
        ),
    ],
    ids=["DS01 default", "DS01 group alias", "DS01 override", "CRD spec", "CRD zero", "memory"],
)
def test_a_limit_docker_refuses_is_an_error_naming_file_field_and_fix(
    tmp_path: Path, files: dict[str, str | bytes], target: str, where: str, message: str
) -> None:
    """maxCpus 0.001 passed (``> 0``) and every ``docker update`` of it failed: the engine takes
    ``--cpus 0.001`` but the kernel refuses its 100 us CFS quota (write ".../cpu.cfs_quota_us:
    invalid argument"). It is the same one-line error as any other, from DS01's files too."""
    _one_error_from_validate_and_load(tmp_path, files, target, where, message)


def test_the_smallest_cpu_limit_docker_takes_is_valid(tmp_path: Path) -> None:
    materialise(tmp_path, ds01("defaults:\n  max_cpus: 0.01\ngroups:\n  student:\n    cpus: 0.5\n"))
    assert validate_paths([tmp_path]) == []


# --- a slice's CPU quota that systemd refuses -------------------------------------------------------

_QUOTA_WHY = (
    "is below systemd's minimum of 0.1%: systemd refuses 0% (and a unit file's is ignored, leaving the "
    "slice without a cap), and the kernel a quota under 1 ms per period, which systemd stretches to at "
    "most 1 s; expected at least 0.1%; fix: write at least 0.1% (100% is one CPU)"
)
_DECIMALS_WHY = (
    "has more decimal places than systemd reads (CPUQuota takes N%, N.N% or N.NN%): systemctl "
    "set-property refuses it, and a unit file's is ignored; expected a percentage with at most two "
    "decimal places; fix: round it to two decimal places"
)


def _group(aggregate: str) -> dict[str, str | bytes]:
    return spec(
        HEAD + "kind: UserGroup\nmetadata: {name: g}\nspec:\n  order: 1\n  resources:\n"
        f"    aggregate: {aggregate}\n"
    )


@pytest.mark.parametrize(
    ("files", "target", "where", "message"),
    [
        (
            _group('{cpuQuota: "0%"}'),
            "specs",
            "specs/policy.yaml:7",
            f"document 1 (UserGroup/g): spec.resources.aggregate.cpuQuota: CPU quota 0% {_QUOTA_WHY}",
        ),
        (
            _group('{cpuQuota: "0.05%"}'),
            "specs",
            "specs/policy.yaml:7",
            f"document 1 (UserGroup/g): spec.resources.aggregate.cpuQuota: CPU quota 0.05% {_QUOTA_WHY}",
        ),
        (
            _group('{cpuQuota: "150.125%"}'),
            "specs",
            "specs/policy.yaml:7",
            f"document 1 (UserGroup/g): spec.resources.aggregate.cpuQuota: 150.125% {_DECIMALS_WHY}",
        ),
        (
            # DS01's group, in its own key names.
            ds01("groups:\n  student:\n    members: [a]\n    aggregate:\n      cpu_quota: 0.0%\n"),
            ".",
            "resource-limits.yaml:5",
            f"document 1: groups.student.aggregate.cpu_quota: CPU quota 0.0% {_QUOTA_WHY}",
        ),
    ],
    ids=["zero", "below 1 ms per second", "three decimals", "DS01 group"],
)
def test_a_cpu_quota_systemd_refuses_is_an_error_naming_file_field_and_fix(
    tmp_path: Path, files: dict[str, str | bytes], target: str, where: str, message: str
) -> None:
    """cpuQuota '0%' passed (any digits and '%') and became a cap of 0 CPUs, which every CPU limit
    exceeds; systemd refuses it (a unit file's is ignored), and the kernel any quota under 1 ms per
    period, which systemd stretches to at most 1 s: 0.1% is the least it applies."""
    _one_error_from_validate_and_load(tmp_path, files, target, where, message)


@pytest.mark.parametrize("quota", ["0.1%", "0.25%", "12.5%", "9600%"])
def test_a_cpu_quota_systemd_applies_is_valid(tmp_path: Path, quota: str) -> None:
    materialise(tmp_path, _group(f'{{cpuQuota: "{quota}"}}'))
    assert validate_paths([tmp_path / "specs"]) == []


def test_a_field_of_an_optional_section_is_described_by_its_own_description(tmp_path: Path) -> None:
    """``aggregate`` is optional (``Aggregate | None``): a malformed ``cpuQuota`` said "expected
    Per-user slice caps; null: no cap", the section's description, not what a cpuQuota looks like."""
    materialise(
        tmp_path,
        spec(
            HEAD + "kind: LifecyclePolicy\nmetadata: {name: p}\nspec:\n  resources:\n    aggregate:\n"
            "      cpuQuota: abc\n      memoryMax: xyz\n"
        ),
    )
    assert [str(e) for e in validation_errors([tmp_path / "specs"])] == [
        f"{tmp_path}/specs/policy.yaml:7: document 1 (LifecyclePolicy/p): spec.resources.aggregate.cpuQuota: "
        "'abc' is not in the expected form; expected systemd CPUQuota, e.g. '9600%' (96 CPUs); at least 0.1% "
        "(systemd's least), at most two decimal places",
        f"{tmp_path}/specs/policy.yaml:8: document 1 (LifecyclePolicy/p): "
        "spec.resources.aggregate.memoryMax: 'xyz' is not in the expected form; expected e.g. '96G'",
    ]
