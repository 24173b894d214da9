"""Container type, owner and flags, decided exactly as DS01 decides them (a pure function).

Owns the DS01 classification rules (notes sections 2.1-2.3, label-schema.yaml):

* **type**: ``ds01.container_type`` -> ``ds01.interface`` (``vscode`` means devcontainer) -> a ``._.``
  in the name (atomic) -> any ``devcontainer.*`` label or a ``vsc-`` name prefix (devcontainer) ->
  any ``com.docker.compose.*`` label (compose) -> ``docker``.
* **owner**: ``ds01.user`` -> ``aime.mlc.USER`` -> ``/home/<user>/`` at the start of
  ``devcontainer.local_folder`` -> the same in ``com.docker.compose.project.working_dir`` -> the uid
  of a ``<name>._.<uid>`` name, looked up in the password database -> the uid of the container's
  main process (running containers only), looked up the same way -> ``unknown``.
* **flags**: managed (``ds01.managed`` or ``aime.mlc.DS01_MANAGED``), ``ds01.protected`` and
  ``ds01.monitoring``; each is set by the value ``true`` compared case-insensitively.

Called by :mod:`controller.observe.host` for every container. Pure: the password database is
reached only through the ``uid_to_name`` callable the caller passes, so the rules are property-tested
without a host. Labels and names are untrusted input (any user can set them): a value that is empty,
over-long, or not a plausible user name / type does not decide anything and the chain moves on to the
next rule; nothing here raises on any string.

Choices worth knowing:

* A type label whose value is not a known type (``ds01.container_type=banana``) does not decide the
  type; the next rule does. ``vscode`` is read as ``devcontainer`` in both type labels.
* ``/home/<user>`` must start the path (``/mnt/home/bob`` says nothing about bob); ``.`` and ``..``
  are never user names.
* The main process rule follows DS01 (``detect-workloads.py``): a container whose main process runs
  as root is owned by ``root``. The policy layer decides what that owner gets.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from controller import labels as L
from controller.snapshot import OwnerRule, TypeRule
from crd_like_specs.vocabulary import ContainerType

UNKNOWN_OWNER = "unknown"

# Login names as DS01 sees them, including LDAP-style "h.baker@example.org". Anything else (control
# characters, slashes, spaces, a megabyte of text) is not an owner.
_USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,127}\Z")
_HOME_PREFIX = "/home/"
# A uid has at most 10 digits (2**32 - 1); longer digit strings are not uids.
_UID = re.compile(r"[0-9]{1,10}\Z")
_MAX_UID = 2**32 - 1

_TYPE_ALIASES: Mapping[str, ContainerType] = {
    **{t.value: t for t in ContainerType},
    "vscode": ContainerType.DEVCONTAINER,
}


@dataclass(frozen=True, slots=True)
class Classification:
    container_type: ContainerType
    type_rule: TypeRule
    owner: str
    owner_rule: OwnerRule
    managed: bool
    protected: bool
    monitoring: bool


UidToName = Callable[[int], str | None]


def is_plausible_user_name(value: str) -> bool:
    """True when ``value`` can be a login name (and so may be used as an owner)."""
    return _USER_NAME.match(value) is not None and value not in {".", ".."}


def label_is_true(labels: Mapping[str, str], key: str) -> bool:
    value = labels.get(key)
    # Cheap length guard first: "true" padded with whitespace is still short.
    return value is not None and len(value) <= 64 and value.strip().lower() == L.TRUE_VALUE


def classify(
    name: str,
    labels: Mapping[str, str],
    main_process_uid: int | None,
    uid_to_name: UidToName,
) -> Classification:
    """Classify one container. ``name`` has no leading ``/``; ``main_process_uid`` is None unless running."""
    container_type, type_rule = container_type_of(name, labels)
    owner, owner_rule = owner_of(name, labels, main_process_uid, uid_to_name)
    return Classification(
        container_type=container_type,
        type_rule=type_rule,
        owner=owner,
        owner_rule=owner_rule,
        managed=label_is_true(labels, L.DS01_MANAGED) or label_is_true(labels, L.AIME_DS01_MANAGED),
        protected=label_is_true(labels, L.DS01_PROTECTED),
        monitoring=label_is_true(labels, L.DS01_MONITORING),
    )


def container_type_of(name: str, labels: Mapping[str, str]) -> tuple[ContainerType, TypeRule]:
    declared = _type_value(labels.get(L.DS01_CONTAINER_TYPE))
    if declared is not None:
        return declared, TypeRule.LABEL_CONTAINER_TYPE
    interface = _type_value(labels.get(L.DS01_INTERFACE))
    if interface is not None:
        return interface, TypeRule.LABEL_INTERFACE
    if L.AIME_NAME_SEPARATOR in name:
        return ContainerType.ATOMIC, TypeRule.AIME_NAME
    if any(key.startswith(L.DEVCONTAINER_PREFIX) for key in labels):
        return ContainerType.DEVCONTAINER, TypeRule.DEVCONTAINER_LABEL
    if name.startswith(L.VSC_NAME_PREFIX):
        return ContainerType.DEVCONTAINER, TypeRule.VSC_NAME
    if any(key.startswith(L.COMPOSE_PREFIX) for key in labels):
        return ContainerType.COMPOSE, TypeRule.COMPOSE_LABEL
    return ContainerType.DOCKER, TypeRule.DEFAULT


def owner_of(
    name: str,
    labels: Mapping[str, str],
    main_process_uid: int | None,
    uid_to_name: UidToName,
) -> tuple[str, OwnerRule]:
    for key, rule in ((L.DS01_USER, OwnerRule.LABEL_DS01_USER), (L.AIME_USER, OwnerRule.LABEL_AIME_USER)):
        user = _user_value(labels.get(key))
        if user is not None:
            return user, rule
    for key, rule in (
        (L.DEVCONTAINER_LOCAL_FOLDER, OwnerRule.DEVCONTAINER_LOCAL_FOLDER),
        (L.COMPOSE_WORKING_DIR, OwnerRule.COMPOSE_WORKING_DIR),
    ):
        user = home_user(labels.get(key))
        if user is not None:
            return user, rule
    uid = uid_from_name(name)
    if uid is not None:
        user = _lookup(uid_to_name, uid)
        if user is not None:
            return user, OwnerRule.NAME_UID
    if main_process_uid is not None and 0 <= main_process_uid <= _MAX_UID:
        user = _lookup(uid_to_name, main_process_uid)
        if user is not None:
            return user, OwnerRule.PROCESS_UID
    return UNKNOWN_OWNER, OwnerRule.UNKNOWN


def home_user(path: str | None) -> str | None:
    """The ``<user>`` of a path that starts ``/home/<user>`` (followed by ``/`` or the end)."""
    if path is None or not path.startswith(_HOME_PREFIX):
        return None
    start = len(_HOME_PREFIX)
    end = path.find("/", start)
    candidate = path[start:] if end == -1 else path[start:end]
    return candidate if is_plausible_user_name(candidate) else None


def uid_from_name(name: str) -> int | None:
    """The uid of an AIME-style ``<name>._.<uid>`` container name."""
    if L.AIME_NAME_SEPARATOR not in name:
        return None
    tail = name.rsplit(L.AIME_NAME_SEPARATOR, 1)[1]
    if _UID.match(tail) is None:
        return None
    uid = int(tail)
    return uid if uid <= _MAX_UID else None


def _type_value(value: str | None) -> ContainerType | None:
    if value is None or len(value) > 64:
        return None
    return _TYPE_ALIASES.get(value.strip().lower())


def _user_value(value: str | None) -> str | None:
    if value is None or len(value) > 256:
        return None
    stripped = value.strip()
    return stripped if is_plausible_user_name(stripped) else None


def _lookup(uid_to_name: UidToName, uid: int) -> str | None:
    user = uid_to_name(uid)
    # The password database is trusted more than labels, but the result still becomes an owner name.
    if user is None or not is_plausible_user_name(user):
        return None
    return user
