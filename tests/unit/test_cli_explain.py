"""``ds01ctl explain``: the kinds' fields from their own schemas, with did-you-mean."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from controller.cli.errors import CliError
from controller.cli.explain import explain
from controller.cli.main import main


def test_explain_a_field_gives_its_type_and_description() -> None:
    text = explain("LifecyclePolicy.spec.settings.idleTimeout")
    assert text.splitlines()[:3] == [
        "KIND:     LifecyclePolicy",
        "VERSION:  ds01.io/v1alpha1",
        "FIELD:    spec.settings.idleTimeout <duration or null>",
    ]
    assert "Stop a container after this long idle" in text


def test_explain_an_object_lists_its_fields_and_a_map_takes_any_key() -> None:
    text = explain("usergroup.spec.containerTypes.docker")
    assert "FIELDS:" in text and "  maxRuntime  <duration or null>" in text
    assert "  gracePeriod  <duration>" in text
    assert "  user  <string> (required)" in explain("Exemption.spec")


@pytest.mark.parametrize(
    ("path", "hint"),
    [
        ("LifecylePolicy", "did you mean LifecyclePolicy?"),
        ("LifecyclePolicy.spec.setings", "did you mean settings?"),
    ],
)
def test_explain_refuses_what_does_not_exist_with_a_hint(path: str, hint: str) -> None:
    with pytest.raises(CliError, match=hint):
        explain(path)


def test_explain_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "UserOverride"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("KIND:     UserOverride") and "FIELDS:" in out


def test_explain_exemption_names_every_rule_an_exemption_can_hold_off() -> None:
    # ExemptFrom has four values; the kind's description named three ("idle stops, runtime stops or
    # cleanup"), leaving out the resource rules (the limits and the quota stops).
    from controller.cli.explain import explain
    from crd_like_specs.vocabulary import ExemptFrom

    head = " ".join(explain("Exemption").split("FIELDS:")[0].split())
    assert len(ExemptFrom) == 4 and "resource" in head, head


def test_explain_a_list_of_objects_lists_the_fields_of_each_item_and_walks_into_them() -> None:
    # `explain LifecyclePolicy.spec.protect` listed no field, and `...protect.name` was refused with
    # "ds01ctl explain LifecyclePolicy.spec.protect lists its fields", which it did not.
    text = explain("LifecyclePolicy.spec.protect")
    assert "FIELD:    spec.protect <[]object>" in text
    assert "FIELDS:" in text and "  name  <" in text and "  labels  <" in text
    assert "Containers never stopped or removed" in text
    field = explain("LifecyclePolicy.spec.monitoring.labels")
    assert field.splitlines()[2].startswith("FIELD:    spec.monitoring.labels <")
    assert "(a map: each key holds a string)" in field and "fields below" not in field


@pytest.mark.parametrize("path", ["", ".", ".."])
def test_explain_of_no_kind_names_the_kinds(path: str, capsys: pytest.CaptureFixture[str]) -> None:
    # It said "ValueError: not enough values to unpack (expected at least 1, got 0)".
    assert main(["explain", path]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ValueError" not in err, err
    assert "name a kind" in err and "LifecyclePolicy" in err


def test_explain_warn_lead_and_keepalive_max_age_say_what_the_rules_do() -> None:
    """warnLead also leads a quota stop, uncapped (the quota rule waits the full lead after its
    warning); keepaliveMaxAge counts from the file's mtime or the controller's first sighting,
    whichever ends first (touching the file again buys no more)."""
    lead = explain("LifecyclePolicy.spec.settings.warnLead")
    assert "quota stop (not capped)" in lead and "20% of the timeout" in lead, lead
    cap = explain("LifecyclePolicy.spec.settings.keepaliveMaxAge")
    assert "first saw it" in cap and "whichever ends first" in cap, cap


def test_explain_refuses_a_map_key_validate_refuses_and_names_the_keys_it_takes(tmp_path: Path) -> None:
    # containerTypes takes the container types only: validate refuses `bogus`, and explain
    # described spec.containerTypes.bogus.maxRuntime as a duration, a field that does not exist.
    spec = tmp_path / "lp.yaml"
    spec.write_text(
        "apiVersion: ds01.io/v1alpha1\nkind: LifecyclePolicy\nmetadata: {name: default}\n"
        "spec:\n  containerTypes:\n    bogus:\n      maxRuntime: 2h\n"
    )
    assert main(["validate", "--env-file", "", str(spec)]) == 1
    with pytest.raises(
        CliError, match=re.escape("'bogus' is not a key of LifecyclePolicy.spec.containerTypes")
    ):
        explain("LifecyclePolicy.spec.containerTypes.bogus.maxRuntime")
    with pytest.raises(CliError, match=re.escape("did you mean docker?")):
        explain("UserGroup.spec.containerTypes.dokcer")
    text = explain("LifecyclePolicy.spec.containerTypes")
    assert "(a map: each key, one of devcontainer, compose, docker, atomic," in text, text
