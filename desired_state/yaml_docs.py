"""Reading YAML files into documents that remember where every key and item was written.

Files are read as bytes, decoded as UTF-8 (a bad byte is an error naming its line), parsed with
PyYAML's safe loader (the C one when available) into nodes, and each node tree is walked to map
field paths to 1-based line numbers before it is constructed into plain Python values. Duplicate keys,
which PyYAML would silently resolve to the last one, are errors.

Called by :mod:`desired_state.load` and :mod:`desired_state.ds01_import`. Reads files; knows nothing
of the kinds.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from desired_state.errors import Loc, PolicyError

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser when PyYAML has libyaml

_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAX_DEPTH = 64
# Values one document may expand to, aliases followed: a policy holds hundreds. A few hundred bytes of
# nested anchors and aliases expand to billions ("billion laughs") and would stall every start and
# reload; such a document is an error, never walked or built.
MAX_VALUES = 100_000
# The largest policy file read: DS01's resource-limits.yaml is about 12 KB, a members file of every
# login of a university a few hundred KB. A link to a log or a data file is refused, not read whole.
MAX_FILE_BYTES = 16 << 20
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


@dataclass(frozen=True)
class YamlDocument:
    """One YAML document of a file: its data and the line of every key / item in it."""

    path: Path
    index: int  # 0-based position among the file's documents (empty documents included)
    data: Any
    line: int  # where the document starts
    lines: dict[Loc, int] = field(default_factory=dict, repr=False)

    @property
    def number(self) -> int:
        """1-based position, as shown to people."""
        return self.index + 1

    def line_of(self, loc: Loc) -> int:
        """The line of the deepest part of ``loc`` that exists in the document."""
        for end in range(len(loc), 0, -1):
            found = self.lines.get(tuple(loc[:end]))
            if found is not None:
                return found
        return self.line


def display_path(path: Path) -> str:
    return str(path)


class _NotRegularFile(OSError):
    """A name that is there but is not a regular file: what it is, in words."""


class _TooLarge(OSError):
    """A regular file larger than :data:`MAX_FILE_BYTES`: its size."""


_KINDS = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _check_regular(mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise IsADirectoryError
    if not stat.S_ISREG(mode):
        raise _NotRegularFile(next((words for test, words in _KINDS if test(mode)), "a special file"))


def _read_regular(path: Path) -> bytes:
    """The bytes of the regular file ``path`` names (links followed), read at most to the limit.

    Checked before it is opened, and opened without blocking: read as a file, a named pipe blocked
    the reload (and with it the pass, or a start) until something wrote to it, and ``/dev/zero``
    filled the memory."""
    _check_regular(path.stat().st_mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        _check_regular(info.st_mode)  # replaced between the two looks
        raw = f.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise _TooLarge(f"{max(info.st_size, len(raw)):,}")
    return raw


def read_text(path: Path) -> tuple[str | None, list[PolicyError]]:
    """The file's text, or None and an error (unreadable, not UTF-8)."""
    shown = display_path(path)
    try:
        raw = _read_regular(path)
    except _NotRegularFile as exc:
        return None, [
            PolicyError(
                shown,
                None,
                f"{exc}, not a regular file",
                expected="a regular file",
                fix="replace it with the file itself (a pipe or a device is never read: it can block "
                "every reload, or never end)",
            )
        ]
    except _TooLarge as exc:
        return None, [
            PolicyError(
                shown,
                None,
                f"{exc} bytes, more than a policy file holds (at most {MAX_FILE_BYTES:,})",
                fix="check that the path names the policy file (not a log or a data file)",
            )
        ]
    except FileNotFoundError:
        if path.is_symlink():
            gone = f"a symbolic link to {path.readlink()}, which does not exist"
            return None, [PolicyError(shown, None, gone, fix="restore the file it names, or remove the link")]
        return None, [PolicyError(shown, None, "file not found", fix="check the path")]
    except IsADirectoryError:
        return None, [PolicyError(shown, None, "is a directory, not a file", fix="name a file")]
    except ValueError as exc:  # a NUL byte in the name
        return None, [PolicyError(shown, None, f"cannot read: {exc}", fix="correct the name")]
    except OSError as exc:
        return None, [
            PolicyError(shown, None, f"cannot read: {exc.strerror or exc}", fix="check permissions")
        ]
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        # Windows' "Unicode": converted as latin-1 (the fix below), it became NUL-riddled text.
        return None, [
            PolicyError(
                shown,
                1,
                "the file is UTF-16 (it starts with a UTF-16 byte order mark), not UTF-8",
                expected="a UTF-8 text file",
                fix="save the file as UTF-8 (e.g. iconv -f utf-16 -t utf-8)",
            )
        ]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return None, [
            PolicyError(
                shown,
                line,
                f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
                expected="a UTF-8 text file",
                fix="save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
            )
        ]
    return text.removeprefix("\ufeff"), []


