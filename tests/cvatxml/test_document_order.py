"""Save keeps the document order of every child of <image> and <track>: kinds interleaved as CVAT
writes them (points between boxes, masks between polygons, tags among shapes), element tracks
between a skeleton track's shapes. The order is a hint in ``xml_layout``, never part of equality."""

from __future__ import annotations

import attrs
import pytest
from cvat_watch import cvatxml
from cvat_watch.model import Annotations, Box, ImageAnnotation, Points, Tag

# CVAT's order is its own (creation order, stably sorted by z_order), not grouped by kind.
INTERLEAVED = """\
<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <image id="0" name="a.png" width="10" height="10">
    <box label="car" source="manual" occluded="0" xtl="1.00" ytl="1.00" xbr="2.00" ybr="2.00" z_order="0">
    </box>
    <points label="kp" source="manual" occluded="0" points="1.00,1.00" z_order="0">
    </points>
    <tag label="weather" source="manual">
      <attribute name="sky">clear</attribute>
    </tag>
    <box label="car" source="auto" occluded="1" xtl="3.00" ytl="3.00" xbr="4.00" ybr="4.00" z_order="0">
    </box>
    <polygon label="road" source="manual" occluded="0" points="0.00,0.00;1.00,0.00;1.00,1.00" z_order="1">
    </polygon>
    <mask label="sky" source="manual" occluded="0" rle="1, 2" left="0" top="0" width="3" height="1" z_order="1">
    </mask>
    <polygon label="road" source="manual" occluded="0" points="2.00,2.00;3.00,2.00;3.00,3.00" z_order="1">
    </polygon>
    <tag label="time" source="manual">
    </tag>
  </image>
  <image id="1" name="b.png" width="10" height="10">
    <points label="kp" source="manual" occluded="0" points="2.00,2.00" z_order="0">
    </points>
    <points label="kp" source="manual" occluded="0" points="3.00,3.00" z_order="0">
    </points>
  </image>
  <track id="0" label="person" source="manual">
    <skeleton frame="0" keyframe="1" z_order="0">
    </skeleton>
    <track id="0" label="head" source="manual">
      <points frame="0" outside="0" occluded="0" keyframe="1" points="1.00,1.00" z_order="0">
      </points>
    </track>
    <skeleton frame="1" keyframe="1" z_order="0">
    </skeleton>
    <track id="1" label="hand" source="manual">
      <points frame="0" outside="0" occluded="0" keyframe="1" points="2.00,2.00" z_order="0">
      </points>
    </track>
  </track>
</annotations>
"""


def test_interleaved_kinds_are_saved_in_document_order() -> None:
    """Boxes, points, tags, polygons and masks interleaved: saved byte for byte (element tracks
    between a track's shapes too), while each kind keeps its own tuple in the model."""
    annotations = cvatxml.loads(INTERLEAVED.encode())
    image = annotations.images[0]
    assert [box.source for box in image.boxes] == ["manual", "auto"]
    assert [tag.label for tag in image.tags] == ["weather", "time"]
    assert len(image.polygons) == 2 and len(image.masks) == 1 and len(image.points) == 1
    assert [shape.frame for shape in annotations.tracks[0].shapes] == [0, 1]
    assert [track.label for track in annotations.tracks[0].tracks] == ["head", "hand"]
    assert cvatxml.dumps(annotations) == INTERLEAVED.encode()


def test_the_order_is_a_hint_not_content() -> None:
    """A model read from a file equals the same model built in code (which is written in the
    writer's own order: by z_order, tags last), and reading that back gives the same model."""
    read = cvatxml.loads(INTERLEAVED.encode())
    built = attrs.evolve(
        read,
        images=[attrs.evolve(image, xml_layout=None) for image in read.images],
        tracks=[attrs.evolve(track, xml_layout=None) for track in read.tracks],
    )
    assert built == read
    regrouped = cvatxml.dumps(built)
    assert regrouped != INTERLEAVED.encode()
    assert cvatxml.loads(regrouped) == read
    first = regrouped.index(b"<tag")
    assert all(regrouped.index(kind) < first for kind in (b"<box", b"<points", b"<polygon", b"<mask"))


def test_an_edited_image_fills_the_recorded_places_and_writes_the_rest_after() -> None:
    """The recorded order is of kinds: a kind's shapes fill its recorded places in turn (one fewer
    box leaves a box place empty), and shapes beyond them are written after. Nothing is lost."""
    annotations = cvatxml.loads(INTERLEAVED.encode())
    image = annotations.images[0]
    added_box = Box("car", 5.0, 5.0, 6.0, 6.0)
    edited = attrs.evolve(
        image,
        boxes=[image.boxes[1], added_box],
        points=[],
        tags=[*image.tags, Tag("night")],
    )
    saved = cvatxml.dumps(attrs.evolve(annotations, images=[edited, *annotations.images[1:]]))
    again = cvatxml.loads(saved).images[0]
    assert again == edited
    body = saved.decode().split("<image ")[1]
    kinds = [
        line.split()[0][1:] for line in body.splitlines()[1:] if line.startswith("    <") and "</" not in line
    ]
    assert kinds == ["box", "tag", "box", "polygon", "mask", "polygon", "tag", "tag"]


def test_single_kind_images_record_no_order() -> None:
    """An image with one kind of child needs no hint: its layout is its attribute names alone."""
    annotations = cvatxml.loads(INTERLEAVED.encode())
    assert annotations.images[1].xml_layout == ("id", "name", "width", "height")
    assert annotations.images[0].xml_layout is not None
    assert annotations.images[0].xml_layout[-1] == "children=bptbgmgt"


@pytest.mark.parametrize("token", ["children=bx", "children=", "children=b*2"])
def test_an_unreadable_order_falls_back_to_the_writers_own(token: str) -> None:
    """A hint the reader did not write (edited by hand) never loses a shape."""
    image = ImageAnnotation(
        "0", "a", boxes=[Box("car", 1, 1, 2, 2)], points=[Points("kp", [(1.0, 1.0)])],
        xml_layout=("id", "name", token),
    )  # fmt: skip
    again = cvatxml.loads(cvatxml.dumps(Annotations(images=[image])))
    assert again.images[0] == image
