"""CVAT XML in and out: every shape kind, tracks, layouts kept, every failure as an AnnotationsError."""

from __future__ import annotations

import gc
import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest
from cvat_watch import cvatxml
from cvat_watch.cvatxml import _fastbuild, _vocab
from cvat_watch.errors import AnnotationsError
from cvat_watch.model import (
    Annotations,
    Attribute,
    Box,
    Cuboid,
    Ellipse,
    ImageAnnotation,
    Label,
    Mask,
    Points,
    Polygon,
    Polyline,
    Segment,
    Skeleton,
    SkeletonPoint,
    Tag,
    Task,
    Track,
    TrackedShape,
    User,
    XmlElement,
)
from defusedxml import ElementTree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]

# A task export as CVAT 2.x writes it: every image-level kind, shapes sorted by z_order, tags last.
IMAGES_XML = """\
<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task>
      <id>7</id>
      <name>kinds</name>
      <size>2</size>
      <mode>annotation</mode>
      <overlap>0</overlap>
      <bugtracker></bugtracker>
      <created>2024-06-01 10:00:00.000000+00:00</created>
      <updated>2024-06-02 10:00:00.000000+00:00</updated>
      <subset>default</subset>
      <start_frame>0</start_frame>
      <stop_frame>1</stop_frame>
      <frame_filter></frame_filter>
      <segments>
        <segment>
          <id>9</id>
          <start>0</start>
          <stop>1</stop>
          <url>http://localhost:8080/api/jobs/9</url>
        </segment>
      </segments>
      <owner>
        <username>admin</username>
        <email>admin@example.com</email>
      </owner>
      <assignee></assignee>
      <labels>
        <label>
          <name>car</name>
          <color>#fa3253</color>
          <type>any</type>
          <attributes>
            <attribute>
              <name>color</name>
              <mutable>False</mutable>
              <input_type>select</input_type>
              <default_value>red</default_value>
              <values>red
blue</values>
            </attribute>
          </attributes>
        </label>
        <label>
          <name>pose</name>
          <color>#34d1b7</color>
          <type>skeleton</type>
          <attributes>
          </attributes>
          <svg>&lt;circle r="1.5" data-label-name="1"&gt;&lt;/circle&gt;</svg>
        </label>
        <label>
          <name>1</name>
          <color>#d12345</color>
          <type>points</type>
          <attributes>
          </attributes>
          <parent>pose</parent>
        </label>
      </labels>
    </task>
    <dumped>2024-06-02 10:05:00.000000+00:00</dumped>
  </meta>
  <image id="0" name="a.jpg" width="640" height="480">
    <box label="car" source="manual" occluded="0" xtl="1.00" ytl="2.00" xbr="30.50" ybr="40.25" \
rotation="15.00" z_order="0" group_id="3">
      <attribute name="color">red</attribute>
    </box>
    <polygon label="car" source="auto" occluded="1" points="1.00,2.00;3.00,4.00;5.00,6.00" z_order="0">
    </polygon>
    <polyline label="car" source="manual" occluded="0" points="7.00,8.00;9.00,10.00" z_order="0">
    </polyline>
    <points label="car" source="manual" occluded="0" points="11.00,12.00" z_order="0">
    </points>
    <ellipse label="car" source="manual" occluded="0" cx="10.00" cy="20.00" rx="5.00" ry="4.00" z_order="1">
    </ellipse>
    <cuboid label="car" source="manual" occluded="0" xtl1="1.00" ytl1="2.00" xbl1="3.00" ybl1="4.00" \
xtr1="5.00" ytr1="6.00" xbr1="7.00" ybr1="8.00" xtl2="9.00" ytl2="10.00" xbl2="11.00" ybl2="12.00" \
xtr2="13.00" ytr2="14.00" xbr2="15.00" ybr2="16.00" z_order="1">
    </cuboid>
    <mask label="car" source="manual" occluded="0" rle="1, 2, 3" left="4" top="5" width="2" height="3" \
z_order="1">
    </mask>
    <skeleton label="pose" source="manual" z_order="2">
      <points label="1" source="manual" outside="0" occluded="0" points="1.00,2.00">
      </points>
      <points label="2" source="manual" outside="1" occluded="0" points="3.00,4.00">
      </points>
      <attribute name="color">blue</attribute>
    </skeleton>
    <tag label="car" source="manual">
      <attribute name="color">blue</attribute>
    </tag>
  </image>
  <image id="1" name="b.jpg" width="640" height="480">
  </image>
</annotations>
"""

# A video task export as CVAT 2.x writes it: tracks, skeleton nodes inside each skeleton frame.
VIDEO_XML = """\
<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task>
      <id>8</id>
      <name>clip</name>
      <size>5</size>
      <mode>interpolation</mode>
      <overlap>0</overlap>
      <bugtracker></bugtracker>
      <created>2024-06-01 10:00:00.000000+00:00</created>
      <updated>2024-06-02 10:00:00.000000+00:00</updated>
      <subset>default</subset>
      <start_frame>0</start_frame>
      <stop_frame>4</stop_frame>
      <frame_filter></frame_filter>
      <segments>
        <segment>
          <id>12</id>
          <start>0</start>
          <stop>4</stop>
          <url>http://localhost:8080/api/jobs/12</url>
        </segment>
      </segments>
      <owner>
        <username>admin</username>
        <email>admin@example.com</email>
      </owner>
      <assignee></assignee>
      <labels>
        <label>
          <name>car</name>
          <color>#fa3253</color>
          <type>any</type>
          <attributes>
          </attributes>
        </label>
      </labels>
      <original_size>
        <width>1920</width>
        <height>1080</height>
      </original_size>
      <source>clip.mp4</source>
    </task>
    <dumped>2024-06-02 10:05:00.000000+00:00</dumped>
  </meta>
  <track id="0" label="car" source="manual">
    <box frame="0" keyframe="1" outside="0" occluded="0" xtl="1.00" ytl="2.00" xbr="3.00" ybr="4.00" \
rotation="10.00" z_order="0">
      <attribute name="color">red</attribute>
    </box>
    <box frame="3" keyframe="1" outside="1" occluded="0" xtl="1.00" ytl="2.00" xbr="3.00" ybr="4.00" \
z_order="0">
    </box>
  </track>
  <track id="1" label="pose" source="auto" group_id="2">
    <skeleton frame="0" keyframe="1" z_order="0">
      <points label="1" keyframe="1" outside="0" occluded="0" points="1.00,2.00">
      </points>
      <points label="2" keyframe="0" outside="0" occluded="1" points="3.00,4.00">
      </points>
    </skeleton>
  </track>
  <track id="2" label="car" source="manual">
    <mask frame="1" keyframe="1" outside="0" occluded="0" rle="3, 4" left="1" top="2" width="7" height="1" \
z_order="0">
    </mask>
  </track>
  <track id="3" label="car" source="manual">
    <polygon frame="2" keyframe="1" outside="0" occluded="0" points="1.00,2.00;3.00,4.00;5.00,6.00" \
z_order="0">
    </polygon>
  </track>
</annotations>
"""