def read_documents(path: Path, text: str | None = None) -> tuple[list[YamlDocument], list[PolicyError]]:
    """Every document of a YAML file (null documents included, data None), or the errors."""
    errors: list[PolicyError] = []
    if text is None:
        text, errors = read_text(path)
        if text is None:
            return [], errors
    shown = display_path(path)
    docs: list[YamlDocument] = []
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            index = len(docs)
            if node is None:  # pragma: no cover - check_node said there is one
                break
            lines: dict[Loc, int] = {}
            dupes: list[PolicyError] = []
            budget = [MAX_VALUES]
            _walk(node, (), lines, dupes, shown, index, 0, budget)
            if dupes:
                errors.extend(dupes)
            if budget[0] < 0:
                errors.append(
                    PolicyError(
                        shown,
                        node.start_mark.line + 1,
                        f"the document expands to more than {MAX_VALUES:,} values (nested aliases?)",
                        document=index + 1,
                        fix="write the values out, or use fewer nested anchors and aliases (*name)",
                    )
                )
                docs.append(YamlDocument(path, index, None, node.start_mark.line + 1, lines))
                continue
            try:
                data = loader.construct_document(node)
            except (yaml.YAMLError, ValueError, TypeError) as exc:
                # e.g. an unquoted impossible date such as 2026-02-30: each such value where it is
                # written (the error itself carries no place), else the error at its mark.
                unreadable = _unreadable_values(loader, node, shown, index)
                mark = getattr(exc, "problem_mark", None) or node.start_mark
                errors.extend(
                    unreadable
                    or [
                        PolicyError(
                            shown,
                            mark.line + 1,
                            f"cannot read a value: {getattr(exc, 'problem', None) or exc}",
                            document=index + 1,
                            fix="quote the value or correct it",
                        )
                    ]
                )
                data = None
            docs.append(YamlDocument(path, index, data, node.start_mark.line + 1, lines))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        if line is not None and _tab_in_indentation(text, line):
            # PyYAML's C parser says "found character that cannot start any token" for a tab,
            # without naming it; a tab in the indentation is by far the most common cause.
            errors.append(
                PolicyError(
                    shown,
                    line,
                    "a tab in the indentation; YAML indents with spaces",
                    document=len(docs) + 1,
                    fix="replace the tab with spaces",
                )
            )
        else:
            problem = exc.problem or str(exc)
            context = f" ({exc.context})" if exc.context else ""
            errors.append(
                PolicyError(
                    shown,
                    line,
                    f"YAML syntax error: {problem}{context}",
                    document=len(docs) + 1,
                    expected="valid YAML",
                    fix="check the indentation, colons and quoting on this line and the one before",
                )
            )
    except yaml.YAMLError as exc:  # pragma: no cover - unmarked errors are rare
        errors.append(PolicyError(shown, None, f"YAML error: {exc}", expected="valid YAML"))
    finally:
        loader.dispose()
    return docs, errors


_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


