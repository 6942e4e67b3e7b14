"""A Hub repo's metadata read into a Checkpoint in as few sequential round trips as possible.

The read, in numbered steps (each a function a test can call):
  0. answer from hfmem's store: a commit read before (pinned, offline, or a branch resolved
     recently) needs no request at all; offline, the HF cache may answer;
  1. resolve: the commit sha and the file list (`HubClient.revision_info`);
  2. plan: which weight files and which small JSON files to read;
  3. read: every JSON file at once, and every shard's header (a redirect, then a Range read sized
     by the index), parsed by a parsing thread or worker processes while the requests go on;
  4. assemble: the Checkpoint, its tallies apart, and the commit's snapshot put in place.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from . import store
from .cache import BRANCH_TTL_S
from .checkpoint import (
    METADATA_FILES,
    Checkpoint,
    ReadResult,
    WeightPlan,
    gguf_plan,
    load_config_json,
    plan_weights,
    quantization_config,
    shards_from_index,
)
from .env import env_int, offline_requested, resolve_token
from .errors import EntryNotFound, HfmemError, NetworkError, OfflineMiss
from .header import Header, LazyHeaders
from .source import Source

if TYPE_CHECKING:
    from .checkpoint import SnapshotWriter
    from .gguf import GGUFHeader
    from .hub import HubClient
    from .params import CountContext, FileTally
    from .workers import Parsed, WorkerPool

#: How long past the --timeout deadline a wait on a stuck thread or worker lasts before the read
#: gives up on it (its request is cut at the deadline; this covers the cut's own round). Our policy.
DEADLINE_SLACK_S = 2.0


def read_hub(source: Source, *, token: str | bool | None = None, offline: bool | None = None,
             refresh: bool = False, concurrency: int | None = None,
             progress: Callable[[int, int], None] | None = None, deadline: float | None = None) -> ReadResult:
    """Read a Hub repo's metadata into a Checkpoint in as few sequential round trips as possible;
    what was counted on the way comes apart from it (`ReadResult`)."""
    assert source.repo_id is not None
    repo_id = source.repo_id
    revision = source.revision or "main"
    offline = offline_requested() if offline is None else offline
    warnings: list[str] = []

    # 0. hfmem's store, the HF cache offline. (One safetensors file of a repo is read apart; a GGUF
    # commit's snapshot holds the files read so far, and answers when it holds the one wanted.)
    apart = source.filename if source.filename and not source.filename.endswith(".gguf") else None
    pinned, saved = answer_from_store(repo_id, revision, offline=offline, refresh=refresh,
                                      filename=apart, warnings=warnings)
    saved = gguf_usable(saved, source, offline)
    if saved is not None:
        return saved

    # The protocol, transport and thread modules are imported once the network is needed: a warm
    # run answered by the store (step 0) skips them, 2-3 ms of its ~0.1 s (python -X importtime).
    from .hub import HubClient
    from .transport import DEFAULT_CONCURRENCY

    workers = max(1, concurrency or env_int("HFMEM_CONCURRENCY", DEFAULT_CONCURRENCY))
    client = HubClient(token=resolve_token(token), offline=offline, refresh=refresh, concurrency=workers,
                       deadline=deadline)
    warnings += client.warnings
    # 1. sha and file list
    sha, files, saved = resolve(client, repo_id, revision, pinned, refresh=refresh, filename=apart,
                                warnings=warnings)
    saved = gguf_usable(saved, source)
    if saved is not None:
        return saved
    # 2. what to read
    listing, plan, wanted_json = plan_read(repo_id, revision, files, source.filename, source.quant,
                                           source.prefer_gguf)
    gguf = plan.format == "gguf"
    # 3 and 4. The commit's snapshot is written as the headers arrive, and put in place once
    # everything is read and valid.
    # (A GGUF read is of one file of many: its snapshot is saved once read, with the files before.)
    with (store.snapshot_writer(repo_id, revision, sha, warnings) if not source.filename and not gguf
          else nullcontext()) as snapshot:
        read = read_files(client, repo_id, sha, listing, plan, wanted_json, files, snapshot,
                          workers=workers, progress=progress, deadline=deadline)
        return assemble(read, source, repo_id, revision, sha, listing, plan, snapshot,
                        [*warnings, *client.warnings])


# --- 0. answer from the store ---------------------------------------------------------------------


def answer_from_store(repo_id: str, revision: str, *, offline: bool, refresh: bool, filename: str | None,
                      warnings: list[str]) -> tuple[str | None, ReadResult | None]:
    """(the commit the read is pinned to, if any; the Checkpoint when the store or, offline, the HF
    cache answers). OfflineMiss offline when neither can and nothing pins the revision."""
    # The repo id is checked by huggingface_hub (`validate_repo_id`, whose import is a fifth of a
    # warm run) after the saved snapshots are looked for: one found was saved for an id checked
    # then. An id that could name a path outside the cache is checked before.
    from .source import validate_repo_id

    if not store.is_folder_name(repo_id):
        validate_repo_id(repo_id)
    # Pinned to a sha we have read before: the saved snapshot answers with no request at all.
    pinned = revision if store.SHA_RE.match(revision) else None
    if offline and not pinned:
        pinned = store.load_ref(repo_id, revision)
        if pinned:
            warnings.append(f"offline: using {revision} as last resolved ({pinned[:12]}); it may be stale")
    if pinned and not refresh and not filename:
        saved = store.load_saved(repo_id, pinned, revision, warnings)
        if saved is not None:
            return pinned, _warned(saved, warnings)
    if not pinned and not offline and not refresh and not filename:
        # A branch resolved within BRANCH_TTL_S, whose commit we have read: no request at all (and
        # no HTTP library imported).
        recent = store.load_ref(repo_id, revision, max_age_s=BRANCH_TTL_S)
        saved = store.load_saved(repo_id, recent, revision, warnings) if recent else None
        if saved is not None:
            return pinned, _warned(saved, warnings)
    validate_repo_id(repo_id)  # before the HF cache, and before the Hub
    if offline:
        local = store.from_hf_cache(repo_id, revision)
        if local is not None:
            return pinned, ReadResult(local)
        if not pinned:
            raise OfflineMiss(f"offline and {repo_id}@{revision} was never read online: run once without --offline")
    return pinned, None


# --- 1. resolve -------------------------------------------------------------------------------------


def resolve(client: HubClient, repo_id: str, revision: str, pinned: str | None, *, refresh: bool,
            filename: str | None, warnings: list[str]) -> tuple[str, dict[str, int | None], ReadResult | None]:
    """(sha, files, the saved Checkpoint when the branch still points at a commit read before)."""
    # A branch still pointing at a commit we have read needs no second layer: no connection is
    # opened for one when the branch last pointed at such a commit (most runs past BRANCH_TTL_S).
    last = None if pinned or refresh or filename else store.load_ref(repo_id, revision)
    sha, files = client.revision_info(repo_id, pinned or revision,
                                      warm=not (last and store.snapshot_path(repo_id, last).is_file()))
    if not pinned:
        store.save_ref(repo_id, revision, sha)  # (the revision call is never answered from the cache)
        # A branch that still points at a commit we have read: nothing more to fetch.
        if not refresh and not filename:
            saved = store.load_saved(repo_id, sha, revision, warnings)
            if saved is not None:
                return sha, files, _warned(saved, warnings)
    return sha, files, None


# --- 2. plan ----------------------------------------------------------------------------------------


def plan_read(repo_id: str, revision: str, files: Mapping[str, int | None],
              filename: str | None, quant: str | None = None, prefer_gguf: bool = False,
              ) -> tuple[dict[str, int | None], WeightPlan, list[str]]:
    """(the files the Checkpoint lists, the weight plan, the JSON files to read)."""
    whole = None if filename or quant or prefer_gguf else plan_weights(files)
    if quant or prefer_gguf or filename and filename.endswith(".gguf") or whole and whole.format == "gguf":
        plan, _ = gguf_plan(files, filename=filename, quant=quant, repo=repo_id)
        return dict(files), plan, []
    if filename:
        if filename not in files:
            raise EntryNotFound(f"{repo_id} has no file {filename!r} at {revision}")
        listing = {filename: files[filename]}
        return listing, plan_weights(listing), [n for n in METADATA_FILES if n in files]
    assert whole is not None
    return dict(files), whole, [n for n in (*METADATA_FILES, whole.index_file) if n and n in files]


# --- 3. read ----------------------------------------------------------------------------------------


@dataclass
class ReadFiles:
    """What step 3 read: the JSON files (parsed, and as the server sent them), the headers, each
    shard's tally and size."""

    json_files: dict[str, Any]
    json_text: dict[str, bytes]
    headers: LazyHeaders
    tallies: dict[str, FileTally]
    sizes: dict[str, int | None]
    gguf: dict[str, GGUFHeader] = field(default_factory=dict)