def _position(text: str, needle: str, shift: int = 0) -> tuple[int, int]:
    """1-based line and column of the first ``needle`` in ``text`` (plus ``shift`` characters)."""
    offset = text.index(needle) + shift
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _error(data: bytes, path: str = "export.xml") -> AnnotationsError:
    with pytest.raises(AnnotationsError) as caught:
        cvatxml.loads(data, path=path)
    return caught.value


# -- reading every kind -----------------------------------------------------------------------------


def test_every_image_shape_kind_reads_into_the_model() -> None:
    """Each image-level element becomes its model class with every attribute converted."""
    annotations = cvatxml.loads(IMAGES_XML.encode(), path="kinds.xml")
    assert annotations.kind == "task"
    assert annotations.path == Path("kinds.xml")
    image = annotations.images[0]
    assert image.task_id == "7"
    assert (image.width, image.height) == (640, 480)
    assert image.boxes == (
        Box("car", 1.0, 2.0, 30.5, 40.25, rotation=15.0, group_id=3, attributes=[Attribute("color", "red")]),
    )
    assert image.polygons == (
        Polygon("car", ((1.0, 2.0), (3.0, 4.0), (5.0, 6.0)), source="auto", occluded=True),
    )
    assert image.polylines == (Polyline("car", ((7.0, 8.0), (9.0, 10.0))),)
    assert image.points == (Points("car", ((11.0, 12.0),)),)
    assert image.ellipses == (Ellipse("car", 10.0, 20.0, 5.0, 4.0, z_order=1),)
    assert image.cuboids == (Cuboid("car", *(float(v) for v in range(1, 17)), z_order=1),)
    assert image.masks == (Mask("car", "1, 2, 3", 4, 5, 2, 3, z_order=1),)
    assert image.skeletons == (
        Skeleton(
            "pose",
            elements=[
                SkeletonPoint("1", ((1.0, 2.0),)),
                SkeletonPoint("2", ((3.0, 4.0),), outside=True),
            ],
            z_order=2,
            attributes=[Attribute("color", "blue")],
        ),
    )
    assert image.tags == (Tag("car", attributes=[Attribute("color", "blue")]),)
    assert annotations.images[1].shape_count == 0


def test_meta_reads_into_task_labels_segments_and_users() -> None:
    """The task meta maps to Task with labels, segments, owner and an empty assignee."""
    task = cvatxml.loads(IMAGES_XML.encode()).tasks[0]
    assert (task.id, task.name, task.size, task.mode, task.overlap) == ("7", "kinds", 2, "annotation", 0)
    assert task.bugtracker == ""
    assert task.segments == (Segment("9", 0, 1, "http://localhost:8080/api/jobs/9"),)
    assert task.owner == User("admin", "admin@example.com")
    assert task.assignee == User()
    car, pose, node = task.labels
    assert car.attributes[0].choices == ["red", "blue"]
    assert pose.svg == '<circle r="1.5" data-label-name="1"></circle>'
    assert node.parent == "pose"


def test_tracks_read_with_skeleton_nodes_inside_skeleton_frames() -> None:
    """Current CVAT's tracks: tracked shapes with values, skeleton nodes keeping their keyframe."""
    annotations = cvatxml.loads(VIDEO_XML.encode())
    box_track, skeleton_track, mask_track, polygon_track = annotations.tracks
    assert box_track.shapes[0] == TrackedShape(
        "box", 0, values=[("xtl", 1.0), ("ytl", 2.0), ("xbr", 3.0), ("ybr", 4.0)], rotation=10.0,
        attributes=[Attribute("color", "red")],
    )  # fmt: skip
    assert box_track.shapes[1].outside is True
    assert (skeleton_track.source, skeleton_track.group_id) == ("auto", 2)
    frame = skeleton_track.shapes[0]
    assert (frame.kind, frame.values) == ("skeleton", ())
    assert frame.elements[1] == SkeletonPoint(
        "2", ((3.0, 4.0),), occluded=True, extra_attributes=[("keyframe", "0")]
    )
    assert mask_track.shapes[0].values == (
        ("rle", "3, 4"),
        ("left", 1),
        ("top", 2),
        ("width", 7),
        ("height", 1),
    )
    assert polygon_track.shapes[0].value("points") == ((1.0, 2.0), (3.0, 4.0), (5.0, 6.0))
    task = annotations.tasks[0]
    assert (task.original_size.width, task.original_size.height) == (1920, 1080)
    assert task.extra == (XmlElement("source", text="clip.mp4"),)


