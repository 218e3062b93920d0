"""One list+watch loop (an informer) for every kind the webhook watches.

`Informer` lists a collection page by page, then watches it from the list's
resourceVersion, and keeps a store `key -> transform(object)` current on a daemon thread:

- paged list (`limit`/`continue`); an expired continue token (410) restarts the list;
- watch with `allowWatchBookmarks=true` and a server-side `timeoutSeconds`; a watch that
  ends, or stays silent past `read_timeout` (a connection that died without closing), is
  resumed from the last resourceVersion seen, bookmarks included;
- 410 Gone (the HTTP status, or an ERROR event with code 410) lists again;
- any other error, and watches that end at once with nothing in them, back off
  exponentially with jitter (0.5 s doubling to 30 s, ±20 %), then retry what failed: a
  failed list lists again, a failed watch resumes from its resourceVersion (a 10,000-pod
  relist is not the answer to a dropped connection);
- `transform(obj)` decides what is kept: return a small immutable value (a tuple, a frozen
  dataclass, a small dict nobody mutates), or None to keep nothing for that object. Whole
  objects are never stored, so memory is bounded by what the consumer needs. A transform
  or callback that raises is logged ("<name> cache transform failed" / "... callback
  failed"; the object is then not kept) and the watch goes on;
- callbacks see every change of a *kept value*, on the informer thread, after the store
  changed: `on_add(key, new)`, `on_update(key, old, new)` (only when old != new),
  `on_delete(key, old)`. A relist is diffed against the previous store, so an object
  deleted while the watch was down is reported by `on_delete` too; `on_relist(store)`
  follows each list, for consumers that would rather rebuild than follow the diff.

Memory and 10,000 pods (issue 8). A pods consumer keeps a key and a small tuple per pod
and its counts, nothing else; the page size bounds what one list page costs while parsed:

    def judged(pod: dict[str, Any]) -> tuple[str, str, bool] | None:
        meta = pod.get("metadata") or {}
        owner = next(iter(meta.get("ownerReferences") or []), {})
        status = (meta.get("annotations") or {}).get(STATUS_KEY)
        return (owner.get("kind", ""), owner.get("name", ""), status is None)

    unprotected: Counter[str] = Counter()          # namespace -> pods without our status

    def count(key: str, value: tuple[str, str, bool], sign: int) -> None:
        if value[2]:
            unprotected[key.partition("/")[0]] += sign

    pods = Informer(
        api, "/api/v1/pods", judged, name="pod", log=log, page_size=100,
        field_selector="status.phase!=Succeeded,status.phase!=Failed",
        on_add=lambda key, new: count(key, new, +1),
        on_update=lambda key, old, new: (count(key, old, -1), count(key, new, +1)),
        on_delete=lambda key, old: count(key, old, -1),
    ).start()

Each pod costs its key and the tuple with its strings, about 400 bytes (measured by
tests/cluster/test_watch.py): ~4 MB for 10,000 pods. A list page is parsed whole, and orjson
needs about 15 times the page's bytes while it parses (returned at once): 100 pods of
~10 KB is a ~15 MB moment, hence `page_size=100` for pods. Callbacks run on the informer
thread; keep them short, and make what they update safe for its readers.

Reading from other threads: `get(key)` and `snapshot()` are safe at any time; `synced` is
set after the first list; `current` says the store is being kept up to date right now
(synced, and the last list or watch did not fail).
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

import orjson

from webhook.cluster.api import ApiError, ApiServer, Call
from webhook.logs import JsonLog

T = TypeVar("T")

PAGE_SIZE = 500
LIST_TIMEOUT = 10.0
WATCH_SECONDS = 290
"""Server-side watch length; the API server caps it anyway and we resume from resourceVersion."""
WATCH_READ_TIMEOUT = 120.0
"""A watch silent this long (no event, no bookmark: the API server sends one about every
minute) is re-opened from its resourceVersion, so a connection that died without closing
leaves the store stale for minutes, not forever."""
QUICK_WATCH = 1.0
"""A watch that ends this fast with no event is a server refusing politely: back off."""
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
LIST_RESTARTS = 3
"""How often one list may start over because its continue token expired."""
MAX_PAGES = 10_000


class ContinueExpired(ApiError):
    """A paged list's continue token expired (410) after its first page: list again."""


