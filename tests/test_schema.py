"""The row schema: CSV columns, JSON fields, new rows and docs/scan.md's table all follow forensix.schema.Row."""

import re
from pathlib import Path

from forensix.inputs import InputItem
from forensix.report import COLUMNS as REPORT_COLUMNS
from forensix.schema import COLUMNS, FIELDS, new_row

DOCS = Path(__file__).parent.parent / "docs" / "scan.md"


def test_docs_report_table_lists_exactly_the_schema_fields():
    text = DOCS.read_text(encoding="utf-8")
    table = text[text.index("| column | meaning |") :].split("\n\n")[0]
    documented = []
    for line in table.splitlines()[2:]:
        documented += re.findall(r"`([a-z_0-9]+)`", line.split("|")[1])
    assert documented == list(FIELDS)


def test_csv_columns_and_new_rows_follow_the_schema():
    assert REPORT_COLUMNS is COLUMNS and set(COLUMNS) < set(FIELDS)
    row = new_row(InputItem("a/b.zip", "x.png", error="cannot read archive"))
    assert list(row) == list(COLUMNS)
    assert (row["path"], row["member"], row["verdict"], row["error"]) == (
        "a/b.zip",
        "x.png",
        "error",
        "cannot read archive",
    )
    assert new_row(InputItem("c.png")) == {**row, "path": "c.png", "member": "", "error": ""}  # a fresh dict each