def _unreadable_values(loader: Any, root: yaml.Node, shown: str, index: int) -> list[PolicyError]:
    """One error per scalar of the document that YAML cannot construct, at its line and field."""
    errors: list[PolicyError] = []
    seen: set[int] = set()  # (each node once: aliases share it)
    pending: list[tuple[yaml.Node, Loc]] = [(root, ())]
    while pending:
        node, loc = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            pending.extend(
                (value, (*loc, _scalar_key(key)))
                for key, value in reversed(node.value)
                if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE_TAG
            )
        elif isinstance(node, yaml.SequenceNode):
            pending.extend((item, (*loc, i)) for i, item in reversed(list(enumerate(node.value))))
        elif isinstance(node, yaml.ScalarNode) and node.tag in loader.yaml_constructors:
            try:
                loader.yaml_constructors[node.tag](loader, node)
            except (yaml.YAMLError, ValueError, TypeError) as exc:
                what = "a date" if node.tag == _TIMESTAMP_TAG else "a value"
                errors.append(
                    PolicyError(
                        shown,
                        node.start_mark.line + 1,
                        f"{node.value} cannot be read as {what}: {getattr(exc, 'problem', None) or exc}",
                        document=index + 1,
                        field=".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in loc).replace(
                            ".[", "["
                        ),
                        fix="correct the date" if node.tag == _TIMESTAMP_TAG else "correct it, or quote it",
                    )
                )
    return sorted(errors, key=lambda e: e.line or 0)


def _tab_in_indentation(text: str, line: int) -> bool:
    """Whether the whitespace that starts 1-based ``line`` of ``text`` holds a tab."""
    lines = _LINE_BREAK.split(text)  # as YAML counts lines (str.splitlines knows more breaks)
    if not 1 <= line <= len(lines):
        return False
    content = lines[line - 1]
    return "\t" in content[: len(content) - len(content.lstrip(" \t"))]


def _walk(
    node: yaml.Node,
    loc: Loc,
    lines: dict[Loc, int],
    errors: list[PolicyError],
    shown: str,
    index: int,
    depth: int,
    budget: list[int],
) -> None:
    budget[0] -= 1
    if depth > _MAX_DEPTH or budget[0] < 0:
        return
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key: Any = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is None:
                continue
            key = _scalar_key(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                errors.append(
                    PolicyError(
                        shown,
                        line,
                        f"duplicate key '{key}' (first on line {seen[key]}); "
                        "YAML would silently keep only the last",
                        document=index + 1,
                        field=".".join(str(p) for p in (*loc, key)),
                        fix="remove one of them",
                    )
                )
                continue
            seen[key] = line
            child = (*loc, key)
            lines[child] = line
            _walk(value_node, child, lines, errors, shown, index, depth + 1, budget)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = (*loc, i)
            lines[child] = item.start_mark.line + 1
            _walk(item, child, lines, errors, shown, index, depth + 1, budget)
    elif isinstance(node, yaml.ScalarNode) and node.tag in _NUMBER_TAGS and _SURPRISING.match(node.value):
        # YAML 1.1 (PyYAML, as DS01 read it) takes 030 as octal 24 and 1:30 as base 60 (90): a
        # grace_period_m: 030 was 24 minutes. A number is written as it is meant, or quoted.
        errors.append(
            PolicyError(
                shown,
                node.start_mark.line + 1,
                f"{node.value} is read by YAML as {_yaml_number(node)}, not as written",
                document=index + 1,
                field=".".join(str(p) for p in loc),
                fix=_as_meant(node.value),
            )
        )


# Plain scalars YAML 1.1 reads as octal (a leading 0) or base 60 (h:m:s): never what a policy means.
_SURPRISING = re.compile(r"^[-+]?(0[0-7_]*[1-7][0-7_]*|[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?)$")


_NUMBER_TAGS = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"})


def _yaml_number(node: yaml.ScalarNode) -> str:
    try:
        return repr(yaml.safe_load(node.value))
    except yaml.YAMLError:  # pragma: no cover - the pattern only matches numbers
        return "another number"


def _as_meant(text: str) -> str:
    if ":" in text:
        return f"write the number itself, or quote it ('{text}') if it is text"
    digits = text.lstrip("+-").lstrip("0").replace("_", "")
    return f"write {'-' if text.startswith('-') else ''}{digits} (no leading zero), or quote it"


def _scalar_key(node: yaml.ScalarNode) -> str | int:
    """Keys as the constructor will make them: ints stay ints (DS01's mig_gpus: {0: ...})."""
    if node.tag == "tag:yaml.org,2002:int":
        try:
            return int(node.value)
        except ValueError:
            return str(node.value)
    return str(node.value)


def non_empty(docs: Sequence[YamlDocument]) -> list[YamlDocument]:
    """Documents that hold something (a bare '---' or a trailing separator makes a null one)."""
    return [d for d in docs if d.data is not None]
