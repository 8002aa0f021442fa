"""Which input columns feed which feature: missing columns (an error unless allowed, with a message that
says how to allow them) and assembled inputs (one model input stacked from several columns)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ._featurespec import FeatureSpec, shape_size
from ._feeds import convert_column
from ._tables import Table, as_table, column_names
from .errors import InputError

#: allow_missing: True (any column may be absent: TF Serving's per-request semantics), or the names of the
#: columns that may be absent (each then reads as missing in every row, as an absent tf.Example feature).
AllowMissing = bool | Collection[str]
#: assemble: model input -> its source columns, as a list of names, "a:b" (a range of columns in input
#: order) or "a,b,c".
Assemble = Mapping[str, str | Sequence[str]]


def parse_columns(text: str, found: Sequence[str] | None) -> list[str]:
    """Source columns of an assembled input: "f0:f63" (every column from f0 to f63, in input order, which
    `found` gives) or "f0,f1,f2" (these columns)."""
    text = text.strip()
    if ":" in text and "," not in text:
        first, last = (t.strip() for t in text.split(":", 1))
        if found is None:
            raise InputError(f"Column range {text!r} needs the input's column order; give the names instead")
        absent = [c for c in (first, last) if c not in found]
        if absent:
            raise InputError(
                f"Column range {text!r}: no column {absent[0]!r} in the input; columns found: {_shown(found)}"
            )
        i, j = found.index(first), found.index(last)
        if j < i:
            raise InputError(f"Column range {text!r}: {last!r} comes before {first!r} in the input")
        return list(found[i : j + 1])
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise InputError(f"No source columns in {text!r}; give a range a:b or a list a,b,c")
    return names


def resolve_assemble(assemble: Assemble | None, found: Sequence[str] | None) -> dict[str, list[str]]:
    """Every assembled input's source columns as names (ranges resolved against the input's columns)."""
    out: dict[str, list[str]] = {}
    for name, sources in (assemble or {}).items():
        out[name] = parse_columns(sources, found) if isinstance(sources, str) else [str(c) for c in sources]
        if not out[name]:
            raise InputError(f"Assembled input {name!r}: no source columns")
    return out


def check_assemble(features: Mapping[str, FeatureSpec], assemble: Assemble | None) -> None:
    """Assemble only the model's inputs, from as many columns as each takes (fails before reading data)."""
    for name, sources in (assemble or {}).items():
        spec = features.get(name)
        if spec is None:
            raise InputError(
                f"assemble: the model has no input {name!r}; its inputs: {', '.join(features) or '(none)'}"
            )
        if spec.kind == "varlen":
            raise InputError(
                f"assemble: {name!r} is a var-len feature; only fixed-shape inputs are assembled"
            )
        size = shape_size(spec.shape) if all(d is not None for d in spec.shape) else None
        if not isinstance(sources, str) and size is not None and len(sources) != size:
            raise InputError(
                f"assemble: input {spec.describe()} takes {size} values per row, "
                f"but {len(sources)} columns were given"
            )


def source_schema(
    features: Mapping[str, FeatureSpec], assemble: Mapping[str, Sequence[str]]
) -> dict[str, FeatureSpec]:
    """The columns a table must have for these features: each assembled input replaced by its source
    columns (one value each, of the input's dtype), in the model's order."""
    check_assemble(features, assemble)
    out: dict[str, FeatureSpec] = {}
    for name, spec in features.items():
        if name not in assemble:
            out[name] = spec
            continue
        for column in assemble[name]:
            if column in out or (column in features and column not in assemble):
                raise InputError(f"assemble: column {column!r} feeds more than one input")
            out[column] = FeatureSpec(column, spec.dtype, (), "dense", None)
    return out


def missing_columns(
    found: Iterable[str], schema: Mapping[str, FeatureSpec], allow: AllowMissing
) -> list[str]:
    """The columns of `schema` absent from `found` that are not allowed to be."""
    if allow is True:
        return []
    allowed = set() if allow is False else {str(a) for a in allow}
    present = set(found)
    return [n for n in schema if n not in present and n not in allowed]


def missing_message(
    missing: Sequence[str],
    schema: Mapping[str, FeatureSpec],
    found: Sequence[str],
    assembled: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """ "missing column 'city' needed by the model (...); columns found: ...; how to allow it" (one line)."""
    into = {c: name for name, cols in (assembled or {}).items() for c in cols}
    what = "; ".join(
        f"{schema[n].describe()}" if n not in into else f"{n}: a source column of input {into[n]!r}"
        for n in missing[:4]
    )
    names = ", ".join(f"'{n}'" for n in missing[:8]) + (", ..." if len(missing) > 8 else "")
    plural = "s" if len(missing) > 1 else ""
    allow = ",".join(missing[:8])
    return (
        f"missing column{plural} {names} needed by the model ({what}); columns found: {_shown(found)}. "
        f"To predict as if every row lacked {'them' if plural else 'it'}: --allow-missing {allow} "
        f"(Python: allow_missing={list(missing[:8])!r})"
    )


def _shown(found: Sequence[str], limit: int = 12) -> str:
    return (", ".join(found[:limit]) + (", ..." if len(found) > limit else "")) or "(none)"


def input_table(
    data: Any,
    features: Mapping[str, FeatureSpec],
    allow_missing: AllowMissing = (),
    assemble: Assemble | None = None,
) -> Table:
    """Rows in any container -> a Table with one column per feature: missing columns fail here (before any
    prediction) unless allowed, and assembled inputs are stacked from their source columns."""
    if isinstance(data, Table) and not assemble:
        table = data
    else:
        found = column_names(data)
        resolved = resolve_assemble(assemble, found)
        schema = source_schema(features, resolved) if resolved else dict(features)
        table = as_table(data, needed=list(schema))
        missing = missing_columns(table.found, schema, allow_missing)
        if missing:
            raise InputError(_sentence(missing_message(missing, schema, table.found, resolved)))
        if resolved:
            table = assemble_columns(table, resolved, features)
        return table
    missing = missing_columns(table.found, features, allow_missing)
    if missing:
        raise InputError(_sentence(missing_message(missing, features, table.found)))
    return table


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def assemble_columns(
    table: Table, assemble: Mapping[str, Sequence[str]], features: Mapping[str, FeatureSpec]
) -> Table:
    """Stack each assembled input's source columns into one [rows, values] array (vectorized, per column);
    a missing cell names its row and source column."""
    columns = dict(table.columns)
    n = table.num_rows
    for name, sources in assemble.items():
        spec = features[name]
        one = FeatureSpec(name, spec.dtype, (), "dense", None)
        parts = []
        for source in sources:
            column = columns.pop(source, None)
            if column is None:
                raise InputError(
                    f"Missing column {source!r}: a source column of input {name!r} ({spec.describe()})"
                )
            try:
                parts.append(np.asarray(convert_column(column, one, n)).reshape(n))
            except InputError as exc:
                raise InputError(
                    exc.message.replace(f"feature {name!r}", f"column {source!r} (assembled into {name!r})")
                ) from None
        columns[name] = np.stack(parts, axis=1) if parts else np.zeros((n, 0))
    return Table(columns, n, table.found)