def read_files(client: HubClient, repo_id: str, sha: str, listing: Mapping[str, int | None], plan: WeightPlan,
               wanted_json: list[str], files: Mapping[str, int | None], snapshot: SnapshotWriter | None, *,
               workers: int, progress: Callable[[int, int], None] | None, deadline: float | None) -> ReadFiles:
    """Every JSON file at once, and every shard's header. Headers are parsed in one parsing thread
    or, for a model of more than one wave of shards, in worker processes (inspector/workers.py),
    while the request threads go on."""
    from .threads import stopping_executor
    from .workers import Parsed, WorkerPool

    with stopping_executor(1, deadline) as parser, WorkerPool(deadline) as processes:
        # The JSON files, and the tasks that parse them, have threads of their own beside the shard
        # readers': on a reader thread, a JSON read put that thread's chain of shards one round trip
        # behind the others, and DeepSeek-V3's 163 shards over 64 threads took 8 layers, not 7.
        with stopping_executor(len(wanted_json) + 2, deadline) as meta, \
                stopping_executor(max(1, workers), deadline) as pool:
            json_futures: dict[str, Future[bytes]] = {
                n: meta.submit(client.read_file, repo_id, sha, n) for n in wanted_json
            }
            read = ReadFiles({}, {}, LazyHeaders(), {}, {})
            grouped: Future[dict[str, list[str]]] | None = None
            if plan.format == "safetensors":
                shards = _ShardReads(client, repo_id, sha, json_futures, read, parser, processes, meta, deadline)
                candidates = list(plan.files) or [n for n in listing if n.endswith(".safetensors") and "/" not in n]
                grouped = shards.start(plan, candidates)
                shard_futures = {n: pool.submit(shards.task, n) for n in candidates}
                for done, (name, fut) in enumerate(shard_futures.items(), 1):
                    task = _result(fut, deadline, repo_id)
                    if task is not None:
                        data, parsing = task
                        parsed = processes.wait(parsing)
                        store.keep_header(read.headers, snapshot, name, parsed, data)
                        read.sizes[name] = parsed.file_bytes
                        if parsed.tally is not None:
                            read.tallies[name] = parsed.tally
                    if progress:
                        progress(done, len(shard_futures))
            if plan.format == "gguf":
                parts = {n: pool.submit(client.gguf_header, repo_id, sha, n) for n in plan.files}
                read.gguf = {n: _result(f, deadline, repo_id) for n, f in parts.items()}
            if grouped is not None:
                _result(grouped, deadline, repo_id)  # the index, parsed by the grouping task (its error shows here)
            for name, json_fut in json_futures.items():
                if name not in read.json_files:
                    read.json_files[name] = load_config_json(_result(json_fut, deadline, repo_id), name)
            read.json_files = {n: read.json_files[n] for n in json_futures}  # in a stable order
            read.json_text = {n: f.result() for n, f in json_futures.items()}
            if plan.format == "safetensors" and plan.index_file:
                # A shard the index names but whose name the file list did not suggest: read it now.
                index = read.json_files[plan.index_file]
                extra = [s for s in shards_from_index(index, plan.index_file) if s not in read.headers]
                for s in extra:
                    if s not in files:
                        raise EntryNotFound(f"{repo_id}: {plan.index_file} names {s!r}, which is not in the repo")

                def read_extra(shard: str) -> Header:
                    from . import hub

                    return client.read_header(repo_id, sha, shard, hub.SPECULATIVE_HEADER_BYTES)

                for s, h in zip(extra, pool.map(read_extra, extra), strict=True):
                    store.keep_header(read.headers, snapshot, s, Parsed(h.header_bytes, h.file_bytes, None, h))
                    read.sizes[s] = h.file_bytes
    return read


