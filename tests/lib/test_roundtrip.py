"""Property: any model that CVAT XML can carry survives dumps → loads, and its XML is a fixed point."""

from __future__ import annotations

from cvat_watch import cvatxml
from cvat_watch.model import Annotations
from cvat_watch.testing.strategies import exports
from hypothesis import HealthCheck, given, settings

_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(exports())
def test_model_survives_dumps_and_loads(annotations: Annotations) -> None:
    """A model built in code comes back equal after being written and read."""
    assert cvatxml.loads(cvatxml.dumps(annotations)) == annotations


@_SETTINGS
@given(exports())
def test_written_xml_is_a_fixed_point(annotations: Annotations) -> None:
    """Reading our own XML and writing it again gives the same bytes."""
    data = cvatxml.dumps(annotations)
    assert cvatxml.dumps(cvatxml.loads(data)) == data
