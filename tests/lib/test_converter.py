"""The package's one cattrs converter: plain JSON-ready data out, strict structuring in."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest
from cattrs.errors import ClassValidationError
from cvat_watch.converter import REDACTED, Secret, converter, error_paths, from_dict, to_dict


@attrs.frozen
class Leaf:
    name: str
    weight: float = 1.0


@attrs.frozen
class Tree:
    title: str
    root: Path
    tags: tuple[str, ...]
    leaves: tuple[Leaf, ...]
    pairs: tuple[tuple[str, str], ...] = ()
    labels: dict[str, int] = attrs.Factory(dict)
    count: int = 0
    enabled: bool = False
    note: str | None = None
    other: Path | None = None
    when: datetime | None = None
    token: Secret | None = None
    tokens: tuple[Secret, ...] = ()


def make_tree(**changes: Any) -> Tree:
    tree = Tree(
        title="t",
        root=Path("/data/exports"),
        tags=("a", "b"),
        leaves=(Leaf("x"), Leaf("y", 2.5)),
        pairs=(("k", "v"),),
        labels={"car": 3},
        count=2,
        enabled=True,
        other=Path("rel/dir"),
        when=datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
    )
    return attrs.evolve(tree, **changes)


def test_to_dict_gives_plain_json_ready_data() -> None:
    """Tuples become lists, paths strings, datetimes ISO strings, and nothing is omitted."""
    data = to_dict(make_tree())
    assert data == {
        "title": "t",
        "root": "/data/exports",
        "tags": ["a", "b"],
        "leaves": [{"name": "x", "weight": 1.0}, {"name": "y", "weight": 2.5}],
        "pairs": [["k", "v"]],
        "labels": {"car": 3},
        "count": 2,
        "enabled": True,
        "note": None,
        "other": "rel/dir",
        "when": "2024-05-01T12:30:00+00:00",
        "token": None,
        "tokens": [],
    }
    assert json.loads(json.dumps(data)) == data


def test_from_dict_rebuilds_the_same_value() -> None:
    """from_dict(to_dict(x)) equals x, through a JSON round trip."""
    tree = make_tree()
    assert from_dict(Tree, json.loads(json.dumps(to_dict(tree)))) == tree


def test_secret_fields_unstructure_as_stars() -> None:
    """A Secret field, optional or in a tuple, becomes '***' and never its value."""
    tree = make_tree(token=Secret("s3cret-a"), tokens=(Secret("s3cret-b"), Secret("s3cret-c")))
    data = to_dict(tree)
    assert data["token"] == REDACTED == "***"
    assert data["tokens"] == ["***", "***"]
    assert "s3cret" not in json.dumps(data) + repr(tree) + str(tree)


def test_secret_hides_its_value_but_reveals_on_request() -> None:
    """Secret's repr and str are Secret('***'); reveal() returns the value."""
    secret = Secret("s3cret")
    assert repr(secret) == str(secret) == f"{secret}" == "Secret('***')"
    assert secret.reveal() == "s3cret"
    assert secret == Secret("s3cret")
    assert converter.structure("s3cret", Secret) == secret


def test_to_dict_refuses_what_is_not_a_record() -> None:
    """to_dict needs an attrs instance; a plain value is a TypeError."""
    with pytest.raises(TypeError, match="attrs instance"):
        to_dict(["a"])


def _problems(data: dict[str, object]) -> list[tuple[str, str]]:
    with pytest.raises(ClassValidationError) as caught:
        from_dict(Tree, data)
    return error_paths(caught.value)


def _valid(**changes: object) -> dict[str, object]:
    data = to_dict(make_tree())
    data.update(changes)
    return data


def test_extra_keys_are_forbidden_with_a_suggestion() -> None:
    """Unknown keys, nested too, are errors with their path and a close known key."""
    data = _valid(titel="x")
    data["leaves"] = [{"name": "x", "wieght": 2}]
    assert _problems(data) == [
        ("leaves[0].wieght", "unknown key (did you mean 'weight'?)"),
        ("titel", "unknown key (did you mean 'title'?)"),
    ]


def test_missing_required_key_is_reported() -> None:
    """A required field that is absent is named."""
    data = _valid()
    del data["title"]
    assert _problems(data) == [("title", "required key is missing")]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("title", 5, "expected a string, got an integer"),
        ("count", True, "expected an integer, got a boolean"),
        ("count", 2.5, "expected an integer, got a float"),
        ("enabled", 1, "expected a boolean (true or false), got an integer"),
        ("root", 3, "expected a path string, got an integer"),
        ("tags", "ab", "expected a list, got a string"),
        ("leaves", {"name": "x"}, "expected a list, got a table"),
        ("labels", ["car"], "expected a table, got a list"),
        ("note", 3, "expected a string, got an integer"),
        ("token", 12345, "expected a string, got an integer"),
    ],
)
def test_values_are_never_coerced(key: str, value: object, message: str) -> None:
    """Structuring rejects values of another kind instead of converting them."""
    problems = _problems(_valid(**{key: value}))
    assert len(problems) == 1
    assert problems[0][0] == key
    assert message in problems[0][1]


def test_whole_numbers_are_accepted_as_floats() -> None:
    """An integer where a float is expected is fine (TOML and JSON write 2 for 2.0)."""
    data = _valid(leaves=[{"name": "x", "weight": 2}])
    leaf = from_dict(Tree, data).leaves[0]
    assert leaf.weight == 2.0
    assert isinstance(leaf.weight, float)


def test_error_paths_index_lists_and_quote_odd_keys() -> None:
    """Paths use [i] for list items and quote mapping keys that are not bare words."""
    problems = _problems(_valid(leaves=[{"name": "x"}, "y"], labels={"ok": 1, "two words": "x"}))
    assert problems == [
        ("leaves[1]", "expected a table, got a string"),
        ('labels."two words"', "expected an integer, got a string"),
    ]


def test_error_messages_never_quote_the_value() -> None:
    """A rejected value is described by its kind only: it might be a secret in the wrong place."""
    problems = _problems(_valid(title=["s3cret-value"], count="s3cret-value"))
    assert problems
    assert "s3cret" not in repr(problems)