class _ShardReads:
    """The shard tasks of one read: each shard's redirect, then its header's Range read sized by the
    index, handed to the parsing thread or a worker process."""

    def __init__(self, client: HubClient, repo_id: str, sha: str, json_futures: Mapping[str, Future[bytes]],
                 read: ReadFiles, parser: ThreadPoolExecutor, processes: WorkerPool, meta: ThreadPoolExecutor,
                 deadline: float | None) -> None:
        self.client, self.repo_id, self.sha = client, repo_id, sha
        self.json_futures, self.read = json_futures, read
        self.parser, self.processes, self.meta = parser, processes, meta
        self.grouped: Future[dict[str, list[str]]] | None = None
        self.context: Future[CountContext | None] | None = None
        self.failed = threading.Event()

    def start(self, plan: WeightPlan, candidates: list[str]) -> Future[dict[str, list[str]]] | None:
        """Submit the index's grouping (which starts the worker processes) and the counting context."""
        from .workers import configured_workers

        # The index is parsed and grouped by shard once, by whichever shard task needs it first; it
        # was submitted first, so no task waits on one that cannot start. Worker processes start
        # once it is read (by its shard and tensor counts; without an index, by the listing's), a
        # round trip before the first header arrives: not beside the second layer's requests, whose
        # sending they would slow down (~0.1 s of CPU each).
        index_file = plan.index_file
        if index_file and index_file in self.json_futures:
            def group() -> dict[str, list[str]]:
                by_shard = _tensors_by_shard(self.json_futures[index_file], index_file, self.read.json_files)
                wanted = configured_workers(len(by_shard), sum(map(len, by_shard.values())))
                if wanted:  # started by the parsing thread, idle until headers arrive: every
                    self.parser.submit(self.processes.start, wanted)  # shard task waits on this one
                return by_shard

            self.grouped = self.meta.submit(group)
        else:
            self.parser.submit(self.processes.start, configured_workers(len(candidates)))
        # How tensors count depends on config.json (and a quantization config): known by the time
        # the first header arrives, so each shard is tallied as it arrives, in the time other reads
        # are in flight, not all 92,000 tensors of DeepSeek-V3 after the last one.
        self.context = self.meta.submit(_count_context, self.json_futures, self.read.json_files)
        return self.grouped

    def task(self, name: str) -> tuple[bytes, Future[Parsed]] | None:
        # Once one shard has failed the read is over: a thread that picks up the next shard before
        # the failure reaches the main thread (and cancels the queue) sends nothing. (The failed
        # shard's future still holds its error, raised there.)
        if self.failed.is_set():
            return None
        try:
            return self._read_one(name)
        except BaseException:
            self.failed.set()
            raise

    def _read_one(self, name: str) -> tuple[bytes, Future[Parsed]] | None:
        # The redirect needs only the name, so it travels beside config.json and the index; the CDN
        # read waits for the index, which sizes it. The bytes are handed to the parsing thread or a
        # worker process, and this thread goes on to its next request at once. (Parsing in the
        # request thread itself, each wave of 64 DeepSeek-V3 shards queued ~0.3 s of CPU before any
        # thread sent its next request.)
        from . import hub
        from .workers import parse_shard

        assert self.context is not None
        located = self.client.locate(self.repo_id, self.sha, name)
        predicted = hub.SPECULATIVE_HEADER_BYTES  # (read where it is set: tests lower it)
        if self.grouped is not None:
            names = self.grouped.result().get(name)
            if not names:
                return None  # a .safetensors file the index does not use
            predicted = hub.predict_header_bytes(names)
        data, file_bytes = self.client.header_bytes(self.repo_id, self.sha, name, predicted, located)
        if self.processes.started:
            return data, self.processes.submit(name, data, file_bytes, self.context.result())
        return data, self.parser.submit(parse_shard, name, data, file_bytes, self.context.result())


