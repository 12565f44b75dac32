"""Coordinates kept as text until first read, behind the same ``points`` attribute; and a load that
leaves the process's garbage collector as it found it."""

from __future__ import annotations

import gc
import pickle

import attrs
import pytest
from cvat_watch import cvatxml
from cvat_watch.converter import to_dict
from cvat_watch.errors import AnnotationsError
from cvat_watch.model import (
    TEXT_POINTS_CLASSES,
    Annotations,
    ImageAnnotation,
    Polygon,
    Skeleton,
    SkeletonPoint,
)

DOCUMENT = """\
<annotations>
  <image id="0" name="a.png">
    <polygon label="road" points="1.00,2.00;3.50,4.25;-5,6" z_order="0"></polygon>
    <polyline label="lane" points="1e2,2"></polyline>
    <points label="kp" points="7.00,8.00"></points>
    <skeleton label="person" points="">
      <points label="head" points="9.00,10.00"></points>
    </skeleton>
  </image>
</annotations>
"""


def _slot(obj: object) -> object:
    """What the ``points`` slot itself holds (never observable through ``obj.points``)."""
    return type(obj).__dict__["points"].slot.__get__(obj, type(obj))


def test_plain_coordinates_stay_text_until_read_then_become_the_tuple() -> None:
    """A polygon's points are the text as read until first read; then the decoded tuple, kept."""
    image = cvatxml.loads(DOCUMENT.encode()).images[0]
    polygon = image.polygons[0]
    assert _slot(polygon) == "1.00,2.00;3.50,4.25;-5,6"
    assert polygon.points == ((1.0, 2.0), (3.5, 4.25), (-5.0, 6.0))
    assert type(_slot(polygon)) is tuple and _slot(polygon) is polygon.points
    node = image.skeletons[0].elements[0]
    assert _slot(node) == "9.00,10.00" and node.points == ((9.0, 10.0),)
    assert _slot(image.skeletons[0]) == ()  # empty text: decoded at once
    assert _slot(image.polylines[0]) == ((100.0, 2.0),)  # not plain decimals: decoded at once


def test_text_points_are_invisible_to_equality_hash_repr_evolve_pickle_and_to_dict() -> None:
    """Every way of looking at a shape sees the tuple, read or not read yet."""
    built = Polygon("road", [(1.0, 2.0), (3.5, 4.25), (-5.0, 6.0)], xml_layout=("label", "points", "z_order"))
    for look in (
        lambda p: p,
        hash,
        repr,
        lambda p: attrs.evolve(p, label="road"),
        lambda p: pickle.loads(pickle.dumps(p)),
        to_dict,
        attrs.asdict,
    ):
        fresh = cvatxml.loads(DOCUMENT.encode()).images[0].polygons[0]
        assert type(_slot(fresh)) is str
        assert look(fresh) == look(built)
    for cls in TEXT_POINTS_CLASSES:
        assert isinstance(cls.__dict__["points"], object) and hasattr(cls.__dict__["points"], "slot")
    assert SkeletonPoint("a", [(1, 2)]).points == ((1, 2),) and Skeleton("s").points == ()


def test_a_model_with_text_points_saves_and_reads_back_unchanged() -> None:
    annotations = cvatxml.loads(DOCUMENT.encode())
    again = cvatxml.loads(cvatxml.dumps(annotations))
    assert again == annotations
    assert cvatxml.dumps(again) == cvatxml.dumps(annotations)


@pytest.mark.parametrize("points", ["1,2,3", "1.00,2.00;", "nan,1", "1" + "0" * 400 + ",0", "1,x"])
def test_bad_coordinates_are_still_refused_at_load_with_their_line(points: str) -> None:
    data = DOCUMENT.replace('points="7.00,8.00"', f'points="{points}"').encode()
    with pytest.raises(
        AnnotationsError, match=r"<points> attribute points=.* is not a list of x,y number pairs"
    ):
        cvatxml.loads(data, path="bad.xml")


def test_a_load_leaves_the_collector_as_it_found_it() -> None:
    """No gc.freeze() (a process-wide side effect) and the collector enabled again after a load."""
    frozen = gc.get_freeze_count()
    assert gc.isenabled()
    annotations = cvatxml.loads(DOCUMENT.encode())
    assert gc.get_freeze_count() == frozen
    assert gc.isenabled()
    assert isinstance(annotations, Annotations) and isinstance(annotations.images[0], ImageAnnotation)
