"""An opt-in LRU cache of model outputs (`--response_cache_bytes`), bounded in bytes.

Keyed on the model, the loaded version, the call's key (signature, output filter, input names, dtypes and
shapes) and a 128-bit BLAKE2 digest of the request's canonical input bytes. A hit is answered without the
batch queue or a worker thread (InferenceService.run asks the cache first). Every load of a version is
its own generation (a version directory reloaded under the same number does not hit the old answers), and
entries of versions no longer loaded are dropped (counted as invalidations) within a sweep interval.

The REST front end keeps the answer's JSON under a key of the request body as sent (`body_key`) instead:
a replayed body is answered without decoding or encoding, and a miss keeps one entry (its JSON), not its
outputs too. So over REST, two spellings of the same inputs (key order, whitespace, 1 vs 1.0) are two
entries; a request the request log samples goes the whole way, through `key`. Both kinds of entries share
the bound in bytes.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import orjson

from .metrics import Metrics

# What an entry costs beyond its arrays' bytes: key, OrderedDict node, dict, array headers (measured
# with tracemalloc, rounded up), so that the bound holds for many small answers too.
ENTRY_OVERHEAD_BYTES = 400
ARRAY_OVERHEAD_BYTES = 120
SWEEP_SECONDS = 1.0  # how often entries of unloaded versions are looked for (on a put)

_GENERATIONS = itertools.count(1)
_GENERATION = ("response_cache", "generation")  # the Servable.memo key of a version's generation
_PREFIX = "response_cache.prefix"  # + the cache's id, a person and what it names: a Servable.memo key


class ResponseCache:
    """Outputs by request key; `get` and `put` are called on the event loop, `render` from any thread."""

    def __init__(
        self,
        max_bytes: int,
        metrics: Metrics,
        models: Iterable[str] | None = None,
        live: Callable[[], Iterable[Any]] | None = None,
    ) -> None:
        """`models`: the models that use the cache (None: all); `live`: the loaded Servables, whose
        generations are kept (ModelManager.servables)."""
        self.max_bytes = max_bytes
        self.models = None if models is None else frozenset(models)
        self._metrics = metrics
        self._live = live
        # key -> a rendered answer body (charged ENTRY_OVERHEAD_BYTES + its length), or (outputs, bytes
        # charged); the generation is the key's first 8 bytes, its model in _generations. A small answer's
        # entry takes ~283 bytes of heap (tracemalloc; with a tuple of four per entry it took ~387)
        self._entries: OrderedDict[bytes, bytes | tuple[dict[str, np.ndarray], int]] = OrderedDict()
        self._generations: dict[int, list[Any]] = {}  # generation -> [entries, model]
        self.bytes = 0
        self._lock = threading.Lock()
        self._next_sweep = time.monotonic() + SWEEP_SECONDS
        metrics.response_cache_bytes.read_from(lambda: self.bytes)  # read when the metrics are

    def key(self, servable: Any, call_key: tuple[Any, ...], data: Any) -> bytes | None:
        """The cache key of a call on a servable, or None when its model does not use the cache."""
        # kind, signature and output filter name a prefix (a few per version); the rest of the call key
        # (input names, dtypes and shapes: the client's) is fed each time, so the memo cannot grow with it
        started = self._start(servable, b"", call_key[:3])
        if started is None:
            return None
        generation, h = started
        if len(call_key) > 3:
            h.update(repr(call_key[3:]).encode())
        if call_key[0] == "rows":  # feature dicts decoded from JSON
            h.update(orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY))
        else:
            for name in sorted(data):
                _hash_array(h, name, data[name])
        return generation + h.digest()

    def body_key(self, servable: Any, route: str, body: bytes) -> bytes | None:
        """The key of a REST request body on a route (e.g. "classify") of a servable, bytes as sent; None
        when its model does not use the cache."""
        started = self._start(servable, b"rest-body", route)  # apart from the outputs' keys by its person
        if started is None:
            return None
        generation, h = started
        h.update(len(body).to_bytes(8, "little"))
        h.update(body)
        return generation + h.digest()

    def _start(self, servable: Any, person: bytes, what: Any) -> tuple[bytes, Any] | None:
        """A key begun: (the version's generation as 8 bytes, a digest already fed with what names the
        version and `what`), copied from one made once per version (Servable.memo); None for a model
        that does not use the cache."""
        prefix = servable.memo(
            (_PREFIX, id(self), person, what), lambda: self._prefix(servable, person, what)
        )
        return None if prefix is None else (prefix[0], prefix[1].copy())

    def _prefix(self, servable: Any, person: bytes, what: Any) -> tuple[bytes, Any] | None:
        if self.models is not None and servable.name not in self.models:
            return None
        generation = _generation(servable)
        h = hashlib.blake2b(digest_size=16, person=person)
        h.update(repr((servable.name, servable.version, generation, what)).encode())
        return generation.to_bytes(8, "little"), h

    def get(self, key: bytes, model: str) -> dict[str, np.ndarray] | None:
        value = self._lookup(key)
        outputs = value if isinstance(value, dict) else None
        self._metrics.response_cache.inc(model, "hit" if outputs is not None else "miss")
        return outputs

    def get_body(self, key: bytes, model: str) -> bytes | None:
        """A rendered answer kept under body_key (a miss is answered and kept under it, never under `key`
        as well: one entry per answer)."""
        value = self._lookup(key)
        body = value if isinstance(value, bytes) else None
        self._metrics.response_cache.inc(model, "hit" if body is not None else "miss")
        return body

    def put(self, key: bytes, model: str, outputs: dict[str, np.ndarray]) -> None:
        """Keep a copy of the outputs (read-only, detached from the batch they were sliced from)."""
        kept: dict[str, np.ndarray] = {}
        size = ENTRY_OVERHEAD_BYTES
        for name, arr in outputs.items():
            copy = arr.copy()
            copy.setflags(write=False)
            kept[name] = copy
            size += _nbytes(copy) + ARRAY_OVERHEAD_BYTES
        self._insert(key, model, kept, size)

    def put_body(self, key: bytes, model: str, body: bytes) -> None:
        """Keep a copy of a rendered answer under its request's body_key: a copy, because orjson's bytes
        keep the whole buffer they were written in (4 KB at least: 4,489 bytes of heap for a 35-byte
        answer), and the bound would not hold."""
        body = bytes(memoryview(body))
        self._insert(key, model, body, _charged(body))

    def _lookup(self, key: bytes) -> dict[str, np.ndarray] | bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry if isinstance(entry, bytes) else entry[0]

    def _insert(self, key: bytes, model: str, value: dict[str, np.ndarray] | bytes, size: int) -> None:
        """Keep `value` (charged `size` bytes), evicting the least recently used entries past the bound."""
        if size > self.max_bytes:
            return
        generation = int.from_bytes(key[:8], "little")
        evicted = 0
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = value if isinstance(value, bytes) else (value, size)
            counted = self._generations.get(generation)
            if counted is None:
                self._generations[generation] = [1, model]
            else:
                counted[0] += 1
            self.bytes += size
            while self.bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))
                evicted += 1
        if evicted:
            self._metrics.response_cache.inc(model, "eviction", amount=evicted)
        if time.monotonic() >= self._next_sweep:
            self.sweep()

    def sweep(self) -> int:
        """Drop the entries of versions no longer loaded; returns how many."""
        self._next_sweep = time.monotonic() + SWEEP_SECONDS
        if self._live is None:
            return 0
        live = {_generation(s) for s in self._live()}
        dropped: dict[str, int] = {}
        with self._lock:
            gone = [g for g in self._generations if g not in live]
            if gone:
                for key in [k for k in self._entries if int.from_bytes(k[:8], "little") in gone]:
                    model = self._drop(key)
                    dropped[model] = dropped.get(model, 0) + 1
        for model, n in dropped.items():
            self._metrics.response_cache.inc(model, "invalidation", amount=n)
        return sum(dropped.values())

    def _drop(self, key: bytes) -> str:
        entry = self._entries.pop(key)
        self.bytes -= _charged(entry) if isinstance(entry, bytes) else entry[1]
        generation = int.from_bytes(key[:8], "little")
        counted = self._generations[generation]
        counted[0] -= 1
        if not counted[0]:
            del self._generations[generation]
        return counted[1]  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return len(self._entries)


def _charged(body: bytes) -> int:
    """What a rendered answer's entry is charged against the bound."""
    return ENTRY_OVERHEAD_BYTES + len(body)


def _generation(servable: Any) -> int:
    """This load of a version: its own number, so a directory reloaded under the same version never hits
    the old answers."""
    return servable.memo(_GENERATION, lambda: next(_GENERATIONS))  # type: ignore[no-any-return]


def _hash_array(h: Any, name: str, arr: np.ndarray) -> None:
    h.update(f"\0{name}\0{arr.dtype.str}\0{arr.shape}\0".encode())
    if arr.dtype.kind == "O":  # bytes / str objects: each with its length, so ["ab","c"] != ["a","bc"]
        items = [v if isinstance(v, bytes) else str(v).encode() for v in arr.reshape(-1)]
        h.update(np.fromiter(map(len, items), dtype=np.int64, count=len(items)).tobytes())
        h.update(b"".join(items))
    else:
        h.update(np.ascontiguousarray(arr).data)


def _nbytes(arr: np.ndarray) -> int:
    """An array's bytes, with those of its objects (bytes or str: their length and ~64 bytes of header,
    more than either has) for object arrays."""
    if arr.dtype.kind == "O":
        items = arr.ravel().tolist()
        return int(arr.nbytes) + sum(map(len, items)) + 64 * len(items)
    return int(arr.nbytes)