# --- 4. assemble ------------------------------------------------------------------------------------


def assemble(read: ReadFiles, source: Source, repo_id: str, revision: str, sha: str,
             listing: dict[str, int | None], plan: WeightPlan, snapshot: SnapshotWriter | None,
             warnings: list[str]) -> ReadResult:
    """The Checkpoint of what was read, validated, and the commit's snapshot put in place; the
    tallies apart."""
    for name, file_bytes in read.sizes.items():
        listing[name] = file_bytes if file_bytes is not None else listing.get(name)
    cp = Checkpoint(
        name=source.display if source.filename or source.quant else repo_id,
        files=listing,
        json_files=read.json_files,
        headers=read.headers,
        plan=plan,
        repo_id=repo_id,
        revision=revision,
        sha=sha,
        warnings=tuple(dict.fromkeys(warnings)),
        gguf=read.gguf,
    )
    if plan.format == "gguf":
        return ReadResult(store.save_gguf(cp, warnings))
    _ = cp.weight_files  # validates the index before anything is saved
    return ReadResult(store.commit_snapshot(cp, snapshot, read.json_text), tallies=read.tallies)


# --- helpers ----------------------------------------------------------------------------------------


def gguf_usable(saved: ReadResult | None, source: Source, offline: bool = False) -> ReadResult | None:
    """A saved snapshot as the answer to this read: a GGUF commit's when it holds the file wanted
    (the plan made again on its file list), a safetensors commit's unless a GGUF file is wanted.
    Offline, a GGUF commit's answers with a file it holds when none was named, and a named file it
    lacks is an OfflineMiss that says which files it has."""
    if saved is None:
        return None
    cp = saved.checkpoint
    if cp.plan.format != "gguf":
        return None if source.quant or source.prefer_gguf or (source.filename or "").endswith(".gguf") else saved
    try:
        plan, _ = gguf_plan(cp.files, filename=source.filename, quant=source.quant, repo=cp.name)
    except HfmemError:
        return None  # (said again, from the Hub's own listing)
    if not all(part in cp.gguf for part in plan.files):
        if not offline:
            return None
        held = [f for f in cp.gguf if not _later_part(f)]
        if source.filename or source.quant:
            raise OfflineMiss(f"offline and {source.display} was never read; read before: {', '.join(held)}")
        plan, _ = gguf_plan(cp.files, filename=held[0], quant=None, repo=cp.name)
    return replace(saved, checkpoint=replace(cp, plan=plan, gguf={p: cp.gguf[p] for p in plan.files},
                                             name=source.display if source.filename or source.quant else cp.name))