def test_element_tracks_of_the_2022_layout_nest_inside_the_skeleton_track() -> None:
    """Skeleton tracks with nested <track> element tracks (CVAT 2022-08..2023-02) keep them."""
    data = VIDEO_XML.replace(
        """    <skeleton frame="0" keyframe="1" z_order="0">
      <points label="1" keyframe="1" outside="0" occluded="0" points="1.00,2.00">
      </points>
      <points label="2" keyframe="0" outside="0" occluded="1" points="3.00,4.00">
      </points>
    </skeleton>
""",
        """    <skeleton frame="0" outside="0" occluded="0" keyframe="1" points="1.00,2.00;3.00,4.00" \
z_order="0">
    </skeleton>
    <track id="0" label="1" source="manual">
      <points frame="0" outside="0" occluded="0" keyframe="1" points="1.00,2.00" z_order="0">
      </points>
    </track>
""",
    )
    annotations = cvatxml.loads(data.encode())
    skeleton_track = annotations.tracks[1]
    assert skeleton_track.shapes[0].value("points") == ((1.0, 2.0), (3.0, 4.0))
    assert skeleton_track.tracks == (
        Track(
            "0", "1",
            shapes=[TrackedShape("points", 0, values=[("points", ((1.0, 2.0),))], xml_layout=None)],
        ),
    )  # fmt: skip
    assert cvatxml.dumps(annotations) == data.encode()


@pytest.mark.parametrize("document", [IMAGES_XML, VIDEO_XML], ids=["images", "video"])
def test_cvat_written_file_comes_back_byte_for_byte(document: str) -> None:
    """A file in CVAT's own layout is written back identically."""
    assert cvatxml.dumps(cvatxml.loads(document.encode())) == document.encode()


# -- writing every kind -----------------------------------------------------------------------------


def _built_in_code() -> Annotations:
    shapes = ImageAnnotation(
        id="0", name="a.jpg", width=10, height=20, task_id="1",
        boxes=[Box("car", 1, 2, 3, 4, z_order=1, attributes=[Attribute("color", "red")])],
        polygons=[Polygon("road", [(0, 0), (1, 0), (1, 1)])],
        polylines=[Polyline("lane", [(0, 0), (5, 5)], group_id=4)],
        points=[Points("dot", [(1.5, 2.5)])],
        ellipses=[Ellipse("sign", 5, 5, 2, 1, rotation=30)],
        cuboids=[Cuboid("box3d", *range(16))],
        masks=[Mask("sky", "2, 2", 0, 0, 2, 2)],
        skeletons=[Skeleton("pose", elements=[SkeletonPoint("head", [(1, 1)], outside=True)])],
        tags=[Tag("night")],
    )  # fmt: skip
    track = Track(
        "0", "car",
        shapes=[TrackedShape("box", 10, values=[("xtl", 1), ("ytl", 2), ("xbr", 3), ("ybr", 4)]),
                TrackedShape("skeleton", 10, elements=[SkeletonPoint("head", [(1, 1)])])],
    )  # fmt: skip
    task = Task(id="1", name="t", size=1, segments=[Segment("5", 0, 0, "http://localhost:8080/api/jobs/5")])
    return Annotations(tasks=[task], images=[shapes], tracks=[track], dumped="now")


def test_every_kind_is_written_in_cvat_layout_and_read_back_equal() -> None:
    """A model built in code is written with CVAT's element names and attribute order."""
    annotations = _built_in_code()
    data = cvatxml.dumps(annotations)
    assert data.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>')
    root = ElementTree.fromstring(data)
    image = root.find("image")
    assert image is not None
    assert list(image.attrib) == ["id", "name", "width", "height"]  # task_id is the meta's: implied
    kinds = [child.tag for child in image]
    assert kinds == ["polygon", "polyline", "points", "ellipse", "cuboid", "mask", "skeleton", "box", "tag"]
    box = image.find("box")
    assert box is not None
    assert list(box.attrib.items()) == [
        ("label", "car"), ("source", "manual"), ("occluded", "0"), ("xtl", "1.00"), ("ytl", "2.00"),
        ("xbr", "3.00"), ("ybr", "4.00"), ("z_order", "1"),
    ]  # fmt: skip
    assert image.find("ellipse").attrib["rotation"] == "30.00"
    assert image.find("polyline").attrib["group_id"] == "4"
    skeleton = image.find("skeleton")
    assert list(skeleton.attrib) == ["label", "source", "z_order"]
    assert list(skeleton.find("points").attrib) == ["label", "source", "outside", "occluded", "points"]
    tracked = root.find("track/box")
    assert list(tracked.attrib) == [
        "frame", "keyframe", "outside", "occluded", "xtl", "ytl", "xbr", "ybr", "z_order",
    ]  # fmt: skip
    assert list(root.find("track/skeleton").attrib) == ["frame", "keyframe", "z_order"]
    assert cvatxml.loads(data) == annotations


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (1.0, "1.00"),
        (0.1, "0.10"),
        (-0.0, "-0.00"),
        (30.5, "30.50"),
        (12.345, "12.345"),
        (1 / 3, repr(1 / 3)),
        (1e-20, "1e-20"),
        (1e300, f"{1e300:.2f}"),  # exact, so CVAT's format, however long
        (2**53, "9007199254740992.00"),
    ],
)
def test_floats_take_two_decimals_only_when_that_is_exact(value: float, written: str) -> None:
    """Coordinates are written with CVAT's two decimals when exact, else as the shortest exact repr."""
    box = Box("car", value, 0, 0, 0)
    data = cvatxml.dumps(Annotations(images=[ImageAnnotation("0", "a", boxes=[box])]))
    assert f'xtl="{written}"'.encode() in data
    assert cvatxml.loads(data).images[0].boxes[0].xtl == value


def test_special_characters_are_escaped_and_survive() -> None:
    """&, <, >, quotes, tabs and newlines in labels, values and meta text are escaped and come back."""
    tricky = 'a & b < c > d "e"\n\tf\r'
    annotations = Annotations(
        tasks=[Task(id="1", name=tricky, labels=[Label(tricky, svg="<svg>&</svg>")])],
        images=[
            ImageAnnotation(
                "0", tricky, task_id="1", tags=[Tag(tricky, attributes=[Attribute(tricky, tricky)])]
            )
        ],
    )
    data = cvatxml.dumps(annotations)
    assert b'name="a &amp; b &lt; c &gt; d &quot;e&quot;&#10;&#9;f&#13;"' in data
    assert b"<svg>&lt;svg&gt;&amp;&lt;/svg&gt;</svg>" in data
    assert cvatxml.loads(data) == annotations


