"""CSV export of record pages (the JSON export is the page itself)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from fastapi import Response
from pydantic import BaseModel

__all__ = ["CSV_RESPONSES", "ExportFormat", "csv_response"]

#: OpenAPI description of the alternative CSV body of list endpoints.
CSV_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "description": "The page as JSON (default) or, with `format=csv`, as CSV (header row, one record per "
        "line; `X-Total-Count` carries the total).",
    }
}

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class ExportFormat(StrEnum):
    JSON = "json"
    CSV = "csv"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        text = ";".join(str(v) for v in value)
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    else:
        text = str(value)
    # Spreadsheet formula injection: peer-supplied text (descriptions, names) must not start a formula.
    if text.startswith(_FORMULA_START):
        text = "'" + text
    return text


def csv_response(
    items: Sequence[BaseModel], model: type[BaseModel], *, total: int, filename: str
) -> Response:
    """Render ``items`` as CSV with a header of ``model``'s fields."""
    columns = list(model.model_fields)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(columns)
    for item in items:
        data = item.model_dump(mode="json")
        writer.writerow([_cell(data.get(c)) for c in columns])
    return Response(
        content=buf.getvalue().encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "X-Total-Count": str(total)},
    )
