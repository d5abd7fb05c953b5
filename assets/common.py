"""Conventions shared by every asset: owners, tags, and metadata helpers."""


import base64
from pathlib import Path

import dagster as dg
import pandas as pd

OWNERS = ["team:ml-platform"]


def md_table(frame: pd.DataFrame, max_rows: int = 20) -> dg.MetadataValue:
    """A DataFrame as a Markdown table in the Dagster UI."""
    return dg.MetadataValue.md(frame.head(max_rows).to_markdown(index=False))


def md_image(path: Path, title: str) -> dg.MetadataValue:
    """A PNG embedded in Markdown, so the Dagster UI shows the picture itself."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return dg.MetadataValue.md(f"### {title}\n\n![{title}](data:image/png;base64,{data})")


def table_schema(frame: pd.DataFrame) -> dg.TableSchema:
    """The column schema of a table asset (``dagster/column_schema``), from its dtypes."""
    return dg.TableSchema(columns=[dg.TableColumn(str(name), str(dtype)) for name, dtype in frame.dtypes.items()])


def table_metadata(frame: pd.DataFrame) -> dict[str, object]:
    """Row count and column schema, the metadata the Dagster UI shows for any table asset."""
    return {"dagster/row_count": len(frame), "dagster/column_schema": table_schema(frame)}
