"""rawjson.cut (msgspec) against json itself: the member cut out is exactly its value's JSON text, and the rest
decodes to the document with that member null, whatever strings, nesting and spacing the document has; and
rawjson.around: any value's JSON text written between its two parts makes the document with that value."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from emotionq.web.rawjson import around, cut

# Stored documents are standard JSON (the model refuses non-finite outputs), so no NaN or Infinity here.
scalars = st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.integers() | st.text(max_size=8) \
    | st.sampled_from(['"', "\\", "{", "}", "[", "]", ":", '"output": {', "\\\"", "\u00e9\u2028", "\x00", '"\x00"'])
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6) | st.just("output"), inner, max_size=4), max_leaves=20)
containers = st.lists(values, max_size=4) | st.dictionaries(st.text(max_size=6) | st.just("output"), values,
                                                               max_size=4)


@settings(max_examples=300, deadline=None)
@given(before=st.dictionaries(st.text(max_size=6).filter(lambda k: k != "output"), values, max_size=3),
       output=containers, after=st.dictionaries(st.text(max_size=6).filter(lambda k: k != "output"), values,
                                                max_size=3),
       separators=st.sampled_from([(", ", ": "), (",", ":")]), ascii_only=st.booleans())
def test_the_member_cut_out_is_its_value_and_the_rest_decodes(before, output, after, separators, ascii_only):
    doc = {**before, "output": output, **{k: v for k, v in after.items() if k not in before}}
    raw = json.dumps(doc, separators=separators, ensure_ascii=ascii_only).encode()
    rest, value = cut(raw, "output")
    assert json.loads(bytes(value)) == output
    assert json.loads(rest) == {**doc, "output": None}


@given(value=scalars)
def test_a_value_that_is_no_object_or_array_is_left_in_place(value):
    raw = json.dumps({"a": {"output": [1]}, "output": value}).encode()
    assert cut(raw, "output") == (raw, None)


def test_a_document_without_the_member_is_left_as_it_is():
    raw = b'{"a": {"output": {"b": 1}}, "c": "\\"output\\": {"}'
    assert cut(raw, "output") == (raw, None)


@settings(max_examples=300, deadline=None)
@given(document=st.dictionaries(st.text(max_size=6), values, max_size=5), output=containers)
def test_a_value_written_around_makes_the_document_with_it(document, output):
    before, after = around(document, "output")
    assert json.loads(before + json.dumps(output).encode() + after) == {**document, "output": output}