def list_pages(
    fetch: Callable[[dict[str, str]], Any],
    query: Mapping[str, str],
    page_size: int,
    max_pages: int | None = None,
) -> Iterator[Any]:
    """The pages of a paged list (`limit`/`continue`), fetched one at a time as the caller
    asks for the next, so a caller that drops each page holds one at a time.

    `fetch(query)` GETs one page. An expired continue token raises `ContinueExpired` (an
    ApiError with status 410); a 410 for the first page is the plain ApiError.
    """
    token = ""
    for _ in range(max_pages) if max_pages is not None else itertools.count():
        page_query = {"limit": str(page_size), **query}
        if token:
            page_query["continue"] = token
        try:
            page = fetch(page_query)
        except ApiError as exc:
            if exc.status == 410 and token:
                raise ContinueExpired(str(exc), exc.status, exc.reason, exc.details) from exc
            raise
        yield page
        meta = page.get("metadata") if isinstance(page, dict) else None
        token = (meta or {}).get("continue") or ""
        if not token:
            return


class Expired(Exception):
    """The resourceVersion or continue token is too old (410 Gone): list again."""


def object_key(obj: Mapping[str, Any]) -> str | None:
    """ "namespace/name" for namespaced objects, "name" for cluster-scoped ones."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return None
    name, namespace = meta.get("name"), meta.get("namespace")
    if not isinstance(name, str) or not name:
        return None
    return f"{namespace}/{name}" if isinstance(namespace, str) and namespace else name


class _Stopping(Exception):
    """stop() or relist() was called."""


class _Backoff:
    def __init__(self) -> None:
        self.delay = BACKOFF_FIRST

    def next(self) -> float:
        delay = self.delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not crypto
        self.delay = min(self.delay * 2, BACKOFF_MAX)
        return delay

    def reset(self) -> None:
        self.delay = BACKOFF_FIRST


class Informer(Generic[T]):
    """A store of `key(obj) -> transform(obj)` for one collection, kept by list+watch.

    `path` is the collection ("/api/v1/namespaces", "/api/v1/pods" for all namespaces).
    `name` is the kind in lower case, for log lines ("<name> cache synced" after a recovery,
    "<name> cache unavailable" when the API server fails, "cluster not reachable" when
    nothing has ever answered at its address) and the thread's name.
    """

    def __init__(
        self,
        api: ApiServer,
        path: str,
        transform: Callable[[dict[str, Any]], T | None],
        *,
        name: str,
        log: JsonLog,
        key: Callable[[Mapping[str, Any]], str | None] = object_key,
        field_selector: str | None = None,
        label_selector: str | None = None,
        on_add: Callable[[str, T], object] | None = None,
        on_update: Callable[[str, T, T], object] | None = None,
        on_delete: Callable[[str, T], object] | None = None,
        on_relist: Callable[[Mapping[str, T]], object] | None = None,
        page_size: int = PAGE_SIZE,
        read_timeout: float | None = None,
        unreachable_effect: str = "",
        failing_effect: str = "",
    ) -> None:
        self.api = api
        self.path = path
        self.transform = transform
        self.name = name
        self.log = log
        self.key = key
        self.selectors = {
            k: v
            for k, v in (("fieldSelector", field_selector), ("labelSelector", label_selector))
            if v
        }
        self.on_add = on_add
        self.on_update = on_update
        self.on_delete = on_delete
        self.on_relist = on_relist
        self.page_size = page_size
        self.read_timeout = WATCH_READ_TIMEOUT if read_timeout is None else read_timeout
        self.unreachable_effect = unreachable_effect or f"{name}s are not read until it is"
        self.failing_effect = failing_effect or f"the {name} cache may be stale"
        self.synced = threading.Event()
        """Set once the first list has filled the store."""
        self.failing = False
        """The last list or watch failed; the store may be stale until one succeeds."""
        self.unreachable = False
        """Nothing answered at the API server's address before it ever answered."""
        self._store: dict[str, T] = {}
        self._stopped = threading.Event()
        self._version: str | None = None
        """Where the next watch starts; None: list first."""
        self._request: Call | None = None
        """The request in flight, for stop() to close."""
        self._relist_wanted = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-watch", daemon=True)

    # --- reading (any thread) ---------------------------------------------------------

    def get(self, key: str) -> T | None:
        return self._store.get(key)

    def snapshot(self) -> dict[str, T]:
        """A copy of the whole store."""
        return dict(self._store)

    def __len__(self) -> int:
        return len(self._store)

    @property
    def current(self) -> bool:
        """Synced, and kept up to date right now (no failure since the last success)."""
        return self.synced.is_set() and not self.failing

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> Informer[T]:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Ends the thread, waking it from a backoff sleep, a list or a watch; True when it
        ended within `timeout`. Callbacks never run after it returned True."""
        self._stopped.set()
        call = self._request
        if call is not None:
            call.close()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def relist(self) -> None:
        """Lists again soon (the watch in flight is cut short), so `transform` sees every
        object anew: for consumers whose transform reads more than the object (the pods
        detector re-judges every pod when the config or a namespace changes)."""
        self._relist_wanted.set()
        call = self._request
        if call is not None:
            call.close()

    # --- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        backoff = _Backoff()
        while not self._stopped.is_set():
            if self._relist_wanted.is_set():
                self._relist_wanted.clear()
                self._version = None
            try:
                if self._version is None:
                    self._version = self._relist()
                    self._succeeded()
                    backoff.reset()
                started = time.monotonic()
                events = self._watch()
                if self._relist_wanted.is_set():
                    continue
                if events == 0 and time.monotonic() - started < QUICK_WATCH:
                    self._stopped.wait(backoff.next())
                elif events:
                    backoff.reset()
            except Expired:
                self._version = None
                self._stopped.wait(random.uniform(0.1, 0.5))  # noqa: S311 - no relist stampede
            except Exception as exc:
                if self._stopped.is_set():
                    break
                if self._relist_wanted.is_set():
                    continue  # cut short by relist(), not a failure
                self._failed(exc)
                self._stopped.wait(backoff.next())

    def _succeeded(self) -> None:
        if self.failing:
            self.failing = False
            count: dict[str, Any] = {f"{self.name}s": len(self._store)}
            self.log.event(f"{self.name} cache synced", **count)

    def _failed(self, exc: Exception) -> None:
        """One log line per failing streak, which says whether a cluster is there at all."""
        if self.failing:
            return
        self.failing = True
        answered = isinstance(exc, ApiError) and exc.status is not None
        if not self.api.reached and not answered:
            # Nothing answers at that address (no cluster here): one line, then quiet. A
            # cluster that answers with an error (403: RBAC missing) is a misconfiguration.
            self.unreachable = True
            self.log.event(
                "cluster not reachable",
                level="warning",
                api_server=self.api.url,
                error=str(exc)[:300],
                effect=self.unreachable_effect,
            )
        else:
            self.log.event(
                f"{self.name} cache unavailable",
                level="error",
                api_server=self.api.url,
                error=str(exc)[:300],
                effect=self.failing_effect,
            )

    def _relist(self) -> str:
        """A full paged list into a new store, diffed against the old one for the callbacks.

        Returns the list's resourceVersion, where the watch starts.
        """
        for _ in range(LIST_RESTARTS):
            try:
                store, resource_version = self._list()
            except ApiError as exc:
                if exc.status == 410:
                    continue  # the continue token expired mid-list: start over
                raise
            break
        else:
            raise ApiError(f"list {self.path}: continue token expired {LIST_RESTARTS} times")
        old, self._store = self._store, store
        for key in old.keys() - store.keys():
            self._notify(self.on_delete, key, old[key])
        for key, value in store.items():
            if key not in old:
                self._notify(self.on_add, key, value)
            elif old[key] != value:
                self._notify(self.on_update, key, old[key], value)
        self._notify(self.on_relist, store)
        self.synced.set()
        return resource_version

    def _list(self) -> tuple[dict[str, T], str]:
        store: dict[str, T] = {}
        resource_version = ""

        def fetch(query: dict[str, str]) -> Any:
            with self._open(LIST_TIMEOUT, query) as stream:
                return stream.json()

        for page in list_pages(fetch, self.selectors, self.page_size, MAX_PAGES):
            for item in page.get("items") or []:
                key = self.key(item) if isinstance(item, dict) else None
                if key is not None:
                    self._put(store, key, item)
            meta = page.get("metadata") or {}
            resource_version = resource_version or str(meta.get("resourceVersion", ""))
        return store, resource_version

    def _put(self, store: dict[str, T], key: str, obj: dict[str, Any]) -> None:
        """What `transform` keeps of `obj` goes into `store`; nothing kept removes the key."""
        try:
            value = self.transform(obj)
        except Exception as exc:  # a consumer's bug must not stop the list for everyone
            self._consumer_bug("transform", exc)
            value = None
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value

    def _watch(self) -> int:
        """One watch request from `_version`, until the server ends it or it goes silent.

        Every event moves `_version` (bookmarks included), so whatever ends the watch, the
        next one resumes where this one stopped. Returns how many events came.
        """
        query = {
            "watch": "1",
            "resourceVersion": self._version or "",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
            **self.selectors,
        }
        count = 0
        try:
            stream = self._open(self.read_timeout, query)
        except ApiError as exc:
            if exc.status == 410:
                raise Expired from exc
            raise
        self._succeeded()
        try:
            with stream:
                for line in stream:
                    count += 1
                    self._apply(orjson.loads(line))
        except TimeoutError:
            pass  # silent too long: the caller resumes from the last resourceVersion
        return count

    def _open(self, timeout: float, query: dict[str, str]) -> Call:
        """A GET of the collection that `stop()` can cut short at any point."""
        call = self.api.call("GET", self.path, timeout=timeout, query=query)
        self._request = call
        if self._stopped.is_set() or ("watch" in query and self._relist_wanted.is_set()):
            call.close()
            raise _Stopping
        return call.send()

    def _apply(self, event: Any) -> None:
        kind = event.get("type") if isinstance(event, dict) else None
        obj = event.get("object") if isinstance(event, dict) else None
        if kind == "ERROR":
            code = obj.get("code") if isinstance(obj, dict) else None
            if code == 410:
                raise Expired
            raise ApiError(f"watch {self.path}: {str(obj)[:300]}", code)
        if not isinstance(obj, dict):
            return
        meta = obj.get("metadata")
        if isinstance(meta, dict) and meta.get("resourceVersion"):
            self._version = str(meta["resourceVersion"])
        if kind == "DELETED":
            key = self.key(obj)
            if key is not None:
                self._changed(key, self._store.pop(key, None), None)
        elif kind in ("ADDED", "MODIFIED"):
            key = self.key(obj)
            if key is not None:
                old = self._store.get(key)
                self._put(self._store, key, obj)
                self._changed(key, old, self._store.get(key))

    def _changed(self, key: str, old: T | None, new: T | None) -> None:
        if old is None and new is not None:
            self._notify(self.on_add, key, new)
        elif old is not None and new is None:
            self._notify(self.on_delete, key, old)
        elif old is not None and new is not None and old != new:
            self._notify(self.on_update, key, old, new)

    def _notify(self, callback: Callable[..., object] | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception as exc:  # a consumer's bug must not stop the watch for everyone
            self._consumer_bug("callback", exc)

    def _consumer_bug(self, what: str, exc: Exception) -> None:
        self.log.event(
            f"{self.name} cache {what} failed",
            level="error",
            error=f"{type(exc).__name__}: {exc}",
            traceback="".join(traceback.format_exception(exc))[-2000:],
        )
