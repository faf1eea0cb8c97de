"""pgbench.taskio: one readable error per malformed benchmark file; the builtins-only unpickler."""

from __future__ import annotations

import os
import pickle

import pytest

from pgbench import taskio
from pgbench.task import Example, TaskError

# A Python-2 era protocol-2 pickle (byte strings as SHORT_BINSTRING), as the RefCOCO refs are.
PY2_PICKLE = b"\x80\x02]q\x00(}q\x01(U\x05splitq\x02U\x03valq\x03U\x06ann_idq\x04K\x07ue."


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(TaskError, match="a.json: file not found"):
        taskio.read_json(tmp_path / "a.json")
    (tmp_path / "b.json").write_text('{"x": 1,\n "y": }')
    with pytest.raises(TaskError, match=r"b.json: not valid JSON \(line 2, column 7"):
        taskio.read_json(tmp_path / "b.json")
    (tmp_path / "c.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(TaskError, match="c.json"):
        taskio.read_json(tmp_path / "c.json")


def test_field_names_key_position_and_type(tmp_path):
    p = tmp_path / "f.json"
    assert taskio.field({"k": 3}, "k", p, "data[0]", int) == 3
    assert taskio.field({}, "k", p, "data[0]", int, default=None) is None
    with pytest.raises(TaskError, match=r"f.json: data\[0\] has no key 'k' \(keys: a, b\)"):
        taskio.field({"a": 1, "b": 2}, "k", p, "data[0]")
    with pytest.raises(TaskError, match=r"data\[0\]\['k'\] should be int, found bool True"):
        taskio.field({"k": True}, "k", p, "data[0]", int)
    with pytest.raises(TaskError, match=r"data\[0\]\['k'\] should be int or str, found float"):
        taskio.field({"k": 1.5}, "k", p, "data[0]", (int, str))
    with pytest.raises(TaskError, match=r"data\[1\] should be a JSON object, found list"):
        taskio.field([], "k", p, "data[1]")
    with pytest.raises(TaskError, match=r"\['answers'\] should be a list of strings"):
        taskio.string_list({"answers": ["a", 2]}, "answers", p, "data[0]")
    with pytest.raises(TaskError, match=r"\['data'\] should be a JSON list, found dict"):
        taskio.items({"data": {}}, "data", p)


def test_python2_pickle_loads_with_str_keys(tmp_path):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(PY2_PICKLE)
    assert taskio.load_pickle_builtins(path) == [{"split": "val", "ann_id": 7}]
    path.write_bytes(pickle.dumps([{1, 2}, frozenset({3}), (1.5, None, "x")], protocol=2))
    assert taskio.load_pickle_builtins(path) == [{1, 2}, frozenset({3}), (1.5, None, "x")]


class _Runs:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


class _Builtin:
    def __reduce__(self):
        return (eval, ("1+1",))


@pytest.mark.parametrize("payload,name", [(_Runs(), "system"), (_Builtin(), "__builtin__.eval")])
def test_pickles_that_call_code_are_refused(tmp_path, payload, name):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([payload], protocol=2))
    with pytest.raises(TaskError, match=f"refs\\(unc\\).p: not a readable data pickle .*{name}"):
        taskio.load_pickle_builtins(path)


def test_aligned_and_labelled():
    exs = [Example("1", "a.jpg", "p", ("x",)), Example("2", "b.jpg", "p")]
    assert taskio.aligned(exs, {"2": "y", "9": "z"}) == ["", "y"]
    assert taskio.labelled(exs, "t") == exs[:1]
    with pytest.raises(TaskError, match="t: these examples have no ground truth"):
        taskio.labelled(exs[1:], "t")
