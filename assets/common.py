"""Conventions shared by every asset: owners, tags, and metadata helpers."""


import base64
import io
from pathlib import Path

import dagster as dg
import pandas as pd

OWNERS = ["team:ml-platform"]


def md_table(frame: pd.DataFrame, max_rows: int = 20) -> dg.MetadataValue:
    """A DataFrame as a Markdown table in the Dagster UI."""
    return dg.MetadataValue.md(frame.head(max_rows).to_markdown(index=False))


# Plots shown inline are thumbnails: a full-size PNG in base64 made ~170 KB of metadata per plot.
THUMBNAIL_WIDTH = 640
THUMBNAIL_COLORS = 64


def md_image(path: Path, title: str) -> dg.MetadataValue:
    """A plot in the Dagster UI: a small inline thumbnail (palette PNG, at most ``THUMBNAIL_WIDTH``
    pixels wide, ~20-40 KB) and a link to the full-size file."""
    from PIL import Image

    path = Path(path)
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((THUMBNAIL_WIDTH, THUMBNAIL_WIDTH))
        small = image.quantize(colors=THUMBNAIL_COLORS)
        buffer = io.BytesIO()
        small.save(buffer, format="PNG", optimize=True)
    data = base64.b64encode(buffer.getvalue()).decode()
    return dg.MetadataValue.md(
        f"### {title}\n\n![{title}](data:image/png;base64,{data})\n\n"
        f"Full size: [{path.name}]({path.resolve().as_uri()}) (`{path}`)"
    )


def table_schema(frame: pd.DataFrame) -> dg.TableSchema:
    """The column schema of a table asset (``dagster/column_schema``), from its dtypes."""
    return dg.TableSchema(columns=[dg.TableColumn(str(name), str(dtype)) for name, dtype in frame.dtypes.items()])


def table_metadata(frame: pd.DataFrame) -> dict[str, object]:
    """Row count and column schema, the metadata the Dagster UI shows for any table asset."""
    return {"dagster/row_count": len(frame), "dagster/column_schema": table_schema(frame)}