def test_characters_xml_cannot_carry_are_refused_on_write() -> None:
    """dumps raises AnnotationsError for a control character instead of writing unreadable XML."""
    annotations = Annotations(images=[ImageAnnotation("0", "bad\x00name")])
    with pytest.raises(AnnotationsError, match="U\\+0000"):
        cvatxml.dumps(annotations)


@pytest.mark.parametrize(
    "annotations",
    [
        Annotations(images=[ImageAnnotation("0", "a", extra_attributes=[("1st", "x")])]),
        Annotations(images=[ImageAnnotation("0", "a", tags=[Tag("t", extra_attributes=[("xmlns", "x")])])]),
        Annotations(meta_extra=[XmlElement("ns:tag")]),
        Annotations(meta_extra=[XmlElement("ok", attributes=[("bad name", "x")])]),
    ],
    ids=["digit", "xmlns", "prefix", "space"],
)
def test_names_xml_cannot_carry_back_are_refused_on_write(annotations: Annotations) -> None:
    """Extra attribute or element names that would not read back as written are refused."""
    with pytest.raises(AnnotationsError, match="as an XML element or attribute name"):
        cvatxml.dumps(annotations)


def test_deeply_nested_unknown_elements_are_refused_with_line_and_column() -> None:
    """Ten thousand nested unknown elements are refused at the first level past the limit."""
    depth = 10_000
    data = b"<annotations><meta>" + b"<x>" * depth + b"</x>" * depth + b"</meta></annotations>"
    with pytest.raises(AnnotationsError, match="nested more than 256 levels deep") as caught:
        cvatxml.loads(data)
    assert caught.value.line == 1
    assert caught.value.column is not None and 3 * 250 < caught.value.column < 3 * 260 + 20


def test_nesting_within_the_limit_loads_and_round_trips() -> None:
    """Two hundred nested unknown elements are kept, written back and read again equal."""
    depth = 200
    data = b"<annotations><meta>" + b"<x>" * depth + b"</x>" * depth + b"</meta></annotations>"
    annotations = cvatxml.loads(data)
    element = annotations.meta_extra[0]
    for _ in range(depth - 1):
        element = element.children[0]
    assert element == XmlElement("x")
    assert cvatxml.loads(cvatxml.dumps(annotations)) == annotations


# -- losslessness details ---------------------------------------------------------------------------


def test_empty_elements_survive() -> None:
    """<assignee></assignee>, <bugtracker></bugtracker> and an empty <attributes> are written back."""
    data = cvatxml.dumps(cvatxml.loads(IMAGES_XML.encode()))
    assert b"      <assignee></assignee>\n" in data
    assert b"      <bugtracker></bugtracker>\n" in data
    assert b"          <attributes>\n          </attributes>\n" in data


def test_unknown_elements_and_attributes_survive_in_place() -> None:
    """Elements and attributes this version does not model are kept where they were."""
    data = (
        IMAGES_XML.replace("  <bugtracker>", '  <flipped x="1">False</flipped>\n      <bugtracker>', 1)
        .replace("    <dumped>", "    <future>\n      <a>1</a>\n    </future>\n    <dumped>")
        .replace('<image id="1" name="b.jpg"', '<image id="1" quality="high" name="b.jpg"')
        .replace('<tag label="car" source="manual">', '<tag label="car" score="0.9" source="manual">')
        .replace("</annotations>", "  <comments n=\"2\">ok</comments>\n</annotations>")
    )  # fmt: skip
    annotations = cvatxml.loads(data.encode())
    assert annotations.tasks[0].extra == (XmlElement("flipped", (("x", "1"),), "False"),)
    assert annotations.meta_extra == (
        XmlElement("future", children=[XmlElement("a", text="1")]),
        XmlElement("comments", (("n", "2"),), "ok"),
    )
    assert annotations.images[1].extra_attributes == (("quality", "high"),)
    assert annotations.images[0].tags[0].extra_attributes == (("score", "0.9"),)
    assert cvatxml.dumps(annotations) == data.encode()


def test_identical_layouts_share_one_tuple() -> None:
    """Layout tuples are interned: a thousand boxes of one layout hold one tuple."""
    box = '    <box label="a" occluded="0" xtl="0" ytl="0" xbr="1" ybr="1" z_order="0"></box>\n'
    data = f'<annotations><image id="0" name="a">\n{box * 1000}</image></annotations>'.encode()
    boxes = cvatxml.loads(data).images[0].boxes
    assert len({id(b.xml_layout) for b in boxes}) == 1
    assert boxes[0].xml_layout == ("label", "occluded", "xtl", "ytl", "xbr", "ybr", "z_order")


def test_edits_to_a_loaded_model_are_written_even_where_the_file_had_no_attribute() -> None:
    """Changing a value the file left to its default still reaches the saved XML."""
    annotations = cvatxml.load(ROOT / "config" / "example" / "annotations.xml")
    image = annotations.images[2]
    skeleton = attrs.evolve(image.skeletons[0], occluded=True, group_id=9)
    edited = attrs.evolve(
        annotations, images=(attrs.evolve(image, skeletons=(skeleton,)), *annotations.images[3:])
    )
    reread = cvatxml.loads(cvatxml.dumps(edited))
    assert reread.images[0].skeletons[0] == skeleton


def test_task_export_images_take_the_task_id_from_the_meta_without_writing_it() -> None:
    """In a task export an image without task_id belongs to the meta's task; save does not add it."""
    annotations = cvatxml.loads(IMAGES_XML.encode())
    assert {image.task_id for image in annotations.images} == {"7"}
    assert b"task_id" not in cvatxml.dumps(annotations)
    moved = attrs.evolve(annotations, images=(attrs.evolve(annotations.images[0], task_id="8"),))
    assert b'task_id="8"' in cvatxml.dumps(moved)


