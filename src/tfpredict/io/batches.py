"""Streams of record batches: re-cut to the batch size, and re-read from where a failed pass stopped."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyarrow as pa

from ..errors import InputError

log = logging.getLogger(__name__)


def rebatch(batches: Iterable[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    """Re-cut a stream of record batches into batches of exactly `size` rows (the last one shorter)."""
    pending: list[pa.RecordBatch] = []
    have = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        have += batch.num_rows
        while have >= size:
            joined = pending[0] if len(pending) == 1 else pa.concat_batches(pending)
            yield joined.slice(0, size)
            rest = joined.slice(size)
            pending = [rest] if rest.num_rows else []
            have = rest.num_rows
    if have:
        yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)


def read_batches(open_reader: Callable[[], Any], file: object) -> Iterator[pa.RecordBatch]:
    """The batches of an Arrow streaming reader (open_reader may return None: no batches); an OSError,
    such as an unreadable file or corrupt gzip data, names the file."""
    try:
        reader = open_reader()
    except OSError as e:
        raise InputError(f"{file}: cannot read: {e}") from None
    while reader is not None:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except OSError as e:
            raise InputError(f"{file}: cannot read: {e}") from None
        yield batch


def restartable(
    open_batches: Callable[[], Iterator[pa.RecordBatch]], retry: Callable[[pa.ArrowInvalid], bool]
) -> Iterator[pa.RecordBatch]:
    """The batches of a reader that is opened again, with other column types, when `retry` says a read
    error is one a second pass fixes (and adjusts the types): rows already yielded are not yielded twice."""
    done = 0
    while True:
        skip = done
        try:
            for batch in open_batches():
                if skip >= batch.num_rows:
                    skip -= batch.num_rows
                    continue
                if skip:
                    batch, skip = batch.slice(skip), 0
                done += batch.num_rows
                yield batch
            return
        except pa.ArrowInvalid as e:
            if not retry(e):
                raise
            log.debug("reading again from row %d with other column types: %s", done, e)


__all__ = ["read_batches", "rebatch", "restartable"]
