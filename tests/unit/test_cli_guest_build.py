"""`mnet guest build` turns --add, --module and --netem into one build_image call."""
from __future__ import annotations

import argparse
from pathlib import Path

import guest.image
from guest.image import DEFAULT_MODULES, NETEM_MODULES, GuestImage
from mnet.cli import guest_cmd


def build_call(monkeypatch, *argv: str) -> dict:
    seen = {}

    def fake_build_image(**kwargs):
        seen.update(kwargs)
        return GuestImage(Path("/k"), Path("/i"), "6.1.0-test")

    monkeypatch.setattr(guest.image, "build_image", fake_build_image)
    parser = argparse.ArgumentParser()
    guest_cmd.add_arguments(parser)
    assert guest_cmd.run(parser.parse_args(["build", *argv])) == 0
    return seen


def test_plain_build_asks_for_the_default_modules(monkeypatch):
    call = build_call(monkeypatch)
    assert call["modules"] == DEFAULT_MODULES and call["extra_programs"] == ()


def test_netem_adds_tc_and_the_qdisc_modules_once(monkeypatch, capsys):
    call = build_call(monkeypatch, "--netem", "--module", "ifb", "--module", "dummy", "--add", "nc")
    assert call["modules"] == (*DEFAULT_MODULES, *NETEM_MODULES, "dummy")   # ifb not twice
    assert call["extra_programs"] == ("nc", "tc", "ethtool")
    assert "version 6.1.0-test" in capsys.readouterr().out