def test_project_export_image_without_task_id_stays_without() -> None:
    """In a project export an image that names no task keeps task_id None."""
    data = IMAGES_XML.replace("<task>", "<project><tasks><task>").replace(
        "</task>", "</task></tasks></project>"
    )
    annotations = cvatxml.loads(data.encode())
    assert annotations.kind == "project"
    assert annotations.tasks[0].id == "7"
    assert annotations.images[0].task_id is None


def test_job_export_is_modelled_as_a_task() -> None:
    """A <job> meta gives kind "job" and one Task, and is written back as <job>."""
    data = IMAGES_XML.replace("<task>", "<job>").replace("</task>", "</job>")
    annotations = cvatxml.loads(data.encode())
    assert annotations.kind == "job"
    assert annotations.tasks[0].segments[0].job_id == "9"
    assert cvatxml.dumps(annotations) == data.encode()


def test_unmodelled_children_of_shapes_are_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """An element the model has no place for inside an image is skipped and logged once."""
    data = IMAGES_XML.replace("    <tag label", "    <hint><deep/></hint>\n    <tag label")
    with caplog.at_level(logging.WARNING, logger="cvat_watch.cvatxml"):
        annotations = cvatxml.loads(data.encode(), path="hint.xml")
    assert annotations == cvatxml.loads(IMAGES_XML.encode())
    assert "hint.xml" in caplog.text
    assert "<hint> ×1" in caplog.text


# -- summary ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("document", [IMAGES_XML, VIDEO_XML], ids=["images", "video"])
def test_summary_counts_match_the_full_model(tmp_path: Path, document: str) -> None:
    """load_summary and loads_summary give what Annotations.summary() gives."""
    path = tmp_path / "export.xml"
    path.write_text(document)
    expected = cvatxml.load(path).summary()
    assert cvatxml.load_summary(path) == expected
    assert cvatxml.loads_summary(document.encode()) == expected


def test_summary_does_not_build_shapes(tmp_path: Path) -> None:
    """load_summary counts shapes without converting them, so a bad coordinate does not stop it."""
    path = tmp_path / "export.xml"
    path.write_text(IMAGES_XML.replace('xtl="1.00"', 'xtl="oops"'))
    summary = cvatxml.load_summary(path)
    assert summary.image_counts == {"7": 2}
    assert summary.shape_counts == {"7": 9}
    with pytest.raises(AnnotationsError):
        cvatxml.load(path)


# -- errors -------------------------------------------------------------------------------------------


def test_truncated_file_names_path_line_and_column(tmp_path: Path) -> None:
    """A file cut inside a tag is reported as truncated at that tag."""
    cut = IMAGES_XML[: IMAGES_XML.index('points="1.00,2.00;3.00')]
    path = tmp_path / "cut.xml"
    path.write_text(cut)
    with pytest.raises(AnnotationsError) as caught:
        cvatxml.load(path)
    error = caught.value
    assert "truncated" in str(error)
    assert error.path == str(path)
    assert (error.line, error.column) == _position(cut, "<polygon")


def test_file_cut_between_elements_is_truncated_at_its_end() -> None:
    """A file that stops after a complete tag is reported as ending early, at its last position."""
    cut = IMAGES_XML[: IMAGES_XML.index("  <image id=")]
    error = _error(cut.encode())
    assert "truncated XML: the XML ends early" in str(error)
    assert (error.line, error.column) == (cut.count("\n") + 1, 1)


def test_empty_file_is_reported_as_such() -> None:
    """Zero bytes are an AnnotationsError saying the file is empty."""
    error = _error(b"")
    assert "the file is empty" in str(error)
    assert (error.path, error.line, error.column) == ("export.xml", 1, 1)


def test_malformed_xml_reports_expats_position() -> None:
    """A mismatched end tag is reported at the end tag's name."""
    data = IMAGES_XML.replace("    </polyline>", "    </polygon>")
    error = _error(data.encode())
    assert "malformed XML: mismatched tag" in str(error)
    assert (error.line, error.column) == _position(data, "    </polygon>\n    <points", shift=6)


def test_invalid_utf8_is_named_with_its_byte() -> None:
    """A byte that is not UTF-8 is reported with its value, offset, line and column."""
    data = IMAGES_XML.encode().replace(b'name="b.jpg"', b'name="b\xff.jpg"')
    error = _error(data)
    offset = data.index(b"\xff")
    assert f"invalid UTF-8: byte 0xff at offset {offset}" in str(error)
    assert (error.line, error.column) == _position(data.decode("latin-1"), "\xff")


def test_xml_that_is_not_a_cvat_export_says_what_root_it_has() -> None:
    """Well-formed XML with another root element is refused, naming that root."""
    error = _error(b'<?xml version="1.0"?>\n<svg width="1"><g/></svg>')
    assert "not a CVAT XML export: the root element is <svg>" in str(error)
    assert (error.line, error.column) == (2, 1)


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        ('xtl="1.00" ', "", "<box", "<box> has no 'xtl' attribute"),
        ('xtl="1.00"', 'xtl="abc"', "<box", "<box> attribute xtl='abc' is not a number"),
        ('xtl="1.00"', 'xtl="nan"', "<box", "<box> attribute xtl='nan' is not a finite number"),
        ('rotation="15.00"', 'rotation="inf"', "<box", "rotation='inf' is not a finite number"),
        ('z_order="0" group_id="3"', 'z_order="0" group_id="x"', "<box", "group_id='x' is not an integer"),
        ('occluded="1"', 'occluded="yes"', "<polygon", "<polygon> attribute occluded='yes' is not 0 or 1"),
        ('points="7.00,8.00;9.00,10.00"', 'points="7,8;9"', "<polyline", "points='7,8;9' is not a list"),
        ('left="4"', 'left="4.5"', "<mask", "<mask> attribute left='4.5' is not an integer"),
        ('<mask label="car"', "<mask", "<mask", "<mask> has no 'label' attribute"),
        ('outside="1" occluded="0" points="3.00,4.00"', 'outside="2" occluded="0" points="3.00,4.00"',
         '<points label="2"', "<points> attribute outside='2' is not 0 or 1"),
        ('<image id="1" ', "<image ", '<image name="b.jpg"', "<image> has no 'id' attribute"),
        ('width="640" height="480">\n  </image>', 'width="640" height="4x">\n  </image>', '<image id="1"',
         "<image> attribute height='4x' is not an integer"),
        ('<attribute name="color">blue</attribute>\n    </tag>', "<attribute>blue</attribute>\n    </tag>",
         "<attribute>blue", "<attribute> has no 'name' attribute"),
        ("<size>2</size>", "<size>two</size>", "<size>", "<size> must be an integer, not 'two'"),
        ("<name>car</name>", "", "<label>", "<label> has no <name>"),
    ],
)  # fmt: skip
def test_bad_values_name_the_element_and_its_position(old: str, new: str, needle: str, message: str) -> None:
    """A missing or unconvertible attribute is an AnnotationsError at that element's line and column."""
    assert old in IMAGES_XML
    data = IMAGES_XML.replace(old, new, 1)
    error = _error(data.encode())
    assert message in str(error)
    assert error.path == "export.xml"
    assert (error.line, error.column) == _position(data, needle)


