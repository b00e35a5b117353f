"""Packaging: requirements in step with setup.cfg, and Salt's loader finding our modules."""

from __future__ import annotations

import configparser
import importlib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from dockerops import loader

REPO = Path(__file__).resolve().parents[2]
KINDS = {
    "modules": "_modules",
    "states": "_states",
    "grains": "_grains",
    "runners": "_runners",
    "output": "_output",
    "beacons": "_beacons",
}


def _setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    assert config.read(REPO / "setup.cfg"), "setup.cfg not found"
    return config


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def _install_requires() -> dict[str, Requirement]:
    lines = _lines(_setup_cfg()["options"]["install_requires"])
    return {canonicalize_name(req.name): req for req in map(Requirement, lines)}


def _base_txt() -> dict[str, Requirement]:
    out = {}
    for line in (REPO / "requirements" / "base.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            out[canonicalize_name(req.name)] = req
    return out


def test_requirements_name_the_same_packages_as_install_requires() -> None:
    install_requires, base = _install_requires(), _base_txt()

    assert install_requires, "no install_requires in setup.cfg"
    assert sorted(base) == sorted(install_requires)


def test_pinned_requirements_satisfy_install_requires() -> None:
    install_requires = _install_requires()

    for name, pinned in _base_txt().items():
        (pin,) = pinned.specifier  # base.txt pins exactly one version
        assert pin.operator == "==", f"{name}: not pinned: {pinned}"
        assert install_requires[name].specifier.contains(pin.version), (
            f"{name}=={pin.version} is outside setup.cfg's {install_requires[name].specifier}"
        )


def test_salt_loader_entry_point_is_salt_dirs() -> None:
    (entry,) = _lines(_setup_cfg()["options.entry_points"]["salt.loader"])
    name, target = (part.strip() for part in entry.split("=", 1))
    module_name, function_name = target.split(":")

    assert name == "dockerops"
    assert getattr(importlib.import_module(module_name), function_name) is loader.salt_dirs


def test_setup_cfg_maps_the_directories_the_loader_knows() -> None:
    package_dir = dict(
        (part.strip() for part in line.split("=", 1))
        for line in _lines(_setup_cfg()["options"]["package_dir"])
    )

    assert package_dir == {
        f"dockerops.saltext.{kind}": repo_dir for kind, repo_dir in KINDS.items()
    }


def test_salt_dirs_from_a_source_checkout() -> None:
    assert not (REPO / "dockerops" / "saltext").exists(), "expected a source checkout"

    dirs = loader.salt_dirs()

    assert dirs == {kind: [str(REPO / repo_dir)] for kind, repo_dir in KINDS.items()}
    for (path,) in dirs.values():
        assert (Path(path) / "dockerops.py").is_file()


@pytest.mark.parametrize("present", [["modules", "states", "grains"], ["modules", "states"]])
def test_salt_dirs_from_an_installed_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, present: list[str]
) -> None:
    package = tmp_path / "dockerops"
    for kind in present:
        (package / "saltext" / kind).mkdir(parents=True)
    # The repository layout next to it must be ignored once saltext/ exists.
    (tmp_path / "_grains").mkdir()
    monkeypatch.setattr(loader, "__file__", str(package / "loader.py"))

    assert loader.salt_dirs() == {kind: [str(package / "saltext" / kind)] for kind in present}
