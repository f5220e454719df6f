"""The one YAML/JSON reader and the baked profile's one reader: messages in the caller's class."""

from __future__ import annotations

from pathlib import Path

import pytest

from zr4.core.baked_profile import baked_profile_path, read_baked_profile
from zr4.core.documents import MISSING, read_document, read_json_object


class OwnError(Exception):
    pass


def test_read_document_parses_yaml_and_json(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("files:\n  - x\n", encoding="utf-8")
    (tmp_path / "a.json").write_text('{"files": ["x"]}', encoding="utf-8")
    assert read_document(tmp_path / "a.yaml", OwnError, "yaml") == {"files": ["x"]}
    assert read_document(tmp_path / "a.json", OwnError, "json") == {"files": ["x"]}


def test_failures_are_one_line_in_the_callers_class(tmp_path: Path) -> None:
    missing = tmp_path / "none.yaml"
    with pytest.raises(OwnError, match=rf"^cannot read model manifest {missing}: No such file or directory$"):
        read_document(missing, OwnError, "yaml", f"model manifest {missing}")
    (tmp_path / "bad.yaml").write_text("a: [1\n", encoding="utf-8")
    with pytest.raises(OwnError, match=rf"^{tmp_path}/bad.yaml is not valid YAML: "):
        read_document(tmp_path / "bad.yaml", OwnError, "yaml")
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(OwnError, match=r"^the node definitions x is not valid JSON: "):
        read_document(tmp_path / "bad.json", OwnError, "json", "the node definitions x")
    (tmp_path / "latin1.json").write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(OwnError, match=r"latin1.json is not valid JSON: 'utf-8' codec"):
        read_document(tmp_path / "latin1.json", OwnError, "json")
    with pytest.raises(OwnError, match=r"^cannot read .*: Is a directory$"):
        read_document(tmp_path, OwnError, "json", missing_ok=True)  # only absence is "missing"
    assert read_document(missing, OwnError, "yaml", missing_ok=True) is MISSING


def test_the_baked_profile_is_zr4_profile_else_the_images(tmp_path: Path) -> None:
    assert baked_profile_path({}) == Path("/opt/zr4/profile.json")
    assert baked_profile_path({"ZR4_PROFILE": ""}) == Path("/opt/zr4/profile.json")
    assert baked_profile_path({"ZR4_PROFILE": f" {tmp_path}/p.json "}) == tmp_path / "p.json"


def test_read_baked_profile_wants_a_json_object(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    path.write_text('{"name": "4080super"}', encoding="utf-8")
    assert read_baked_profile(path, OwnError) == {"name": "4080super"}
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(OwnError, match=rf"^the baked profile {path} is not a JSON object$"):
        read_baked_profile(path, OwnError)
    with pytest.raises(OwnError, match=r"^cannot read the baked profile .* \(ZR4_PROFILE\): No such file"):
        read_baked_profile(
            tmp_path / "none.json", OwnError, f"the baked profile {tmp_path}/none.json (ZR4_PROFILE)"
        )
    assert read_baked_profile(tmp_path / "none.json", OwnError, missing_ok=True) is None


def test_read_json_object_is_none_for_anything_but_an_object(tmp_path: Path) -> None:
    # zr4's own state (a sidecar, the models' journal, the heartbeat) is rebuilt when unusable.
    path = tmp_path / "state.json"
    assert read_json_object(path) is None
    for text in ("", "{", "[1]", "null"):
        path.write_text(text, encoding="utf-8")
        assert read_json_object(path) is None, text
    path.write_bytes(b"\xff\xfe{}")
    assert read_json_object(path) is None
    path.write_text('{"version": 1}', encoding="utf-8")
    assert read_json_object(path) == {"version": 1}
    assert read_json_object(tmp_path) is None  # a directory: unreadable