def test_tracked_shape_errors_name_their_position() -> None:
    """A tracked shape without a frame is reported at its own line and column."""
    data = VIDEO_XML.replace('<mask frame="1" ', "<mask ")
    error = _error(data.encode())
    assert "<mask> has no 'frame' attribute" in str(error)
    assert (error.line, error.column) == _position(data, "<mask ")


def test_missing_file_is_an_annotations_error(tmp_path: Path) -> None:
    """A path that does not exist is reported with the path."""
    path = tmp_path / "nope.xml"
    with pytest.raises(AnnotationsError, match="no such file") as caught:
        cvatxml.load(path)
    assert caught.value.path == str(path)
    with pytest.raises(AnnotationsError, match="no such file"):
        cvatxml.load_summary(path)


def test_directory_is_an_annotations_error(tmp_path: Path) -> None:
    """A directory in place of the export is reported as one."""
    with pytest.raises(AnnotationsError, match="is a directory") as caught:
        cvatxml.load(tmp_path)
    assert caught.value.path == str(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_an_annotations_error(tmp_path: Path) -> None:
    """A file without read permission is reported as such."""
    path = tmp_path / "secret.xml"
    path.write_text(IMAGES_XML)
    path.chmod(0)
    with pytest.raises(AnnotationsError, match="permission denied"):
        cvatxml.load(path)


def test_other_os_errors_are_annotations_errors(tmp_path: Path) -> None:
    """An OSError of another kind (a path through a regular file) is reported with its reason."""
    plain = tmp_path / "plain"
    plain.write_text("x")
    with pytest.raises(AnnotationsError, match="cannot open: Not a directory") as caught:
        cvatxml.load(plain / "annotations.xml")
    assert caught.value.path == str(plain / "annotations.xml")


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<annotations><version>&lol3;</version></annotations>
"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE annotations [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<annotations><version>&xxe;</version></annotations>
"""
PLAIN_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE annotations SYSTEM "http://127.0.0.1:9/cvat.dtd">
<annotations><version>1.1</version></annotations>
"""


@pytest.mark.parametrize(
    "data", [BILLION_LAUGHS, EXTERNAL, PLAIN_DTD], ids=["entity-bomb", "external", "dtd"]
)
def test_dtds_and_entities_are_refused(tmp_path: Path, data: bytes) -> None:
    """A DTD, an entity bomb or an external entity is refused before anything is expanded or fetched."""
    path = tmp_path / "evil.xml"
    path.write_bytes(data)
    for reader in (cvatxml.load, cvatxml.load_summary):
        with pytest.raises(AnnotationsError) as caught:
            reader(path)
        error = caught.value
        assert "refused a DTD" in str(error)
        assert (error.path, error.line) == (str(path), 2)
        assert "root:" not in str(error)


def test_undeclared_entity_is_malformed() -> None:
    """An entity reference without a declaration is malformed XML, not a lookup."""
    error = _error(b"<annotations><version>&xxe;</version></annotations>")
    assert "undefined entity" in str(error)
    assert (error.line, error.column) == (1, 23)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_bytes_give_a_model_or_an_annotations_error(data: st.DataObject) -> None:
    """Mutated exports either load or raise AnnotationsError, never another exception type."""
    original = bytearray(IMAGES_XML.encode() if data.draw(st.booleans()) else VIDEO_XML.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        if not original:
            break
        position = data.draw(st.integers(0, len(original) - 1))
        action = data.draw(st.sampled_from(["set", "delete", "insert", "cut"]))
        if action == "set":
            original[position] = data.draw(st.integers(0, 255))
        elif action == "delete":
            del original[position]
        elif action == "insert":
            original[position:position] = data.draw(
                st.sampled_from([b"<", b">", b'"', b"&", b"<x>", b"\xc3", b"="])
            )
        else:
            del original[position:]
    try:
        cvatxml.loads(bytes(original))
        cvatxml.loads_summary(bytes(original))
    except AnnotationsError:
        pass


# -- gc -----------------------------------------------------------------------------------------------


def test_gc_is_reenabled_after_load_and_after_a_failed_load() -> None:
    """load pauses the collector and restores it, also when the file is bad."""
    assert gc.isenabled()
    cvatxml.loads(IMAGES_XML.encode())
    assert gc.isenabled()
    with pytest.raises(AnnotationsError):
        cvatxml.loads(b"<annotations>")
    assert gc.isenabled()
    gc.disable()
    try:
        cvatxml.loads(IMAGES_XML.encode())
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_load_leaves_no_reference_cycles() -> None:
    """Nothing a load creates needs the cycle collector (it is frozen afterwards, so it must not)."""
    gc.collect()
    gc.disable()
    try:
        annotations = cvatxml.loads(VIDEO_XML.encode())
        cvatxml.loads_summary(IMAGES_XML.encode())
        with pytest.raises(AnnotationsError):
            cvatxml.loads(IMAGES_XML.encode()[:-40])
        del annotations
        assert gc.collect() == 0
    finally:
        gc.enable()


# -- objects read without their __init__ --------------------------------------------------------------

# Every place the reader builds objects directly: each image-level kind with extra attributes and
# attribute values, skeleton nodes with values, tracks with tracked shapes, skeleton frames and the
# 2022 layout's element tracks nested in a skeleton track.
DIRECT_XML = (
    IMAGES_XML.replace('<image id="1" name="b.jpg"', '<image id="1" quality="high" name="b.jpg"')
    .replace('<tag label="car" source="manual">', '<tag label="car" score="0.9" source="manual">')
    .replace(
        '<points label="2" source="manual" outside="1" occluded="0" points="3.00,4.00">\n      </points>',
        '<points label="2" source="manual" outside="1" occluded="0" points="3.00,4.00" hint="x">\n'
        '        <attribute name="color">red</attribute>\n      </points>',
    )
    .replace("</annotations>\n", VIDEO_XML[VIDEO_XML.index("  <track ") :])
    .replace(
        '  <track id="3" label="car" source="manual">',
        '  <track id="4" label="pose" source="manual" score="1">\n'
        '    <skeleton frame="0" outside="0" occluded="0" keyframe="1" points="1.00,2.00" z_order="0">\n'
        "    </skeleton>\n"
        '    <track id="0" label="1" source="manual">\n'
        '      <points frame="0" outside="0" occluded="0" keyframe="1" points="1.00,2.00" z_order="0">\n'
        '        <attribute name="color">red</attribute>\n'
        "      </points>\n"
        "    </track>\n"
        "  </track>\n"
        '  <track id="3" label="car" source="manual">',
    )
)


def _attrs_objects(value: object) -> list[object]:
    """Every attrs object reachable from ``value`` through fields and tuples."""
    found: list[object] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is tuple:
            stack.extend(item)
        elif attrs.has(type(item)):
            found.append(item)
            stack.extend(getattr(item, field.name) for field in attrs.fields(type(item)))
    return found


def test_objects_read_are_the_objects_their_init_makes() -> None:
    """Every object a load makes is of its exact model class, frozen, and equal (==, hash, repr and
    every field, xml_layout included) to what its __init__ makes from the same values."""
    assert all(part in DIRECT_XML for part in ('quality="high"', 'score="0.9"', 'hint="x"', '<track id="4"'))
    annotations = cvatxml.loads(DIRECT_XML.encode())
    assert cvatxml.dumps(annotations) == DIRECT_XML.encode()
    made: set[type] = set()
    for item in _attrs_objects(annotations):
        cls = type(item)
        assert cls.__module__ == "cvat_watch.model", cls
        fields = {field.name: getattr(item, field.name) for field in attrs.fields(cls)}
        built = cls(**fields)
        assert built == item
        assert hash(built) == hash(item)
        assert repr(built) == repr(item)
        for name, value in fields.items():
            assert getattr(built, name) == value, (cls.__name__, name)
            assert type(getattr(built, name)) is type(value), (cls.__name__, name)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(item, next(iter(fields)), None)
        made.add(cls)
    direct = {Box, Polygon, Polyline, Points, Ellipse, Cuboid, Mask, Skeleton, SkeletonPoint, Tag,
              ImageAnnotation, Track, TrackedShape}  # fmt: skip
    assert direct <= made
    assert any(item.extra_attributes for item in _attrs_objects(annotations) if type(item) in direct)


class _Validated:
    value: str = attrs.field(validator=attrs.validators.instance_of(str))


class _Converted:
    value: str = attrs.field(converter=str.strip)


class _Computed:
    value: str = attrs.field(init=False, default="x")


class _Mutable:
    value: list[str] = attrs.field(factory=list)


class _Hooked:
    value: str

    def __attrs_post_init__(self) -> None:
        pass


@pytest.mark.parametrize(
    ("cls", "problem"),
    [
        (_Validated, "value has a validator"),
        (_Converted, "value has a converter the reader does not know"),
        (_Computed, "value is not set by __init__"),
        (_Mutable, "value defaults to a mutable value"),
        (_Hooked, "it has __attrs_post_init__"),
    ],
)
def test_a_model_class_whose_init_does_more_than_storing_is_refused(cls: type, problem: str) -> None:
    """The reader refuses to bypass an __init__ that validates, converts, computes or shares a default."""
    with pytest.raises(TypeError, match=problem):
        _fastbuild.direct_fields(attrs.frozen(cls))


def test_repeated_labels_and_attribute_values_are_shared() -> None:
    """Labels, sources and identical sequences of <attribute> values are one object each, however often
    they repeat; a different sequence gets its own tuple but shares the Attribute objects."""
    red = '<attribute name="color">red</attribute>'
    start = '<box label="car" source="auto" xtl="0" ytl="0" xbr="1" ybr="1">'
    box = f'{start}{red}<attribute name="parked">no</attribute></box>'
    first = f'<image id="0" name="a">{box * 300}{start}{red}</box></image>'
    data = f'<annotations>{first}<image id="1" name="b">{box * 300}</image></annotations>'
    boxes = [b for image in cvatxml.loads(data.encode()).images for b in image.boxes]
    repeated = [b for b in boxes if len(b.attributes) == 2]
    assert len(repeated) == 600
    for name in ("label", "source", "attributes"):
        assert len({id(getattr(b, name)) for b in boxes if b in repeated}) == 1, name
    (single,) = [b for b in boxes if len(b.attributes) == 1]
    assert single.attributes == (Attribute("color", "red"),)
    assert single.attributes[0] is repeated[0].attributes[0]


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_the_same_model_whatever_the_chunk_boundaries(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    """Bytes handed to expat a few at a time (tags, attribute values and texts cut anywhere) read the same."""
    expected = {document: cvatxml.loads(document.encode()) for document in (DIRECT_XML, VIDEO_XML)}
    monkeypatch.setattr(_vocab, "CHUNK_SIZE", chunk)
    for document, model in expected.items():
        again = cvatxml.loads(document.encode())
        assert again == model
        assert cvatxml.dumps(again) == document.encode()


def test_an_element_inside_an_attribute_value_is_skipped_and_its_text_kept() -> None:
    """<attribute name="n">re<b>x</b>d</attribute> is the value "red", with a warning for the <b>."""
    value = '<attribute name="color">blue</attribute>\n    </tag>'
    data = IMAGES_XML.replace(value, value.replace("blue", "bl<b>x</b>ue"))
    assert data != IMAGES_XML
    assert cvatxml.loads(data.encode()) == cvatxml.loads(IMAGES_XML.encode())


@pytest.mark.parametrize(
    ("points", "readable"),
    [("1e999,0", False), ("1" + "0" * 400 + ",0", False), ("nan,0", False), ("1e308,1e308", True)],
)
def test_points_must_be_finite_and_large_finite_points_are_kept(points: str, readable: bool) -> None:
    """A coordinate that overflows to infinity is refused; finite ones are kept however large."""
    data = IMAGES_XML.replace('points="11.00,12.00"', f'points="{points}"').encode()
    if readable:
        assert cvatxml.loads(data).images[0].points[0].points == ((1e308, 1e308),)
    else:
        assert "is not a list of x,y number pairs" in str(_error(data))


# -- save ---------------------------------------------------------------------------------------------


def test_save_writes_atomically_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    """save replaces the target with the whole new file and leaves nothing else behind."""
    target = tmp_path / "annotations.xml"
    target.write_text("old")
    annotations = cvatxml.loads(IMAGES_XML.encode())
    cvatxml.save(annotations, target)
    assert target.read_text() == IMAGES_XML
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotations.xml"]


def test_save_keeps_the_targets_permissions(tmp_path: Path) -> None:
    """An existing target keeps its mode; a new file gets the umask's."""
    target = tmp_path / "annotations.xml"
    target.write_text("old")
    target.chmod(0o640)
    cvatxml.save(cvatxml.loads(IMAGES_XML.encode()), target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    fresh = tmp_path / "fresh.xml"
    umask = os.umask(0o022)
    os.umask(umask)
    cvatxml.save(cvatxml.loads(IMAGES_XML.encode()), fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask


def test_save_through_a_symlink_replaces_the_linked_file(tmp_path: Path) -> None:
    """Saving to a symlink keeps the link and replaces the file it points to."""
    real = tmp_path / "real.xml"
    real.write_text("old")
    link = tmp_path / "link.xml"
    link.symlink_to(real)
    cvatxml.save(cvatxml.loads(IMAGES_XML.encode()), link)
    assert link.is_symlink()
    assert real.read_text() == IMAGES_XML


def test_failed_save_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    """A model that cannot be written, or a target that cannot be replaced, changes nothing."""
    target = tmp_path / "annotations.xml"
    target.write_text("old")
    with pytest.raises(AnnotationsError):
        cvatxml.save(Annotations(images=[ImageAnnotation("0", "\x01")]), target)
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "keep").write_text("x")
    with pytest.raises(AnnotationsError, match="cannot write") as caught:
        cvatxml.save(cvatxml.loads(IMAGES_XML.encode()), blocked)
    assert caught.value.path == str(blocked)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotations.xml", "blocked"]


def test_save_into_a_missing_directory_is_an_annotations_error(tmp_path: Path) -> None:
    """A target whose directory does not exist is reported with the path."""
    with pytest.raises(AnnotationsError, match="no such file"):
        cvatxml.save(Annotations(), tmp_path / "missing" / "a.xml")


_SAVER = """
import sys
from cvat_watch import cvatxml
from cvat_watch.model import Annotations, Box, ImageAnnotation
path = sys.argv[1]
images = [ImageAnnotation(str(i), f"f{i}.jpg", boxes=[Box("car", i, 0, 1, 1)] * 20) for i in range(400)]
generation = 0
while True:
    generation += 1
    cvatxml.save(Annotations(images=images, dumped=str(generation)), path)
    print(generation, flush=True)
"""


def test_readers_never_see_a_half_written_file_even_when_the_writer_is_killed(tmp_path: Path) -> None:
    """While another process saves in a loop, and after it is killed mid-save, the file always loads whole."""
    target = tmp_path / "annotations.xml"
    cvatxml.save(Annotations(images=[ImageAnnotation("0", "seed")]), target)
    writer = subprocess.Popen(
        [sys.executable, "-c", _SAVER, str(target)], stdout=subprocess.PIPE, text=True,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "1"
        loads = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            annotations = cvatxml.load(target)
            assert len(annotations.images) == 400
            loads += 1
    finally:
        writer.kill()
        writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()
    assert loads > 0
    assert len(cvatxml.load(target).images) == 400


# -- the shipped example ------------------------------------------------------------------------------


def test_example_export_is_a_cvat_project_export_that_links_every_image() -> None:
    """The shipped example: tasks 11, 12, 13 with jobs 21+22, 23, 24; every image links to its job."""
    path = ROOT / "config" / "example" / "annotations.xml"
    annotations = cvatxml.load(path)
    assert annotations.kind == "project"
    assert [(task.id, task.subset, task.job_ids) for task in annotations.tasks] == [
        ("11", "train", ["21", "22"]), ("12", "train", ["23"]), ("13", "validation", ["24"]),
    ]  # fmt: skip
    links = [annotations.create_cvat_link(image.name) for image in annotations.images]
    assert links == [
        f"http://localhost:8080/tasks/{task}/jobs/{job}?frame={frame}"
        for task, job, frame in [
            (11, 21, 0), (11, 21, 1), (11, 22, 2), (11, 22, 3),
            (12, 23, 0), (12, 23, 1), (13, 24, 0), (13, 24, 1),
        ]
    ]  # fmt: skip
    kinds = {kind for image in annotations.images for kind in ("boxes", "polygons", "polylines", "ellipses",
             "masks", "skeletons", "tags") if getattr(image, kind)}  # fmt: skip
    assert len(kinds) == 7
    assert cvatxml.dumps(annotations) == path.read_bytes()
