"""The real-systemd test's image recipe: which mirror debootstrap uses, and when the image is rebuilt."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.systemd_box import DEFAULT_MIRROR, debian_mirror, recipe_hash


def test_the_mirror_comes_from_this_machines_apt_sources(tmp_path: Path) -> None:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    assert debian_mirror(apt) == DEFAULT_MIRROR  # nothing configured
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n"
        "URIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
        "\n"
        "Types: deb-src\n"
        "URIs: http://src.example/debian\n"
        "Suites: bookworm\n"
        "\n"
        "# a comment\n"
        "Types: deb\n"
        "URIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
    )
    assert debian_mirror(apt) == "http://mirror.example/debian"
    (apt / "sources.list.d" / "debian.sources").unlink()
    (apt / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb [signed-by=/usr/share/keyrings/x.gpg] http://one-line.example/debian bookworm main\n"
    )
    assert debian_mirror(apt) == "http://one-line.example/debian"


def test_the_image_tag_follows_the_recipe() -> None:
    assert recipe_hash("bookworm") == recipe_hash("bookworm")
    assert recipe_hash("bookworm") != recipe_hash("trixie")