def _later_part(name: str) -> bool:
    """A split set's second part or later (its first names the set)."""
    from .gguf import SPLIT_RE

    m = SPLIT_RE.match(name.rsplit("/", 1)[-1])
    return m is not None and int(m["no"]) > 1


def _warned(read: ReadResult, warnings: list[str]) -> ReadResult:
    return replace(read, checkpoint=store.with_warnings(read.checkpoint, warnings))


def _result(future: Future[Any], deadline: float | None, what: str) -> Any:
    """A future's result, waited for until the deadline and DEADLINE_SLACK_S more at most: every
    request is cut at the deadline, so a task still running then is stuck (a DNS lookup, a lock)."""
    if deadline is None:
        return future.result()
    from concurrent.futures import TimeoutError as FutureTimeout  # (3.10: not the builtin)

    try:
        return future.result(timeout=max(0.0, deadline - time.monotonic()) + DEADLINE_SLACK_S)
    except FutureTimeout:
        raise NetworkError(f"{what}: gave up at the --timeout deadline (a read did not end)") from None


def _tensors_by_shard(index_bytes: Future[bytes], index_file: str, parsed: dict[str, Any]) -> dict[str, list[str]]:
    """The index's tensor names by shard; the parsed index is left in `parsed` (parsed once)."""
    index = parsed[index_file] = load_config_json(index_bytes.result(), index_file)
    by_shard: dict[str, list[str]] = {}
    weight_map = index.get("weight_map")
    for tensor, shard in (weight_map.items() if isinstance(weight_map, dict) else ()):
        by_shard.setdefault(str(shard), []).append(str(tensor))
    return by_shard


def _count_context(json_futures: Mapping[str, Future[bytes]], parsed: dict[str, Any]) -> CountContext | None:
    """The counting context from config.json and any quantization config; None when one of them
    cannot be read (its error is raised where the files are parsed, and nothing is tallied early)."""
    from .params import count_context

    try:
        for name in METADATA_FILES:
            if name in json_futures:
                parsed[name] = load_config_json(json_futures[name].result(), name)
        config = parsed.get("config.json")
        return count_context(config if isinstance(config, dict) else {}, quantization_config(parsed))
    except Exception:  # noqa: BLE001 - raised again, in its place, when the files are parsed
        return None


