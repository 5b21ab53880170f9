"""The one text-table formatter: aligned columns, a rule under the header, right-aligned numbers."""
from harness.text import text_table


def test_columns_align_and_numbers_right_align():
    out = text_table(["method", "n"], [["jacobi", "20"], ["ar", "7"]], right={1})
    assert out.splitlines() == ["method   n", "----------", "jacobi  20", "ar       7"]


def test_without_a_header_and_with_ragged_rows():
    out = text_table(None, [["a", "long description"], ["bbb", "x"], ["c"]])
    assert out.splitlines() == ["a    long description", "bbb  x", "c"]
    assert text_table(None, []) == ""
